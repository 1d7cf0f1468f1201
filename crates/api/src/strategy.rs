//! Semantics of `spec.updateStrategy`.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::types::UpdateStrategy;
use crate::{Error, rules};

impl UpdateStrategy {
    /// How many sidecars may be unavailable at once during a rolling update of a policy that
    /// matches `matched` Pods: an integer `maxUnavailable` is taken as is; a percentage `p%`
    /// gives `floor(matched * p / 100)`. The result is at least 1, so a rollout always makes
    /// progress. Values the CRD refuses (zero, negative, malformed, outside 1%..100%) are an
    /// [`Error::InvalidMaxUnavailable`].
    pub fn max_unavailable_for(&self, matched: u32) -> Result<u32, Error> {
        let value = &self.max_unavailable;
        let invalid = || match value {
            IntOrString::Int(n) => Error::InvalidMaxUnavailable(n.to_string()),
            IntOrString::String(s) => Error::InvalidMaxUnavailable(s.clone()),
        };
        let resolved = match value {
            IntOrString::Int(n) if *n > 0 => n.unsigned_abs(),
            IntOrString::Int(_) => return Err(invalid()),
            IntOrString::String(s) => {
                // The pattern of the CRD's rule (`rules::selector::MAX_UNAVAILABLE`).
                let percent = rules::percent(s).ok_or_else(invalid)?;
                // u64 arithmetic: matched * 100 cannot overflow.
                let scaled = u64::from(matched) * u64::from(percent) / 100;
                u32::try_from(scaled).unwrap_or(u32::MAX)
            }
        };
        Ok(resolved.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRDs before 2026-12-02 stored a defaulted `type: RollingUpdate` in every policy, and
    /// client-side apply, `kubectl create` and typed clients own defaulted fields: in
    /// Container mode only `allowEviction: true`, which no CRD ever defaulted, turns eviction
    /// on, whoever owns `type`.
    #[test]
    fn container_mode_evicts_only_with_rolling_update_and_allow_eviction() {
        use crate::{Mode, UpdateStrategyType};
        let strategy = |type_: Option<UpdateStrategyType>, allow: Option<bool>| UpdateStrategy {
            type_,
            allow_eviction: allow,
            ..UpdateStrategy::default()
        };
        let rolling = Some(UpdateStrategyType::RollingUpdate);
        let on_delete = Some(UpdateStrategyType::OnDelete);
        // (type, allowEviction, Container mode's effective type)
        let cases = [
            (rolling, None, UpdateStrategyType::OnDelete),
            (rolling, Some(false), UpdateStrategyType::OnDelete),
            (rolling, Some(true), UpdateStrategyType::RollingUpdate),
            (None, Some(true), UpdateStrategyType::OnDelete),
            (on_delete, Some(true), UpdateStrategyType::OnDelete),
            (None, None, UpdateStrategyType::OnDelete),
        ];
        for (type_, allow, want) in cases {
            let s = strategy(type_, allow);
            assert_eq!(s.effective(Mode::Container), want, "{type_:?} {allow:?}");
        }
        // Pod mode: RollingUpdate unless OnDelete, allowEviction or not.
        assert_eq!(
            strategy(None, None).effective(Mode::Pod),
            UpdateStrategyType::RollingUpdate
        );
        assert_eq!(
            strategy(on_delete, Some(true)).effective(Mode::Pod),
            UpdateStrategyType::OnDelete
        );
    }

    fn resolve_max_unavailable(value: &IntOrString, matched: u32) -> Result<u32, Error> {
        let strategy = UpdateStrategy {
            max_unavailable: value.clone(),
            ..UpdateStrategy::default()
        };
        strategy.max_unavailable_for(matched)
    }

    fn s(v: &str) -> IntOrString {
        IntOrString::String(v.to_owned())
    }

    #[test]
    fn integers_are_taken_as_is() {
        assert_eq!(
            resolve_max_unavailable(&IntOrString::Int(3), 10).unwrap(),
            3
        );
        assert_eq!(
            resolve_max_unavailable(&IntOrString::Int(30), 10).unwrap(),
            30
        );
    }

    #[test]
    fn percentages_round_down_but_not_below_one() {
        assert_eq!(resolve_max_unavailable(&s("25%"), 12).unwrap(), 3);
        assert_eq!(resolve_max_unavailable(&s("25%"), 10).unwrap(), 2);
        assert_eq!(resolve_max_unavailable(&s("1%"), 10).unwrap(), 1);
        assert_eq!(resolve_max_unavailable(&s("100%"), 7).unwrap(), 7);
        assert_eq!(resolve_max_unavailable(&s("25%"), 0).unwrap(), 1);
        assert_eq!(
            resolve_max_unavailable(&s("100%"), u32::MAX).unwrap(),
            u32::MAX
        );
    }

    #[test]
    fn values_the_crd_refuses_are_errors() {
        for bad in [
            "0%", "101%", "abc", "10.5%", "-5%", "05%", "%", "25", " 25%", "25 %",
        ] {
            assert!(
                resolve_max_unavailable(&s(bad), 10).is_err(),
                "{bad:?} accepted"
            );
        }
        for bad in [0, -1] {
            assert!(resolve_max_unavailable(&IntOrString::Int(bad), 10).is_err());
        }
    }

    #[test]
    fn default_strategy_is_rolling_25_percent() {
        assert_eq!(UpdateStrategy::default().max_unavailable_for(8).unwrap(), 2);
    }
}
