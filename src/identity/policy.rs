//! Authorization: which proven principals may pass.
//!
//! A [`Policy`] is an allowlist. A principal passes when any rule admits it; an empty policy
//! admits nobody (fail closed). Users are matched by email or email domain, service tokens by
//! `common_name`, and either by a custom predicate. Email rules never match service tokens.
//!
//! A policy authorizes what the Access mechanism proved. Other mechanisms authorize at the
//! mechanism: [`ApiKeyAuth::only`](crate::identity::ApiKeyAuth::only) narrows API keys by name,
//! [`ClientCertAuth`](crate::identity::ClientCertAuth) pins certificates.
//!
//! Beyond the allowlists, a policy can ask for what only the user's Access identity says
//! (fetched from the team's `get-identity` endpoint, see
//! [`GateBuilder::identity_url`](crate::GateBuilder::identity_url)): membership of an identity
//! provider group ([`Policy::allow_groups`] admits, [`Policy::require_group`] requires), the
//! login method ([`Policy::require_auth_method`], e.g. a hardware key for `/admin`), a device
//! posture rule, WARP. And it can bound the age of the login itself
//! ([`Policy::max_session_age`]: a stale login is 401, so the browser signs in again).
//!
//! Requirements (`require_*`, `max_session_age`) apply to users; a service token named by
//! [`Policy::allow_service_tokens`] has no login to check. The identity is fetched only when a
//! rule needs it; when it cannot be had, a decision that needs it is 503
//! `identity_unavailable`, and one that does not (an allowlisted email with no `require_*`
//! rule) still passes.
//!
//! ```
//! use std::time::Duration;
//! use ztgate::Policy;
//!
//! // Admins: listed people, or anyone in the `ops` group; with a hardware key, logged in
//! // within the last 12 hours.
//! let policy: Policy = Policy::new()
//!     .allow_emails(["alice@acme.com"])
//!     .allow_groups(["ops"])
//!     .require_auth_method(["hwk"])
//!     .max_session_age(Duration::from_secs(12 * 3600));
//! assert!(policy.needs_identity());
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::principal::{AccessIdentity, AccessUser, NoClaims, Principal};

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
    /// Admits members of any of these groups (needs the identity).
    groups: Vec<String>,
    /// Each must hold for a user (all need the identity).
    requirements: Vec<IdentityRule>,
    max_session_age: Option<Duration>,
}

/// A rule over the user's Access identity.
#[derive(Clone, Debug, PartialEq, Eq)]
enum IdentityRule {
    Group(String),
    AuthMethod(Vec<String>),
    Posture(String),
    Warp,
}

impl IdentityRule {
    fn holds(&self, identity: &AccessIdentity) -> bool {
        match self {
            Self::Group(g) => identity.in_group(g),
            Self::AuthMethod(methods) => identity.used_auth_method(methods),
            Self::Posture(rule) => identity.passes_posture(rule),
            Self::Warp => identity.is_warp,
        }
    }
}

/// What a [`Policy`] says of a principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Admitted.
    Allow,
    /// Proven, not admitted: 403.
    Forbidden,
    /// The login is older than [`Policy::max_session_age`]: 401, sign in again.
    SessionTooOld,
    /// A rule needs the user's Access identity, which the principal does not carry yet: fetch
    /// it, attach it, decide again.
    NeedsIdentity,
}

