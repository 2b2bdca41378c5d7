//! Several Cloudflare Access applications behind one gate: staff and contractors on two teams,
//! or a move from one team (or AUD tag) to another. Each application keeps its own
//! [`AccessJwt`]: its JWKS cache, its verified-token cache, its [`Policy`](crate::Policy).
//!
//! The token's `iss` (and `aud`) picks the application *before* any key is fetched or any
//! signature checked; a token no application claims is 401 `invalid_token` without a fetch.
//! The chosen application then checks the token in full, the issuer and audience included,
//! after the signature. So a token of team A signed with team B's key is refused by A's keys,
//! and `any_of` over two teams, which would stop at the first team's refusal, is not needed.
//!
//! ```no_run
//! use ztgate::identity::{AccessApplications, Requirement};
//! use ztgate::{AccessConfig, Gate, Policy};
//! # fn main() -> Result<(), ztgate::ConfigError> {
//! let staff = Gate::builder(AccessConfig::new("https://acme.cloudflareaccess.com", ["staff-aud"])?)
//!     .policy(Policy::new().allow_email_domains(["acme.com"]))
//!     .build_mechanism()?;
//! let contractors = Gate::builder(AccessConfig::new("https://acme-partners.cloudflareaccess.com", ["ext-aud"])?)
//!     .policy(Policy::new().allow_emails(["bob@partner.example"]))
//!     .build_mechanism()?;
//! let gate = Gate::new(Requirement::mechanism(AccessApplications::new([staff, contractors])?));
//! # let _ = gate;
//! # Ok(())
//! # }
//! ```

use std::fmt;

use serde::de::DeserializeOwned;

use super::access_jwt::{AccessJwt, claimed_issuer};
use super::mechanism::{Attempt, Mechanism, first_admission};
use crate::BoxFuture;
use crate::error::{ConfigError, Rejection, TokenError};
use crate::principal::{NoClaims, Principal};
use crate::request::RequestFacts;

/// Access tokens of several applications; the token's claimed issuer and audience choose
/// which application verifies it. Its [`Mechanism::name`] is `access_jwt`, as for one.
pub struct AccessApplications<C = NoClaims> {
    apps: Vec<AccessJwt<C>>,
}

impl<C: DeserializeOwned + Clone + Send + Sync + 'static> fmt::Debug for AccessApplications<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.apps.iter().map(|a| a.verifier().config())).finish()
    }
}

impl<C: DeserializeOwned + Clone + Send + Sync + 'static> AccessApplications<C> {
    /// The applications, tried in this order. At least one; two that accept the same issuer
    /// and AUD tag are a configuration error (which of them decides would be an accident).
    pub fn new(apps: impl IntoIterator<Item = AccessJwt<C>>) -> Result<Self, ConfigError> {
        let apps: Vec<AccessJwt<C>> = apps.into_iter().collect();
        if apps.is_empty() {
            return Err(ConfigError::new("audiences", "AccessApplications needs at least one application"));
        }
        for (i, app) in apps.iter().enumerate() {
            let config = app.verifier().config();
            for earlier in &apps[..i] {
                let other = earlier.verifier().config();
                if other.team_domain() == config.team_domain()
                    && let Some(aud) = config.audiences().iter().find(|a| other.audiences().contains(a))
                {
                    return Err(ConfigError::new(
                        "audiences",
                        format!("two applications accept {} with AUD {aud:?}", config.team_domain()),
                    ));
                }
            }
        }
        Ok(Self { apps })
    }

    /// The application whose team is `iss` and which accepts one of `aud`.
    fn pick(&self, iss: &str, aud: &[String]) -> Result<&AccessJwt<C>, TokenError> {
        let mut same_team =
            self.apps.iter().filter(|a| a.verifier().config().team_domain() == iss).peekable();
        if same_team.peek().is_none() {
            return Err(TokenError::Issuer);
        }
        same_team
            .find(|a| a.verifier().config().audiences().iter().any(|want| aud.contains(want)))
            .ok_or(TokenError::Audience)
    }
}

impl<C: DeserializeOwned + Clone + Send + Sync + 'static> Mechanism<C> for AccessApplications<C> {
    fn name(&self) -> &'static str {
        AccessJwt::<C>::NAME
    }

    fn attempt<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Attempt<C>> {
        Box::pin(async move {
            let Some(token) = facts.access_jwt() else { return Attempt::NotPresent };
            let picked = claimed_issuer(token.expose()).and_then(|(iss, aud)| self.pick(&iss, &aud));
            match picked {
                Ok(app) => app.attempt(facts).await,
                Err(e) => {
                    tracing::info!(layer = "identity", outcome = "refused", mechanism = AccessJwt::<C>::NAME, reason = ?e.to_string());
                    Attempt::Refused(Rejection::from(e))
                }
            }
        })
    }

    /// The principal does not say which application proved it: admitted while some
    /// application's policy admits it, refused once none does.
    fn readmit(&self, principal: &Principal<C>, now: u64) -> Result<(), Rejection> {
        first_admission(self.apps.iter().map(|app| app.readmit(principal, now)))
            .unwrap_or(Err(Rejection::Forbidden))
    }
}
