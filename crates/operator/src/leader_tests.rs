//! Unit tests of `leader.rs`.

use super::*;

fn held(by: Option<&str>, secs: Option<i32>) -> LeaseSpec {
    LeaseSpec {
        holder_identity: by.map(str::to_string),
        lease_duration_seconds: secs,
        ..LeaseSpec::default()
    }
}

#[test]
fn decisions() {
    let s = Duration::from_secs;
    let fallback = s(15);
    let cases: [(&str, Option<LeaseSpec>, Duration, Step); 9] = [
        ("no Lease", None, s(0), Step::Create),
        ("ours", Some(held(Some("me"), Some(6))), s(0), Step::Renew),
        (
            "ours, even when we have not renewed for long",
            Some(held(Some("me"), Some(6))),
            s(100),
            Step::Renew,
        ),
        ("released", Some(held(None, Some(1))), s(0), Step::Take),
        (
            "released (empty)",
            Some(held(Some(""), None)),
            s(0),
            Step::Take,
        ),
        (
            "other, fresh",
            Some(held(Some("b"), Some(6))),
            s(5),
            Step::Wait,
        ),
        (
            "other, unchanged for its duration",
            Some(held(Some("b"), Some(6))),
            s(6),
            Step::Take,
        ),
        (
            "other, no duration: ours applies",
            Some(held(Some("b"), None)),
            s(14),
            Step::Wait,
        ),
        (
            "other, no duration, past ours",
            Some(held(Some("b"), Some(0))),
            s(15),
            Step::Take,
        ),
    ];
    for (what, lease, unchanged, want) in cases {
        assert_eq!(
            decide(lease.as_ref(), "me", unchanged, fallback),
            want,
            "{what}"
        );
    }
}

#[test]
fn timing_defaults_and_validation() {
    let t = Timing::from_secs(15, None, None).expect("defaults");
    assert_eq!(t.renew_deadline, Duration::from_secs(10));
    assert_eq!(t.retry_period, Duration::from_secs(2));
    let t = Timing::from_secs(6, Some(4.0), Some(0.5)).expect("explicit");
    assert_eq!(t.retry_period, Duration::from_millis(500));
    let err = Timing::from_secs(6, Some(6.0), None).expect_err("renew = lease");
    assert!(
        err.contains("--lease-renew-deadline") && err.contains("shorter"),
        "{err}"
    );
    let err = Timing::from_secs(6, Some(2.0), Some(3.0)).expect_err("retry > renew");
    assert!(err.contains("--lease-retry-period"), "{err}");
    let err = Timing::from_secs(6, Some(-1.0), None).expect_err("negative");
    assert!(err.contains("positive"), "{err}");
    assert!(Timing::from_secs(1, None, None).is_err());
}
