//! mTLS: client certificates Cloudflare verified, as a mechanism. The facts (what the edge
//! reported) come from the request layer; this file decides what they prove.

use std::collections::HashSet;

use super::mechanism::{Attempt, Mechanism};
use crate::BoxFuture;
use crate::error::Rejection;
use crate::principal::{ClientCertPrincipal, Principal};
use crate::request::{CertVerification, RequestFacts};

/// mTLS: a client certificate Cloudflare verified and did not find revoked, optionally pinned
/// by SHA-256 fingerprint or subject DN.
///
/// Facts come from [`RequestFacts::client_cert`](crate::request::RequestFacts::client_cert): Workers' `request.cf.tlsClientAuth`, or the
/// `cf-cert-*` headers only when the hop is trusted. No certificate → not mine; presented but
/// not verified, revoked, or revocation unknown → 401; verified but not pinned → 403.
#[derive(Debug, Clone, Default)]
pub struct ClientCertAuth {
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

    /// Pins these SHA-256 fingerprints (hex, any case, `:` separators allowed).
    pub fn pin_fingerprints<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, fps: I) -> Self {
        self.fingerprints
            .extend(fps.into_iter().map(|f| f.as_ref().replace(':', "").trim().to_ascii_lowercase()));
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
            Some(cert) => match (&cert.verified, cert.revoked, &cert.fingerprint_sha256) {
                (Some(CertVerification::Success), Some(false), Some(fp)) => {
                    let pinned = self.fingerprints.is_empty() && self.subject_dns.is_empty()
                        || self.fingerprints.contains(fp)
                        || cert.subject_dn.as_ref().is_some_and(|dn| self.subject_dns.contains(dn));
                    if pinned {
                        Attempt::Verified(Principal::ClientCert(ClientCertPrincipal {
                            fingerprint_sha256: fp.clone(),
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
            },
        };
        Box::pin(std::future::ready(outcome))
    }
}
