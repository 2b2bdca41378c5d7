//! mTLS: client certificates Cloudflare verified, as a mechanism. The facts (what the edge
//! reported) come from the request layer; this file decides what they prove.

use std::collections::HashSet;

use super::mechanism::{Attempt, Mechanism};
use crate::BoxFuture;
use crate::error::Rejection;
use crate::principal::{ClientCertPrincipal, Principal};
use crate::request::{CertVerification, ClientCertFacts, RequestFacts};

/// mTLS: a client certificate Cloudflare verified and did not find revoked, optionally pinned
/// by SHA-256 fingerprint or subject DN.
///
/// Facts come from [`RequestFacts::client_cert`](crate::request::RequestFacts::client_cert): Workers' `request.cf.tlsClientAuth`, or the
/// `cf-cert-*` headers only when the hop is trusted. No certificate → not mine; presented but
/// not verified, revoked, revocation unknown, or without a SHA-256 fingerprint (absent, or sent
/// but malformed) → 401; verified but not pinned → 403. A principal's id is always
/// `cert:<64 lowercase hex digits>`.
#[derive(Debug, Clone, Default)]
pub struct ClientCertAuth {
    /// Normalised pins, and the text of pins that are no fingerprint (kept so that they match
    /// nothing while still making the mechanism pinned: fail closed).
    fingerprints: HashSet<String>,
    subject_dns: HashSet<String>,
}

impl ClientCertAuth {
    /// The mechanism's name, in proofs, logs and rejections.
    pub const NAME: &'static str = "client_cert";

    /// Any verified, unrevoked certificate from the zone's CA.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pins these SHA-256 fingerprints: 64 hex digits in any case, or 32 `:`-separated pairs,
    /// normalised exactly as the reported fingerprint is
    /// ([`ClientCertFacts::normalize_fingerprint`](crate::request::ClientCertFacts::normalize_fingerprint)).
    /// A pin that is not a SHA-256 fingerprint matches no certificate (it never widens the
    /// pins); check configured values with that function to catch typos.
    pub fn pin_fingerprints<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, fps: I) -> Self {
        self.fingerprints.extend(fps.into_iter().map(|f| {
            let f = f.as_ref();
            // An invalid pin is kept as written: a normalised fingerprint is 64 lowercase hex
            // digits, which a string that failed to normalise never is.
            ClientCertFacts::normalize_fingerprint(f).unwrap_or_else(|| f.to_owned())
        }));
        self
    }

    /// Pins these subject DNs (exact match).
    pub fn pin_subject_dns<I: IntoIterator<Item = S>, S: Into<String>>(mut self, dns: I) -> Self {
        self.subject_dns.extend(dns.into_iter().map(Into::into));
        self
    }
}

impl<C: Send + Sync + 'static> Mechanism<C> for ClientCertAuth {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn attempt<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Attempt<C>> {
        let refuse =
            |reason| Attempt::Refused(Rejection::InvalidCredential { mechanism: Self::NAME, reason });
        let outcome = match facts.client_cert() {
            None => Attempt::NotPresent,
            Some(cert) if !cert.presented => Attempt::NotPresent,
            Some(cert) => {
                // Normalised again here: facts can be built outside the request layer
                // (`with_client_cert`), and a value that is no fingerprint must never name a
                // principal, whoever set it.
                let fingerprint =
                    cert.fingerprint_sha256.as_deref().map(ClientCertFacts::normalize_fingerprint);
                let malformed = cert.fingerprint_malformed || matches!(fingerprint, Some(None));
                match (&cert.verified, cert.revoked, fingerprint.flatten()) {
                    _ if malformed => refuse("malformed certificate fingerprint"),
                    (Some(CertVerification::Success), Some(false), Some(fp)) => {
                        let pinned = self.fingerprints.is_empty() && self.subject_dns.is_empty()
                            || self.fingerprints.contains(&fp)
                            || cert.subject_dn.as_ref().is_some_and(|dn| self.subject_dns.contains(dn));
                        if pinned {
                            Attempt::Verified(Principal::ClientCert(ClientCertPrincipal {
                                fingerprint_sha256: fp,
                                subject_dn: cert.subject_dn.clone().unwrap_or_default(),
                                issuer_dn: cert.issuer_dn.clone().unwrap_or_default(),
                            }))
                        } else {
                            Attempt::Refused(Rejection::Forbidden)
                        }
                    }
                    (Some(CertVerification::Success), Some(true), _) => refuse("certificate revoked"),
                    (Some(CertVerification::Success), None, _) => refuse("revocation status unknown"),
                    (Some(CertVerification::Success), _, None) => refuse("no certificate fingerprint"),
                    _ => refuse("certificate not verified"),
                }
            }
        };
        Box::pin(std::future::ready(outcome))
    }
}
