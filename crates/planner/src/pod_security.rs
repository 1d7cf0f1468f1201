//! What a namespace's Pod Security admission would say of a Pod. Pure.
//!
//! Pod Security admission runs after the mutating webhooks and judges the Pod *with* the
//! sidecars injected: a template that breaks the namespace's level would turn a fail-open
//! injector into one that refuses every Pod the policy selects there. So before it injects a
//! policy, [`crate::inject`] asks [`refusal`] whether the Pod, which the namespace accepts as
//! it is, would be refused with the policy's additions — and skips the policy for that Pod
//! if so.
//!
//! The checks are the Pod Security Standards' (`baseline`, then `restricted`), as
//! k8s.io/pod-security-admission v0.36 has them at `latest`. A namespace pinned to an older
//! `pod-security.kubernetes.io/enforce-version` is judged by them too: older versions are
//! stricter only for user-namespace Pods (`hostUsers: false`, relaxed in v1.35) and a few
//! newer allowances (sysctls, `image` volumes), so a pinned namespace may still refuse such a
//! Pod. Exemptions and cluster-wide defaults of the API server's `AdmissionConfiguration`
//! are invisible here.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    Container, Pod, PodSecurityContext, PodSpec, PodTemplateSpec, SecurityContext, Volume,
};

use crate::labels::Labels;

/// The namespace label that sets the enforced level.
pub const LABEL_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Level {
    /// Unrestricted (no label).
    #[default]
    Privileged,
    /// Prevents known privilege escalations.
    Baseline,
    /// Hardening best practices.
    Restricted,
}

impl Level {
    /// The level a namespace enforces, from its labels. An unknown value is enforced as
    /// `restricted`, as Pod Security admission itself does.
    pub fn enforced(labels: &Labels) -> Level {
        match labels.get(LABEL_ENFORCE) {
            None | Some("privileged") => Level::Privileged,
            Some("baseline") => Level::Baseline,
            Some(_) => Level::Restricted,
        }
    }

    /// The label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// Why a namespace enforcing `level` would refuse `after` (the Pod with a policy's
/// sidecars) when it accepts `before` (the Pod without them): the failed checks, in Pod
/// Security admission's words. `None` when it would accept `after`, or refuses `before`
/// already (then the Pod is refused whatever is injected: not the injection's doing).
pub fn refusal(level: Level, before: &Pod, after: &Pod) -> Option<String> {
    if level == Level::Privileged || !violations(level, before).is_empty() {
        return None;
    }
    let found = violations(level, after);
    (!found.is_empty()).then(|| {
        format!(
            "the namespace enforces Pod Security \"{}\" ({LABEL_ENFORCE}), which refuses the Pod with this policy's sidecars: {}",
            level.as_str(),
            found.join("; ")
        )
    })
}

/// What a Container-mode template's own additions fail of the Pod Security Standards, as a
/// clause for a status message ("" when they pass both levels on their own: then only a
/// Pod's own settings together with them are refused).
pub fn template_hint(template: &PodTemplateSpec) -> String {
    let spec = template.spec.clone().unwrap_or_default();
    let alone = Pod {
        metadata: template.metadata.clone().unwrap_or_default(),
        spec: Some(PodSpec {
            init_containers: spec.init_containers,
            containers: spec.containers,
            volumes: spec.volumes,
            ..PodSpec::default()
        }),
        status: None,
    };
    for level in [Level::Baseline, Level::Restricted] {
        let found = violations(level, &alone);
        if !found.is_empty() {
            return format!(
                " (the template's sidecars fail Pod Security \"{}\": {})",
                level.as_str(),
                found.join("; ")
            );
        }
    }
    String::new()
}

/// The checks of `level` that `pod` fails, each with what fails it.
pub fn violations(level: Level, pod: &Pod) -> Vec<String> {
    if level == Level::Privileged {
        return Vec::new();
    }
    let p = Input::of(pod);
    let mut out: Vec<String> = BASELINE.iter().filter_map(|check| check(&p)).collect();
    if level == Level::Restricted {
        out.extend(RESTRICTED.iter().filter_map(|check| check(&p)));
    }
    out
}

/// What the checks read, borrowed from the Pod.
struct Input<'a> {
    pod: &'a Pod,
    ctx: Option<&'a PodSecurityContext>,
    containers: Vec<&'a Container>,
    volumes: &'a [Volume],
}

