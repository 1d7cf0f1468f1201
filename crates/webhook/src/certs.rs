//! The operator's own CA and serving certificate: what to issue and when, as a pure
//! function of what is stored and the time ([`plan`]), and the issuing itself (rcgen).
//!
//! Rotation never leaves a moment in which the API server and a replica disagree:
//! - the serving certificate is renewed from the same CA once two thirds of its life
//!   have passed; the CA bundle the API server trusts does not change;
//! - a CA due for renewal is first only *added* to the bundle (`next`); after `overlap`
//!   (time for every replica and the API server to see the new bundle) it signs the
//!   serving certificate and the old CA stays in the bundle as `previous` for another
//!   `overlap` (time for every replica to load the new serving certificate); then it is
//!   dropped.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::Error;

/// A certificate with its key, as PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub cert: String,
    pub key: String,
}

/// What the operator keeps (in its Secret): the CA that signs the serving certificate, a
/// CA about to replace it or one just replaced, and the serving certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub ca: Pair,
    pub next_ca: Option<Pair>,
    pub previous_ca: Option<String>,
    /// Unix seconds at which `next_ca` was added or `previous_ca` retired (start of the
    /// current overlap).
    pub since: i64,
    pub serving: Pair,
}

impl Stored {
    /// The PEM bundle the API server must trust: every CA that signs, will sign or just
    /// signed a serving certificate in use.
    pub fn bundle(&self) -> String {
        let mut out = String::new();
        for pem in [self.previous_ca.as_deref(), Some(self.ca.cert.as_str())]
            .into_iter()
            .chain([self.next_ca.as_ref().map(|p| p.cert.as_str())])
            .flatten()
        {
            out.push_str(pem.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The last second a certificate's validity can name: 9999-12-31T23:59:59Z (RFC 5280's
/// "no well-defined expiration"). A longer lifetime is cut there.
pub const LAST_CERTIFICATE_SECOND: i64 = 253_402_300_799;

/// `d` in whole seconds, as the Unix times here count them; `i64::MAX` when longer (flags are
/// `u64` seconds: a plain `as i64` would wrap to a negative lifetime).
fn seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// How long things live. Any value is safe: arithmetic on them saturates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub ca: Duration,
    pub serving: Duration,
    pub overlap: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            ca: Duration::from_secs(5 * 365 * 24 * 3600),
            serving: Duration::from_secs(90 * 24 * 3600),
            overlap: Duration::from_secs(5 * 60),
        }
    }
}

/// The validity window of a certificate, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// Two thirds of its life have passed (or it is not valid at all).
    pub fn due(&self, now: i64) -> bool {
        // In i128: no pair of i64 times overflows it.
        let (now, not_before) = (i128::from(now), i128::from(self.not_before));
        let life = (i128::from(self.not_after) - not_before).max(0);
        now < not_before || now >= not_before + life * 2 / 3
    }
}

/// What the stored certificates tell about themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub ca: Validity,
    pub serving: Validity,
    /// The serving certificate was signed by the current CA and names every wanted host.
    pub serving_fits: bool,
}

/// One step towards valid certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing usable is stored: a new CA and serving certificate.
    Create,
    /// Add a new CA to the bundle beside the current one.
    AddNextCa,
    /// The next CA becomes the CA and signs a new serving certificate; the old CA stays in
    /// the bundle.
    PromoteNextCa,
    /// Drop the retired CA from the bundle.
    DropPreviousCa,
    /// A new serving certificate from the current CA.
    RenewServing,
}

/// The next step, or `None` when everything is valid and fits. `stored` is `None` when
/// nothing (usable) is stored.
pub fn plan(stored: Option<(&Stored, Facts)>, now: i64, life: Lifetimes) -> Option<Step> {
    let Some((s, facts)) = stored else {
        return Some(Step::Create);
    };
    // Saturating: an overlap too long to end (or a `since` far off) never ends, rather than
    // overflowing (a panic) or wrapping into the past (promoting a CA nothing trusts yet).
    let overlap_over = now >= s.since.saturating_add(seconds(life.overlap));
    if now >= facts.ca.not_after {
        // Expired: nothing trusts it any more, so there is nothing to keep.
        return Some(Step::Create);
    }
    if s.next_ca.is_some() {
        return overlap_over.then_some(Step::PromoteNextCa);
    }
    if s.previous_ca.is_some() && overlap_over {
        return Some(Step::DropPreviousCa);
    }
    if !facts.serving_fits || facts.serving.due(now) {
        return Some(Step::RenewServing);
    }
    if facts.ca.due(now) && s.previous_ca.is_none() {
        return Some(Step::AddNextCa);
    }
    None
}

