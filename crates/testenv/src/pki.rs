//! Throw-away PKI for one control plane: a CA, the API server's serving certificate,
//! an admin client certificate (`system:masters`) and the ServiceAccount token key pair.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::Error;

/// Paths of the files [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct Pki {
    /// CA certificate (PEM); trusted by every client and used as `--client-ca-file`.
    pub ca_cert: PathBuf,
    /// CA certificate PEM text, embedded in kubeconfigs.
    pub ca_pem: String,
    /// API server serving certificate (IP SAN 127.0.0.1, ::1, 10.0.0.1; DNS localhost, kubernetes…).
    pub server_cert: PathBuf,
    /// API server serving key.
    pub server_key: PathBuf,
    /// Admin client certificate PEM (`CN=admin, O=system:masters`).
    pub admin_cert_pem: String,
    /// Admin client key PEM.
    pub admin_key_pem: String,
    /// ServiceAccount signing key (private, PKCS#8).
    pub sa_key: PathBuf,
    /// ServiceAccount verification key (public PEM): the API server's
    /// `--service-account-key-file` refuses a PKCS#8 EC private key, so it gets this.
    pub sa_pub: PathBuf,
}

fn pki_err(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |e| Error::Pki(format!("{what}: {e}"))
}

/// Generates the PKI into `dir`.
pub fn generate(dir: &Path) -> Result<Pki, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

    let ca_key = KeyPair::generate().map_err(pki_err("CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(pki_err("CA"))?;
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sidecar-testenv-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(pki_err("CA cert"))?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let server_key = KeyPair::generate().map_err(pki_err("server key"))?;
    let mut server = CertificateParams::new(vec![
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
    ])
    .map_err(pki_err("server"))?;
    for ip in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
    ] {
        server.subject_alt_names.push(SanType::IpAddress(ip));
    }
    server.distinguished_name = rcgen::DistinguishedName::new();
    server
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .map_err(pki_err("server cert"))?;

    let admin_key = KeyPair::generate().map_err(pki_err("admin key"))?;
    let mut admin = CertificateParams::new(Vec::<String>::new()).map_err(pki_err("admin"))?;
    admin.distinguished_name = rcgen::DistinguishedName::new();
    admin.distinguished_name.push(DnType::CommonName, "admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let admin_cert = admin
        .signed_by(&admin_key, &issuer)
        .map_err(pki_err("admin cert"))?;

    let sa = KeyPair::generate().map_err(pki_err("service-account key"))?;

    let write = |name: &str, body: &str| -> Result<PathBuf, Error> {
        let p = dir.join(name);
        std::fs::write(&p, body).map_err(|e| Error::io(&p, e))?;
        Ok(p)
    };
    Ok(Pki {
        ca_cert: write("ca.crt", &ca_cert.pem())?,
        ca_pem: ca_cert.pem(),
        server_cert: write("apiserver.crt", &server_cert.pem())?,
        server_key: write("apiserver.key", &server_key.serialize_pem())?,
        admin_cert_pem: admin_cert.pem(),
        admin_key_pem: admin_key.serialize_pem(),
        sa_key: write("sa.key", &sa.serialize_pem())?,
        sa_pub: write("sa.pub", &sa.public_key_pem())?,
    })
}

/// Renders a kubeconfig for `server` that authenticates with the admin certificate.
pub fn admin_kubeconfig(pki: &Pki, server: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: sidecar-testenv
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: sidecar-testenv
  context:
    cluster: sidecar-testenv
    user: admin
    namespace: default
current-context: sidecar-testenv
",
        ca = b64(&pki.ca_pem),
        cert = b64(&pki.admin_cert_pem),
        key = b64(&pki.admin_key_pem),
    )
}