impl<'a> Input<'a> {
    fn of(pod: &'a Pod) -> Input<'a> {
        let spec = pod.spec.as_ref();
        let containers = spec
            .into_iter()
            .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
            .collect();
        Input {
            pod,
            ctx: spec.and_then(|s| s.security_context.as_ref()),
            containers,
            volumes: spec.and_then(|s| s.volumes.as_deref()).unwrap_or_default(),
        }
    }

    /// `hostUsers: false`: the Pod runs in a user namespace.
    fn user_namespace(&self) -> bool {
        self.pod.spec.as_ref().and_then(|s| s.host_users) == Some(false)
    }

    fn spec_flag(&self, f: impl Fn(&PodSpec) -> Option<bool>) -> bool {
        self.pod.spec.as_ref().and_then(f).unwrap_or(false)
    }

    /// The names of the containers for which `bad` holds of their security context
    /// (`None` when they have none).
    fn containers_where(
        &self,
        mut bad: impl FnMut(Option<&SecurityContext>) -> bool,
    ) -> Vec<&'a str> {
        self.containers
            .iter()
            .filter(|c| bad(c.security_context.as_ref()))
            .map(|c| c.name.as_str())
            .collect()
    }
}

type Check = fn(&Input<'_>) -> Option<String>;

/// `what` fails for `names` (none: it passes).
fn failing(names: Vec<&str>, what: &str) -> Option<String> {
    (!names.is_empty()).then(|| {
        let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
        let noun = if names.len() == 1 {
            "container"
        } else {
            "containers"
        };
        format!("{what} ({noun} {})", quoted.join(", "))
    })
}

const BASELINE: [Check; 12] = [
    host_process,
    host_namespaces,
    privileged,
    baseline_capabilities,
    host_path_volumes,
    host_ports,
    host_probes,
    app_armor,
    se_linux,
    proc_mount,
    seccomp_unconfined,
    sysctls,
];

const RESTRICTED: [Check; 7] = [
    volume_types,
    proc_mount_restricted,
    seccomp_restricted,
    privilege_escalation,
    run_as_non_root,
    run_as_user,
    restricted_capabilities,
];

fn host_process(p: &Input<'_>) -> Option<String> {
    let pod = p
        .ctx
        .and_then(|c| c.windows_options.as_ref())
        .and_then(|w| w.host_process)
        .unwrap_or(false);
    let names = p.containers_where(|s| {
        s.and_then(|s| s.windows_options.as_ref())
            .and_then(|w| w.host_process)
            .unwrap_or(false)
    });
    if pod {
        return Some("hostProcess (securityContext.windowsOptions.hostProcess=true)".into());
    }
    failing(
        names,
        "hostProcess (securityContext.windowsOptions.hostProcess=true)",
    )
}

fn host_namespaces(p: &Input<'_>) -> Option<String> {
    let used: Vec<&str> = [
        ("hostNetwork=true", p.spec_flag(|s| s.host_network)),
        ("hostPID=true", p.spec_flag(|s| s.host_pid)),
        ("hostIPC=true", p.spec_flag(|s| s.host_ipc)),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect();
    (!used.is_empty()).then(|| format!("host namespaces ({})", used.join(", ")))
}

fn privileged(p: &Input<'_>) -> Option<String> {
    let names = p.containers_where(|s| s.and_then(|s| s.privileged).unwrap_or(false));
    failing(names, "privileged (securityContext.privileged=true)")
}

/// The capabilities baseline allows adding.
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added_capabilities(s: Option<&SecurityContext>) -> &[String] {
    s.and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.as_deref())
        .unwrap_or_default()
}

fn baseline_capabilities(p: &Input<'_>) -> Option<String> {
    let mut bad = BTreeSet::new();
    let names = p.containers_where(|s| {
        let extra: Vec<&String> = added_capabilities(s)
            .iter()
            .filter(|c| !BASELINE_CAPABILITIES.contains(&c.as_str()))
            .collect();
        let found = !extra.is_empty();
        bad.extend(extra.into_iter().cloned());
        found
    });
    let bad: Vec<String> = bad.into_iter().collect();
    failing(
        names,
        &format!("non-default capabilities (adds {})", bad.join(", ")),
    )
}

fn host_path_volumes(p: &Input<'_>) -> Option<String> {
    let names: Vec<String> = p
        .volumes
        .iter()
        .filter(|v| v.host_path.is_some())
        .map(|v| format!("{:?}", v.name))
        .collect();
    (!names.is_empty()).then(|| format!("hostPath volumes ({})", names.join(", ")))
}

fn host_ports(p: &Input<'_>) -> Option<String> {
    let names: Vec<&str> = p
        .containers
        .iter()
        .filter(|c| {
            c.ports
                .iter()
                .flatten()
                .any(|port| port.host_port.unwrap_or(0) != 0)
        })
        .map(|c| c.name.as_str())
        .collect();
    failing(names, "hostPort")
}

/// A probe or lifecycle handler naming a host (baseline since v1.34).
fn host_probes(p: &Input<'_>) -> Option<String> {
    use k8s_openapi::api::core::v1::{HTTPGetAction, TCPSocketAction};
    fn named(http: Option<&HTTPGetAction>, tcp: Option<&TCPSocketAction>) -> bool {
        let set = |h: Option<&String>| h.is_some_and(|h| !h.is_empty());
        set(http.and_then(|h| h.host.as_ref())) || set(tcp.and_then(|t| t.host.as_ref()))
    }
    let names: Vec<&str> = p
        .containers
        .iter()
        .filter(|c| {
            let probes = [&c.liveness_probe, &c.readiness_probe, &c.startup_probe];
            let probe = probes
                .into_iter()
                .flatten()
                .any(|pr| named(pr.http_get.as_ref(), pr.tcp_socket.as_ref()));
            let hooks = c.lifecycle.as_ref().is_some_and(|l| {
                [&l.post_start, &l.pre_stop]
                    .into_iter()
                    .flatten()
                    .any(|h| named(h.http_get.as_ref(), h.tcp_socket.as_ref()))
            });
            probe || hooks
        })
        .map(|c| c.name.as_str())
        .collect();
    failing(
        names,
        "probe or lifecycle host (a host other than the Pod's)",
    )
}

fn app_armor(p: &Input<'_>) -> Option<String> {
    let allowed = |t: &str| t == "RuntimeDefault" || t == "Localhost";
    let pod = p
        .ctx
        .and_then(|c| c.app_armor_profile.as_ref())
        .is_some_and(|a| !allowed(&a.type_));
    let names = p.containers_where(|s| {
        s.and_then(|s| s.app_armor_profile.as_ref())
            .is_some_and(|a| !allowed(&a.type_))
    });
    let annotations: Vec<String> = p
        .pod
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, v)| {
            k.starts_with("container.apparmor.security.beta.kubernetes.io/")
                && !(v.is_empty() || v.as_str() == "runtime/default" || v.starts_with("localhost/"))
        })
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    if pod || !annotations.is_empty() {
        return Some(format!(
            "AppArmor profile (Unconfined{})",
            annotations
                .iter()
                .map(|a| format!(", {a}"))
                .collect::<String>()
        ));
    }
    failing(names, "AppArmor profile (appArmorProfile.type Unconfined)")
}