impl<C> Clone for Policy<C> {
    fn clone(&self) -> Self {
        Self {
            emails: self.emails.clone(),
            domains: self.domains.clone(),
            service_tokens: self.service_tokens.clone(),
            predicates: self.predicates.clone(),
            groups: self.groups.clone(),
            requirements: self.requirements.clone(),
            max_session_age: self.max_session_age,
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
            .field("groups", &self.groups)
            .field("requirements", &self.requirements)
            .field("max_session_age", &self.max_session_age)
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
            groups: Vec::new(),
            requirements: Vec::new(),
            max_session_age: None,
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

    /// Admits users in any of these identity provider groups, matched by the group's id, name
    /// or email, exactly (like an email on the list). Needs the Access identity.
    pub fn allow_groups<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, groups: I) -> Self {
        self.groups
            .extend(groups.into_iter().map(|g| g.as_ref().trim().to_owned()).filter(|g| !g.is_empty()));
        self
    }

    /// Requires users to be in `group` (id, name or email), whatever admitted them; each call
    /// adds a group that must also hold. Needs the Access identity.
    pub fn require_group(mut self, group: impl AsRef<str>) -> Self {
        self.requirements.push(IdentityRule::Group(group.as_ref().trim().to_owned()));
        self
    }

    /// Requires the login to have used one of `methods`, as the identity's `amr` lists them
    /// (RFC 8176: `hwk` a hardware key, `swk` a software key, `mfa`, `otp`, `pwd`...). Each call
    /// adds a rule that must also hold. Needs the Access identity.
    pub fn require_auth_method<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, methods: I) -> Self {
        let methods: Vec<String> = methods.into_iter().map(|m| m.as_ref().trim().to_owned()).collect();
        self.requirements.push(IdentityRule::AuthMethod(methods));
        self
    }

    /// Requires the device posture rule `rule_id` to have passed. Needs the Access identity.
    pub fn require_device_posture(mut self, rule_id: impl AsRef<str>) -> Self {
        self.requirements.push(IdentityRule::Posture(rule_id.as_ref().trim().to_owned()));
        self
    }

    /// Requires the request to come through the WARP client. Needs the Access identity.
    pub fn require_warp(mut self) -> Self {
        self.requirements.push(IdentityRule::Warp);
        self
    }

    /// Refuses users whose login (`iat`) is older than `age` with 401 `session_too_old`, so
    /// the browser goes back through the Access login; a token without `iat` is refused too.
    pub fn max_session_age(mut self, age: Duration) -> Self {
        self.max_session_age = Some(age);
        self
    }

    /// Whether some rule reads the Access identity.
    pub fn needs_identity(&self) -> bool {
        !self.groups.is_empty() || !self.requirements.is_empty()
    }

    /// Whether the policy admits `principal`, with the identity it carries (a rule that needs
    /// one fails without it). [`Policy::max_session_age`] needs the time: see
    /// [`Policy::decide`].
    pub fn allows(&self, principal: &Principal<C>) -> bool {
        match self.decide(principal, None) {
            Decision::Allow => true,
            Decision::Forbidden | Decision::SessionTooOld => false,
            Decision::NeedsIdentity => false,
        }
    }

    /// The whole decision at `now` (Unix seconds; `None` skips [`Policy::max_session_age`]).
    /// [`Decision::NeedsIdentity`] when a rule needs the user's identity and the principal
    /// carries none, unless the decision is already known without it.
    pub fn decide(&self, principal: &Principal<C>, now: Option<u64>) -> Decision {
        let user = principal.as_user();
        if let (Some(user), Some(age), Some(now)) = (user, self.max_session_age, now) {
            let issued = user.issued_at.unwrap_or(0);
            if now.saturating_sub(issued) > age.as_secs() {
                return Decision::SessionTooOld;
            }
        }
        let listed = self.listed(principal);
        let Some(user) = user else {
            // Service tokens and others: allowlists and predicates only.
            return if listed { Decision::Allow } else { Decision::Forbidden };
        };
        if listed && self.requirements.is_empty() {
            return Decision::Allow;
        }
        if !listed && self.groups.is_empty() {
            return Decision::Forbidden;
        }
        match &user.identity {
            None => Decision::NeedsIdentity,
            Some(identity) => {
                let admitted = listed || self.groups.iter().any(|g| identity.in_group(g));
                if admitted && self.requirements.iter().all(|r| r.holds(identity)) {
                    Decision::Allow
                } else {
                    Decision::Forbidden
                }
            }
        }
    }

    /// Admitted by an allowlist or a predicate (not by a group).
    fn listed(&self, principal: &Principal<C>) -> bool {
        let by_rule = match principal {
            Principal::User(user) => self.email_listed(user),
            Principal::Service(service) => self.service_tokens.contains(&service.common_name),
            _ => false,
        };
        by_rule || self.predicates.iter().any(|p| p(principal))
    }

