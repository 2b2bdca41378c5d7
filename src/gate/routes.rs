//! Per-route gates with deny by default.
//!
//! [`RoutePolicies`] is one layer for a whole router: each rule pairs a method and a path
//! pattern with a [`Requirement`]; the first matching rule decides, and a request that matches
//! no rule is refused with 403 `no_policy`. A route someone forgot to declare is therefore
//! closed, not open.
//!
//! Patterns: literal segments, `{name}` for exactly one non-empty segment, and a final
//! `{*rest}` for any remainder. Matching is on the raw path, segment by segment, with no
//! normalization: a path the patterns do not recognise (`//`, `%2F`, a trailing `/`) matches
//! nothing and is denied.
//!
//! Every rule's gate removes client-sent identity headers before the handler runs
//! ([`HeaderHygiene`], set for the whole table with [`RoutePolicies::with_header_hygiene`]);
//! a rule declared with [`RoutePolicies::route_with_login_redirect`] sends browsers without a
//! credential to the Access login page.
//!
//! ```
//! use std::sync::Arc;
//! use ztgate::identity::{ApiKeyAuth, ApiKeys, Requirement};
//! use ztgate::RoutePolicies;
//!
//! let keys = Arc::new(ApiKeys::parse("ops:0123456789abcdef0123").unwrap());
//! let policies = RoutePolicies::new()
//!     .route("GET", "/healthz", Requirement::public())
//!     .unwrap()
//!     .route("*", "/ops/{*rest}", Requirement::mechanism(ApiKeyAuth::new(keys)))
//!     .unwrap();
//! // router.layer(policies): everything else answers 403 no_policy.
//! # let _ = policies;
//! ```

use std::fmt;
use std::sync::Arc;

use http::Method;

use super::pipeline::SelectGate;
use super::{Gate, HeaderHygiene, LoginRedirect};
use crate::error::ConfigError;
use crate::identity::Requirement;
use crate::identity::shared_state::{RateLimit, RevocationList};
use crate::principal::NoClaims;
use crate::request::RequestLimits;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Rest,
}

struct Rule<C> {
    method: Option<Method>,
    pattern: Vec<Segment>,
    source: String,
    gate: Gate<C>,
    /// The rule has a rate limit of its own ([`RoutePolicies::route_with_rate_limit`]), which
    /// the table's does not replace.
    own_limit: bool,
}

/// Method + path → requirement, first match wins, no match → 403. Cheap to clone.
pub struct RoutePolicies<C = NoClaims> {
    rules: Arc<Vec<Rule<C>>>,
    limits: RequestLimits,
    hygiene: HeaderHygiene,
    revocations: Option<Arc<dyn RevocationList>>,
    revocations_fail_open: bool,
    failure_limit: Option<RateLimit>,
}

impl<C> Clone for RoutePolicies<C> {
    fn clone(&self) -> Self {
        Self {
            rules: self.rules.clone(),
            limits: self.limits.clone(),
            hygiene: self.hygiene.clone(),
            revocations: self.revocations.clone(),
            revocations_fail_open: self.revocations_fail_open,
            failure_limit: self.failure_limit.clone(),
        }
    }
}

impl<C: 'static> fmt::Debug for RoutePolicies<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for rule in self.rules.iter() {
            let method = rule.method.as_ref().map_or("*", Method::as_str);
            list.entry(&format_args!("{method} {} => {:?}", rule.source, rule.gate.requirement()));
        }
        list.finish()
    }
}

impl RoutePolicies<NoClaims> {
    /// No rules: denies everything until routes are declared.
    pub fn new() -> Self {
        Self::with_limits(RequestLimits::default())
    }
}