/// The names the serving certificate is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// Carries out `step` on `stored` at time `now`.
pub fn apply(
    step: Step,
    stored: Option<&Stored>,
    now: i64,
    life: Lifetimes,
    hosts: &Hosts,
) -> Result<Stored, Error> {
    let fresh = |ca: &Pair| serving(ca, hosts, now, life.serving);
    match (step, stored) {
        (Step::Create, _) | (_, None) => {
            let ca = new_ca(now, life.ca)?;
            let serving = fresh(&ca)?;
            Ok(Stored {
                ca,
                next_ca: None,
                previous_ca: None,
                since: now,
                serving,
            })
        }
        (Step::AddNextCa, Some(s)) => Ok(Stored {
            next_ca: Some(new_ca(now, life.ca)?),
            since: now,
            ..s.clone()
        }),
        (Step::PromoteNextCa, Some(s)) => {
            let ca = match &s.next_ca {
                Some(next) => next.clone(),
                None => new_ca(now, life.ca)?,
            };
            Ok(Stored {
                serving: fresh(&ca)?,
                previous_ca: Some(s.ca.cert.clone()),
                next_ca: None,
                since: now,
                ca,
            })
        }
        (Step::DropPreviousCa, Some(s)) => Ok(Stored {
            previous_ca: None,
            ..s.clone()
        }),
        (Step::RenewServing, Some(s)) => Ok(Stored {
            serving: fresh(&s.ca)?,
            ..s.clone()
        }),
    }
}

/// What `stored`'s certificates say about themselves; an error when they do not parse.
pub fn facts(stored: &Stored, hosts: &Hosts) -> Result<Facts, Error> {
    let ca = parse(&stored.ca.cert)?;
    let serving = parse(&stored.serving.cert)?;
    let ca_validity = validity(&ca);
    let serving_validity = validity(&serving);
    let signed_by_ca = serving.issuer_der == ca.subject_der
        && serving.authority_key_id.as_deref() == ca.subject_key_id.as_deref();
    let names_all = hosts.dns.iter().all(|d| serving.dns.contains(d))
        && hosts.ips.iter().all(|i| serving.ips.contains(i));
    Ok(Facts {
        ca: ca_validity,
        serving: serving_validity,
        serving_fits: signed_by_ca && names_all,
    })
}

struct Parsed {
    not_before: i64,
    not_after: i64,
    subject_der: Vec<u8>,
    issuer_der: Vec<u8>,
    subject_key_id: Option<Vec<u8>>,
    authority_key_id: Option<Vec<u8>>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
}

fn parse(pem: &str) -> Result<Parsed, Error> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let bad = |e: String| Error::Certificate(format!("a stored certificate does not parse: {e}"));
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let mut p = Parsed {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        subject_der: cert.subject().as_raw().to_vec(),
        issuer_der: cert.issuer().as_raw().to_vec(),
        subject_key_id: None,
        authority_key_id: None,
        dns: Vec::new(),
        ips: Vec::new(),
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => p.subject_key_id = Some(k.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                p.authority_key_id = a.key_identifier.as_ref().map(|k| k.0.to_vec());
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                for n in &san.general_names {
                    match n {
                        GeneralName::DNSName(d) => p.dns.push((*d).to_string()),
                        GeneralName::IPAddress(b) => {
                            if let Ok(a) = <[u8; 4]>::try_from(*b) {
                                p.ips.push(IpAddr::from(a));
                            } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                                p.ips.push(IpAddr::from(a));
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(p)
}

fn validity(p: &Parsed) -> Validity {
    Validity {
        not_before: p.not_before,
        not_after: p.not_after,
    }
}

fn rcgen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |e| Error::Certificate(format!("{what}: {e}"))
}

fn window(params: &mut CertificateParams, now: i64, life: Duration) -> Result<(), Error> {
    let at = |t: i64| {
        OffsetDateTime::from_unix_timestamp(t)
            .map_err(|e| Error::Certificate(format!("certificate time: {e}")))
    };
    // Slack for clocks a little behind ours: a minute, or a tenth of a short life.
    let slack = (seconds(life) / 10).min(60);
    params.not_before = at(now.saturating_sub(slack))?;
    params.not_after = at(now
        .saturating_add(seconds(life))
        .min(LAST_CERTIFICATE_SECOND))?;
    Ok(())
}

/// A new self-signed CA valid from `now` for `life`.
pub fn new_ca(now: i64, life: Duration) -> Result<Pair, Error> {
    let key = KeyPair::generate().map_err(rcgen_err("CA key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err("CA"))?;
    params.distinguished_name = DistinguishedName::new();
    let cn = format!("sidecar-operator-webhook-ca-{now}");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    window(&mut params, now, life)?;
    let cert = params
        .self_signed(&key)
        .map_err(rcgen_err("CA certificate"))?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A serving certificate for `hosts`, signed by `ca`, valid from `now` for `life`.
pub fn serving(ca: &Pair, hosts: &Hosts, now: i64, life: Duration) -> Result<Pair, Error> {
    let ca_key = KeyPair::from_pem(&ca.key).map_err(rcgen_err("reading the CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(rcgen_err("reading the CA"))?;
    let key = KeyPair::generate().map_err(rcgen_err("serving key"))?;
    let mut params = CertificateParams::new(hosts.dns.clone()).map_err(rcgen_err("serving"))?;
    for ip in &hosts.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.distinguished_name = DistinguishedName::new();
    let cn = hosts
        .dns
        .first()
        .cloned()
        .unwrap_or_else(|| "sidecar-operator-webhook".into());
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    window(&mut params, now, life)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(rcgen_err("serving certificate"))?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

#[cfg(test)]
#[path = "certs_tests.rs"]
mod tests;