fn se_linux(p: &Input<'_>) -> Option<String> {
    use k8s_openapi::api::core::v1::SELinuxOptions;
    fn bad(o: Option<&SELinuxOptions>) -> bool {
        o.is_some_and(|o| {
            let t = o.type_.as_deref().unwrap_or_default();
            let known = [
                "",
                "container_t",
                "container_init_t",
                "container_kvm_t",
                "container_engine_t",
            ];
            !known.contains(&t)
                || o.user.as_deref().is_some_and(|u| !u.is_empty())
                || o.role.as_deref().is_some_and(|r| !r.is_empty())
        })
    }
    let pod = bad(p.ctx.and_then(|c| c.se_linux_options.as_ref()));
    let names = p.containers_where(|s| bad(s.and_then(|s| s.se_linux_options.as_ref())));
    if pod {
        return Some("seLinuxOptions (a type, user or role Pod Security does not allow)".into());
    }
    failing(
        names,
        "seLinuxOptions (a type, user or role Pod Security does not allow)",
    )
}

/// Baseline allows any `procMount` in a user namespace (`hostUsers: false`, since v1.35);
/// restricted never does ([`proc_mount_restricted`]).
fn proc_mount(p: &Input<'_>) -> Option<String> {
    if p.user_namespace() {
        return None;
    }
    proc_mount_restricted(p)
}

fn proc_mount_restricted(p: &Input<'_>) -> Option<String> {
    let names = p.containers_where(|s| {
        s.and_then(|s| s.proc_mount.as_deref())
            .is_some_and(|m| m != "Default")
    });
    failing(
        names,
        "procMount (securityContext.procMount must be Default)",
    )
}

fn seccomp_type(s: Option<&SecurityContext>) -> Option<&str> {
    s.and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str())
}

