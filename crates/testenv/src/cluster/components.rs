//! The component processes and their flags: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok.

use std::path::Path;

use crate::Error;
use crate::pki::Pki;
use crate::process::Proc;

use super::starter::{Ports, Starter};

/// Where a start's components find their binaries, files and ports.
pub(super) struct Layout<'a> {
    /// The pinned binaries.
    pub(super) bin: &'a Path,
    /// The work directory.
    pub(super) dir: &'a Path,
    /// Where each component's log goes.
    pub(super) logs: &'a Path,
    pub(super) ports: &'a Ports,
    pub(super) pki: &'a Pki,
    /// The admin kubeconfig.
    pub(super) kubeconfig: &'a Path,
}

impl Layout<'_> {
    fn spawn(&self, st: &mut Starter, name: &str, args: &[&str]) -> Result<(), Error> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        st.procs
            .push(Proc::spawn(name, &self.bin.join(name), &args, self.logs)?);
        Ok(())
    }

    /// The client URL of etcd.
    pub(super) fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.etcd)
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Starts etcd (no fsync: the data is thrown away).
pub(super) fn etcd(st: &mut Starter, l: &Layout<'_>) -> Result<(), Error> {
    let etcd_url = l.etcd_url();
    let peer_url = format!("http://127.0.0.1:{}", l.ports.etcd_peer);
    l.spawn(
        st,
        "etcd",
        &[
            "--name=default",
            &format!("--data-dir={}", p(&l.dir.join("etcd"))),
            &format!("--listen-client-urls={etcd_url}"),
            &format!("--advertise-client-urls={etcd_url}"),
            &format!("--listen-peer-urls={peer_url}"),
            &format!("--initial-advertise-peer-urls={peer_url}"),
            &format!("--initial-cluster=default={peer_url}"),
            "--unsafe-no-fsync=true",
            "--auto-compaction-retention=1",
            "--quota-backend-bytes=8589934592",
            "--log-level=warn",
        ],
    )
}

/// Starts kube-apiserver on etcd, with RBAC and the PKI's certificates.
pub(super) fn apiserver(st: &mut Starter, l: &Layout<'_>) -> Result<(), Error> {
    let pki = l.pki;
    l.spawn(
        st,
        "kube-apiserver",
        &[
            &format!("--etcd-servers={}", l.etcd_url()),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            &format!("--secure-port={}", l.ports.apiserver),
            "--endpoint-reconciler-type=none",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--authorization-mode=Node,RBAC",
            &format!("--client-ca-file={}", p(&pki.ca_cert)),
            &format!("--tls-cert-file={}", p(&pki.server_cert)),
            &format!("--tls-private-key-file={}", p(&pki.server_key)),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            &format!("--service-account-key-file={}", p(&pki.sa_pub)),
            &format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
            "--profiling=false",
        ],
    )
}

/// Starts kube-controller-manager (every controller, among them the garbage collector).
pub(super) fn controller_manager(st: &mut Starter, l: &Layout<'_>) -> Result<(), Error> {
    let kc = p(l.kubeconfig);
    l.spawn(
        st,
        "kube-controller-manager",
        &[
            &format!("--kubeconfig={kc}"),
            &format!("--authentication-kubeconfig={kc}"),
            &format!("--authorization-kubeconfig={kc}"),
            "--bind-address=127.0.0.1",
            &format!("--secure-port={}", l.ports.kcm),
            &format!("--root-ca-file={}", p(&l.pki.ca_cert)),
            &format!("--service-account-private-key-file={}", p(&l.pki.sa_key)),
            "--leader-elect=false",
            "--controllers=*",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            "--kube-api-qps=500",
            "--kube-api-burst=1000",
        ],
    )
}

/// Starts kube-scheduler.
pub(super) fn scheduler(st: &mut Starter, l: &Layout<'_>) -> Result<(), Error> {
    let kc = p(l.kubeconfig);
    l.spawn(
        st,
        "kube-scheduler",
        &[
            &format!("--kubeconfig={kc}"),
            &format!("--authentication-kubeconfig={kc}"),
            &format!("--authorization-kubeconfig={kc}"),
            "--bind-address=127.0.0.1",
            &format!("--secure-port={}", l.ports.scheduler),
            "--leader-elect=false",
            "--kube-api-qps=500",
            "--kube-api-burst=1000",
        ],
    )
}

/// Starts kwok with the project's stages ([`crate::kwok::STAGES`]), managing every Node.
pub(super) fn kwok(st: &mut Starter, l: &Layout<'_>) -> Result<(), Error> {
    let stages = l.dir.join("kwok-stages.yaml");
    std::fs::write(&stages, crate::kwok::STAGES).map_err(|e| Error::io(&stages, e))?;
    l.spawn(
        st,
        "kwok",
        &[
            &format!("--kubeconfig={}", p(l.kubeconfig)),
            &format!("--config={}", p(&stages)),
            "--manage-all-nodes=true",
            &format!("--server-address=127.0.0.1:{}", l.ports.kwok),
        ],
    )
}
