//! Authorization: which proven principals may pass.
//!
//! A [`Policy`] is an allowlist. A principal passes when any rule admits it; an empty policy
//! admits nobody (fail closed). Users are matched by email or email domain, service tokens by
//! `common_name`, and either by a custom predicate. Email rules never match service tokens.
//!
//! A policy authorizes what the Access mechanism proved. Other mechanisms authorize at the
//! mechanism: [`ApiKeyAuth::only`](crate::identity::ApiKeyAuth::only) narrows API keys by name,
//! [`ClientCertAuth`](crate::identity::ClientCertAuth) pins certificates.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use crate::principal::{NoClaims, Principal};

type Predicate<C> = Arc<dyn Fn(&Principal<C>) -> bool + Send + Sync>;

/// An allowlist of principals.
///
/// ```
/// use ztgate::Policy;
///
/// let policy: Policy = Policy::new()
///     .allow_emails(["alice@acme.com"])
///     .allow_email_domains(["ops.acme.com"])
///     .allow_service_tokens(["backup-job.access"]);
/// # let _ = policy;
/// ```
pub struct Policy<C = NoClaims> {
    emails: HashSet<String>,
    domains: HashSet<String>,
    service_tokens: HashSet<String>,
    predicates: Vec<Predicate<C>>,
}

impl<C> Clone for Policy<C> {
    fn clone(&self) -> Self {
        Self {
            emails: self.emails.clone(),
            domains: self.domains.clone(),
            service_tokens: self.service_tokens.clone(),
            predicates: self.predicates.clone(),
        }
    }
}

impl<C> Default for Policy<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> fmt::Debug for Policy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("emails", &self.emails.len())
            .field("email_domains", &self.domains)
            .field("service_tokens", &self.service_tokens.len())
            .field("predicates", &self.predicates.len())
            .finish()
    }
}

impl<C> Policy<C> {
    /// A policy that admits nobody until rules are added.
    pub fn new() -> Self {
        Self {
            emails: HashSet::new(),
            domains: HashSet::new(),
            service_tokens: HashSet::new(),
            predicates: Vec::new(),
        }
    }

    /// Admits users with one of these emails, ASCII case-insensitively (both sides are
    /// ASCII-lowercased; no Unicode case folding: `Ä` and `ä` differ). Surrounding whitespace of
    /// an entry is removed.
    pub fn allow_emails<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, emails: I) -> Self {
        self.emails.extend(
            emails.into_iter().map(|e| e.as_ref().trim().to_ascii_lowercase()).filter(|e| !e.is_empty()),
        );
        self
    }

    /// Admits users whose email is at exactly one of these domains, ASCII case-insensitively
    /// (`acme.com` admits `a@acme.com`, not `a@evil-acme.com` nor `a@sub.acme.com`).
    pub fn allow_email_domains<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, domains: I) -> Self {
        self.domains.extend(
            domains
                .into_iter()
                .map(|d| d.as_ref().trim().trim_start_matches('@').to_ascii_lowercase())
                .filter(|d| !d.is_empty()),
        );
        self
    }

    /// Admits Access service tokens with one of these `common_name`s (exact match, case
    /// included: Cloudflare issues Client IDs in lowercase).
    pub fn allow_service_tokens<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, names: I) -> Self {
        self.service_tokens
            .extend(names.into_iter().map(|n| n.as_ref().trim().to_owned()).filter(|n| !n.is_empty()));
        self
    }

    /// Admits principals for which `predicate` returns true (e.g. a group claim check).
    pub fn allow_if(mut self, predicate: impl Fn(&Principal<C>) -> bool + Send + Sync + 'static) -> Self {
        self.predicates.push(Arc::new(predicate));
        self
    }

    /// Whether the policy admits `principal`.
    pub fn allows(&self, principal: &Principal<C>) -> bool {
        let by_rule = match principal {
            Principal::User(user) => {
                // Verified emails are lowercased already; only a principal built by hand
                // pays for a copy.
                let email = if user.email.bytes().any(|b| b.is_ascii_uppercase()) {
                    std::borrow::Cow::Owned(user.email.to_ascii_lowercase())
                } else {
                    std::borrow::Cow::Borrowed(user.email.as_str())
                };
                self.emails.contains(email.as_ref())
                    || email
                        .rsplit_once('@')
                        .is_some_and(|(local, domain)| !local.is_empty() && self.domains.contains(domain))
            }
            Principal::Service(service) => self.service_tokens.contains(&service.common_name),
            _ => false,
        };
        by_rule || self.predicates.iter().any(|p| p(principal))
    }
}