fn seccomp_unconfined(p: &Input<'_>) -> Option<String> {
    let pod = p
        .ctx
        .and_then(|c| c.seccomp_profile.as_ref())
        .is_some_and(|s| s.type_ == "Unconfined");
    let names = p.containers_where(|s| seccomp_type(s) == Some("Unconfined"));
    if pod {
        return Some("seccompProfile (type Unconfined)".into());
    }
    failing(names, "seccompProfile (type Unconfined)")
}

/// The sysctls baseline allows.
const SAFE_SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

fn sysctls(p: &Input<'_>) -> Option<String> {
    let bad: Vec<&str> = p
        .ctx
        .and_then(|c| c.sysctls.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .collect();
    (!bad.is_empty()).then(|| format!("forbidden sysctls ({})", bad.join(", ")))
}

/// The volume types restricted allows.
fn volume_types(p: &Input<'_>) -> Option<String> {
    let names: Vec<String> = p
        .volumes
        .iter()
        .filter(|v| {
            let allowed = v.config_map.is_some()
                || v.csi.is_some()
                || v.downward_api.is_some()
                || v.empty_dir.is_some()
                || v.ephemeral.is_some()
                || v.persistent_volume_claim.is_some()
                || v.projected.is_some()
                || v.secret.is_some()
                || v.image.is_some();
            !allowed
        })
        .map(|v| format!("{:?}", v.name))
        .collect();
    (!names.is_empty()).then(|| {
        format!(
            "restricted volume types (volumes {} must be configMap, csi, downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected or secret)",
            names.join(", ")
        )
    })
}

fn privilege_escalation(p: &Input<'_>) -> Option<String> {
    let names = p.containers_where(|s| s.and_then(|s| s.allow_privilege_escalation) != Some(false));
    failing(
        names,
        "allowPrivilegeEscalation != false (must set securityContext.allowPrivilegeEscalation=false)",
    )
}

/// Relaxed in a user namespace (`hostUsers: false`), as is [`run_as_user`].
fn run_as_non_root(p: &Input<'_>) -> Option<String> {
    if p.user_namespace() {
        return None;
    }
    let pod = p.ctx.and_then(|c| c.run_as_non_root);
    if pod == Some(false) {
        return Some("runAsNonRoot != true (the Pod sets runAsNonRoot=false)".into());
    }
    let names = p.containers_where(|s| match s.and_then(|s| s.run_as_non_root) {
        Some(v) => !v,
        None => pod != Some(true),
    });
    failing(
        names,
        "runAsNonRoot != true (must set securityContext.runAsNonRoot=true, on the Pod or the container)",
    )
}

fn run_as_user(p: &Input<'_>) -> Option<String> {
    if p.user_namespace() {
        return None;
    }
    if p.ctx.and_then(|c| c.run_as_user) == Some(0) {
        return Some("runAsUser=0 (the Pod)".into());
    }
    let names = p.containers_where(|s| s.and_then(|s| s.run_as_user) == Some(0));
    failing(names, "runAsUser=0")
}

fn restricted_capabilities(p: &Input<'_>) -> Option<String> {
    let drops_all = |s: Option<&SecurityContext>| {
        s.and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.drop.as_ref())
            .is_some_and(|d| d.iter().any(|c| c == "ALL"))
    };
    let not_dropped = p.containers_where(|s| !drops_all(s));
    let adding = p.containers_where(|s| {
        added_capabilities(s)
            .iter()
            .any(|c| c != "NET_BIND_SERVICE")
    });
    let mut parts = Vec::new();
    parts.extend(failing(
        not_dropped,
        "unrestricted capabilities (must set securityContext.capabilities.drop=[\"ALL\"])",
    ));
    parts.extend(failing(
        adding,
        "unrestricted capabilities (may add only NET_BIND_SERVICE)",
    ));
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Seccomp for restricted: `RuntimeDefault` or `Localhost`, on the Pod or every container.
fn seccomp_restricted(p: &Input<'_>) -> Option<String> {
    let ok = |t: Option<&str>| matches!(t, Some("RuntimeDefault" | "Localhost"));
    let pod = p
        .ctx
        .and_then(|c| c.seccomp_profile.as_ref())
        .map(|s| s.type_.as_str());
    let names = p.containers_where(|s| match seccomp_type(s) {
        Some(t) => !ok(Some(t)),
        None => !ok(pod),
    });
    failing(
        names,
        "seccompProfile (must set securityContext.seccompProfile.type to RuntimeDefault or Localhost, on the Pod or the container)",
    )
}

#[cfg(test)]
#[path = "pod_security_tests.rs"]
mod tests;