impl Default for RoutePolicies<NoClaims> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Send + Sync + 'static> RoutePolicies<C> {
    /// No rules, with explicit request limits (shared by every rule's gate).
    pub fn with_limits(limits: RequestLimits) -> Self {
        Self {
            rules: Arc::new(Vec::new()),
            limits,
            hygiene: HeaderHygiene::default(),
            revocations: None,
            revocations_fail_open: false,
            failure_limit: None,
        }
    }

    /// The revocation list every rule's gate checks (see [`Gate::with_revocations`]), for the
    /// rules declared before this call and after.
    pub fn with_revocations(mut self, list: Arc<dyn RevocationList>) -> Self {
        self.map_gates(|rule| rule.gate.clone().with_revocations(list.clone()));
        self.revocations = Some(list);
        self
    }

    /// Every rule's gate lets verified requests through unchecked while the revocation list
    /// cannot answer (see [`Gate::allow_unchecked_while_revocations_unavailable`]).
    pub fn allow_unchecked_while_revocations_unavailable(mut self) -> Self {
        self.map_gates(|rule| rule.gate.clone().allow_unchecked_while_revocations_unavailable());
        self.revocations_fail_open = true;
        self
    }

    /// The rate limit of every rule's gate that has none of its own
    /// ([`RoutePolicies::route_with_rate_limit`]), for the rules declared before this call and
    /// after: typically [`RateLimit::failures`], one failed-authentication budget per client
    /// across the table.
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.map_gates(|rule| {
            if rule.own_limit { rule.gate.clone() } else { rule.gate.clone().with_rate_limit(limit.clone()) }
        });
        self.failure_limit = Some(limit);
        self
    }

    /// Declares a rule like [`RoutePolicies::route`] with a rate limit of its own (a public
    /// form's [`RateLimit::requests`] budget), instead of the table's.
    pub fn route_with_rate_limit(
        self,
        method: &str,
        pattern: &str,
        requirement: Requirement<C>,
        limit: RateLimit,
    ) -> Result<Self, ConfigError> {
        let gate = self.gate_for(requirement).with_rate_limit(limit);
        self.push_rule(method, pattern, gate, true)
    }

    fn map_gates(&mut self, gate: impl Fn(&Rule<C>) -> Gate<C>) {
        let rules = self.rules.iter().map(|r| Rule { gate: gate(r), ..r.clone_rule() }).collect();
        self.rules = Arc::new(rules);
    }

    /// The [`HeaderHygiene`] of every rule's gate, those declared before this call and after
    /// (default: [`HeaderHygiene::new`], client-sent identity headers removed). One setting
    /// for the table, because what a client may forge does not depend on the route.
    pub fn with_header_hygiene(mut self, hygiene: HeaderHygiene) -> Self {
        let rules = self
            .rules
            .iter()
            .map(|r| Rule { gate: r.gate.clone().with_header_hygiene(hygiene.clone()), ..r.clone_rule() })
            .collect();
        self.rules = Arc::new(rules);
        self.hygiene = hygiene;
        self
    }

    /// The [`HeaderHygiene`] every rule's gate applies.
    pub fn header_hygiene(&self) -> &HeaderHygiene {
        &self.hygiene
    }

    /// Declares `requirement` for `method` (`"GET"`, ..., or `"*"` for any) on `pattern`.
    pub fn route(
        self,
        method: &str,
        pattern: &str,
        requirement: Requirement<C>,
    ) -> Result<Self, ConfigError> {
        let gate = self.gate_for(requirement);
        self.push_rule(method, pattern, gate, false)
    }

    /// Declares a rule like [`RoutePolicies::route`] whose browsers without a credential are
    /// sent to the Access login page instead of a 401 (see [`LoginRedirect`]). For routes
    /// people open in a browser and that accept an Access credential; API routes keep
    /// [`RoutePolicies::route`].
    pub fn route_with_login_redirect(
        self,
        method: &str,
        pattern: &str,
        requirement: Requirement<C>,
        login: LoginRedirect,
    ) -> Result<Self, ConfigError> {
        let gate = self.gate_for(requirement).with_login_redirect(login);
        self.push_rule(method, pattern, gate, false)
    }

    /// A rule's gate: the table's limits, header hygiene, revocations and rate limit.
    fn gate_for(&self, requirement: Requirement<C>) -> Gate<C> {
        let mut gate =
            Gate::with_claims(requirement, self.limits.clone()).with_header_hygiene(self.hygiene.clone());
        if let Some(list) = &self.revocations {
            gate = gate.with_revocations(list.clone());
        }
        if self.revocations_fail_open {
            gate = gate.allow_unchecked_while_revocations_unavailable();
        }
        if let Some(limit) = &self.failure_limit {
            gate = gate.with_rate_limit(limit.clone());
        }
        gate
    }

    fn push_rule(
        mut self,
        method: &str,
        pattern: &str,
        gate: Gate<C>,
        own_limit: bool,
    ) -> Result<Self, ConfigError> {
        let method = match method {
            "*" => None,
            m => Some(
                Method::from_bytes(m.as_bytes())
                    .map_err(|_| ConfigError::new("routes", format!("{m:?} is not a method")))?,
            ),
        };
        let parsed = parse_pattern(pattern)?;
        let rule = Rule { method, pattern: parsed, source: pattern.to_owned(), gate, own_limit };
        match Arc::get_mut(&mut self.rules) {
            Some(rules) => rules.push(rule),
            None => {
                let mut rules: Vec<Rule<C>> = self.rules.iter().map(Rule::clone_rule).collect();
                rules.push(rule);
                self.rules = Arc::new(rules);
            }
        }
        Ok(self)
    }
}