    fn email_listed(&self, user: &AccessUser<C>) -> bool {
        // Verified emails are lowercased already; only a principal built by hand pays for a
        // copy.
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
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::principal::{AccessIdentity, Group, ServiceToken};

    fn user(email: &str, identity: Option<AccessIdentity>, issued_at: u64) -> Principal {
        Principal::User(AccessUser {
            email: email.to_owned(),
            sub: String::new(),
            country: None,
            identity_nonce: None,
            issued_at: Some(issued_at),
            expires_at: issued_at + 3600,
            identity: identity.map(Arc::new),
            custom: NoClaims,
        })
    }

    fn in_groups(groups: &[&str], amr: &[&str]) -> AccessIdentity {
        AccessIdentity {
            groups: groups
                .iter()
                .map(|g| Group { name: Some((*g).to_owned()), ..Group::default() })
                .collect(),
            amr: amr.iter().map(|m| (*m).to_owned()).collect(),
            ..AccessIdentity::default()
        }
    }

    #[test]
    fn the_identity_is_asked_for_only_when_the_decision_needs_it() {
        let groups: Policy = Policy::new().allow_emails(["a@x.com"]).allow_groups(["ops"]);
        // Listed, nothing required: no identity needed.
        assert_eq!(groups.decide(&user("a@x.com", None, 0), Some(10)), Decision::Allow);
        // Not listed, a group could admit: needed.
        assert_eq!(groups.decide(&user("b@x.com", None, 0), Some(10)), Decision::NeedsIdentity);
        assert_eq!(groups.decide(&user("b@x.com", Some(in_groups(&["ops"], &[])), 0), None), Decision::Allow);
        assert_eq!(
            groups.decide(&user("b@x.com", Some(in_groups(&["dev"], &[])), 0), None),
            Decision::Forbidden
        );
        // Not listed and no group rule: nothing could admit, so nothing is fetched.
        let emails: Policy = Policy::new().allow_emails(["a@x.com"]).require_auth_method(["hwk"]);
        assert_eq!(emails.decide(&user("b@x.com", None, 0), None), Decision::Forbidden);
        // Listed, but a requirement reads the identity.
        assert_eq!(emails.decide(&user("a@x.com", None, 0), None), Decision::NeedsIdentity);
        assert_eq!(
            emails.decide(&user("a@x.com", Some(in_groups(&[], &["pwd"])), 0), None),
            Decision::Forbidden
        );
        assert_eq!(emails.decide(&user("a@x.com", Some(in_groups(&[], &["hwk"])), 0), None), Decision::Allow);
        // `allows` never fetches: a rule that needs the identity fails without one.
        assert!(!emails.allows(&user("a@x.com", None, 0)));
    }

    #[test]
    fn requirements_are_for_logins_and_service_tokens_are_judged_by_their_list() {
        let policy: Policy =
            Policy::new().allow_service_tokens(["ci.access"]).require_auth_method(["hwk"]).require_warp();
        let ci = Principal::Service(ServiceToken { common_name: "ci.access".into(), expires_at: 0 });
        assert_eq!(policy.decide(&ci, Some(10)), Decision::Allow);
        let other = Principal::Service(ServiceToken { common_name: "other.access".into(), expires_at: 0 });
        assert_eq!(policy.decide(&other, Some(10)), Decision::Forbidden);
    }

    #[test]
    fn the_session_age_counts_from_iat_and_a_token_without_iat_is_too_old() {
        let policy: Policy =
            Policy::new().allow_emails(["a@x.com"]).max_session_age(Duration::from_secs(100));
        assert_eq!(policy.decide(&user("a@x.com", None, 1000), Some(1100)), Decision::Allow);
        assert_eq!(policy.decide(&user("a@x.com", None, 1000), Some(1101)), Decision::SessionTooOld);
        // Checked before who the user is: a stale login of someone not admitted is still 401.
        assert_eq!(policy.decide(&user("b@x.com", None, 1000), Some(5000)), Decision::SessionTooOld);
        let Principal::User(mut no_iat) = user("a@x.com", None, 1000) else { unreachable!() };
        no_iat.issued_at = None;
        assert_eq!(policy.decide(&Principal::User(no_iat), Some(1001)), Decision::SessionTooOld);
    }
}