impl<C> RoutePolicies<C> {
    /// The rules in the order they are tried: method (`"*"` for any), pattern, requirement.
    /// For operators' tools (print the effective table), not for matching.
    pub fn rules(&self) -> impl Iterator<Item = (&str, &str, &Requirement<C>)> {
        self.rules
            .iter()
            .map(|r| (r.method.as_ref().map_or("*", Method::as_str), r.source.as_str(), r.gate.requirement()))
    }
}

impl<C> Rule<C> {
    fn clone_rule(&self) -> Self {
        Self {
            method: self.method.clone(),
            pattern: self.pattern.clone(),
            source: self.source.clone(),
            gate: self.gate.clone(),
            own_limit: self.own_limit,
        }
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        let Some(rest) = path.strip_prefix('/') else { return false };
        let mut segments = rest.split('/');
        for want in &self.pattern {
            match want {
                // Like axum's `{*rest}`: `/admin/{*rest}` covers `/admin/...` but not `/admin`.
                Segment::Rest => return segments.next().is_some(),
                Segment::One => match segments.next() {
                    Some(s) if !s.is_empty() => {}
                    _ => return false,
                },
                Segment::Literal(lit) => match segments.next() {
                    Some(s) if s == lit => {}
                    _ => return false,
                },
            }
        }
        segments.next().is_none()
    }
}

fn parse_pattern(pattern: &str) -> Result<Vec<Segment>, ConfigError> {
    let bad = |why: &str| ConfigError::new("routes", format!("pattern {pattern:?}: {why}"));
    let rest = pattern.strip_prefix('/').ok_or_else(|| bad("must start with /"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let segment = if part.starts_with("{*") && part.ends_with('}') {
            if i != parts.len() - 1 {
                return Err(bad("{*rest} must be last"));
            }
            Segment::Rest
        } else if part.starts_with('{') && part.ends_with('}') && part.len() > 2 {
            Segment::One
        } else if part.contains(['{', '}', '*']) {
            return Err(bad("braces only around a whole segment"));
        } else {
            Segment::Literal((*part).to_owned())
        };
        out.push(segment);
    }
    Ok(out)
}

impl<C: Send + Sync + 'static> SelectGate for RoutePolicies<C> {
    type Claims = C;

    fn select(&self, method: &Method, path: &str) -> Option<Gate<C>> {
        self.rules.iter().find(|r| r.matches(method, path)).map(|r| r.gate.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies() -> RoutePolicies {
        RoutePolicies::new()
            .route("GET", "/healthz", Requirement::public())
            .unwrap()
            .route("DELETE", "/admin/notes/{id}", Requirement::any_of([]))
            .unwrap()
            .route("*", "/admin/{*rest}", Requirement::all_of([]))
            .unwrap()
    }

    fn which(method: &str, path: &str) -> Option<String> {
        let p = policies();
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        p.select(&m, path).map(|g| format!("{:?}", g.requirement()))
    }

    #[test]
    fn first_match_wins_and_unmatched_is_none() {
        assert_eq!(which("GET", "/healthz").as_deref(), Some("public"));
        assert_eq!(which("POST", "/healthz"), None);
        assert_eq!(which("GET", "/healthz/"), None);
        assert_eq!(which("GET", "//healthz"), None);
        assert_eq!(which("DELETE", "/admin/notes/7").as_deref(), Some("any_of([])"));
        assert_eq!(which("DELETE", "/admin/notes/").as_deref(), Some("all_of([])"));
        assert_eq!(which("GET", "/admin").as_deref(), None);
        assert_eq!(which("GET", "/admin/").as_deref(), Some("all_of([])"));
        assert_eq!(which("GET", "/admin/x/y").as_deref(), Some("all_of([])"));
        assert_eq!(which("GET", "/other"), None);
    }

    #[test]
    fn bad_patterns_are_config_errors() {
        for bad in ["healthz", "/a/{*rest}/b", "/a{id}", "/a/*"] {
            assert!(RoutePolicies::new().route("GET", bad, Requirement::public()).is_err(), "{bad}");
        }
        assert!(RoutePolicies::new().route("GE T", "/x", Requirement::public()).is_err());
    }
}
