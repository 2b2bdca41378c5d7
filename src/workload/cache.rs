//! Credentials kept until shortly before they expire, and one exchange in flight to renew them.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;

use super::issuer::WorkloadIssuer;
use super::sts::{AwsCredentials, StsClient, StsError};
use crate::clock::Clock;

/// Credentials are not handed out in their last seconds: a request signed that close to
/// their expiry may reach AWS after it.
const EXPIRY_SAFETY: u64 = 30;

/// Credentials, the time (by the clock) from which they are renewed, and the time until which
/// they may still be handed out while a renewal runs or after it failed.
struct Cached {
    credentials: Arc<AwsCredentials>,
    renew_at: u64,
    usable_until: u64,
}

/// What the waiters of an exchange learn once it ends: nothing (it succeeded: read the
/// credentials) or its error.
#[derive(Default)]
struct LastExchange {
    failure: Option<StsError>,
}

struct Inner {
    issuer: WorkloadIssuer,
    sts: StsClient,
    clock: Arc<dyn Clock>,
    current: ArcSwapOption<Cached>,
    /// Held by the one call that exchanges; the others wait here for its outcome.
    exchange: tokio::sync::Mutex<LastExchange>,
    /// Exchanges ended (successful or not): a waiter that sees it move shares that outcome.
    ended: AtomicU64,
    /// Exchanges started.
    started: AtomicU64,
}

/// AWS credentials for the workload, obtained by exchanging its own signed token at STS
/// (`AssumeRoleWithWebIdentity`) and kept until
/// [`refresh_margin`](super::StsConfig::with_refresh_margin) before they expire.
///
/// - **One exchange in flight**, whatever the concurrency: the callers that find no fresh
///   credentials queue behind the one exchanging, and share its outcome, error included.
///   A caller that arrives after a failure tries again (no negative caching).
/// - **Bounded**: every call returns within the STS [`deadline`](super::StsConfig::with_deadline),
///   the wait for another caller's exchange included, with the credentials or an
///   [`StsError`]; never a hang. A caller dropped mid-exchange hands the exchange to a waiter.
/// - **Renewal before expiry**: from `expiration − margin` (the margin capped at half their
///   lifetime) the next call renews them. Meanwhile the other callers keep getting the current
///   credentials, which are still valid, and if the renewal fails they keep getting them until
///   30 s before they expire; only then does a failure reach the callers. So an STS outage
///   shorter than the margin is not seen at all.
/// - **Time** is read from the injected [`Clock`]; credentials that are already expired when
///   they arrive are refused, even if STS just sent them.
///
/// Cheap to clone (one `Arc`); the fast path is one atomic load.
#[derive(Clone)]
pub struct WebIdentityCredentials {
    inner: Arc<Inner>,
}

impl fmt::Debug for WebIdentityCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.inner.current.load();
        f.debug_struct("WebIdentityCredentials")
            .field("issuer", &self.inner.issuer.config().issuer())
            .field("sts", &self.inner.sts)
            .field("credentials", &current.as_ref().map(|c| &c.credentials))
            .field("exchanges", &self.exchanges())
            .finish()
    }
}

impl WebIdentityCredentials {
    /// Credentials from `sts` for tokens signed by `issuer`, timed by `clock`.
    pub fn new(issuer: WorkloadIssuer, sts: StsClient, clock: Arc<dyn Clock>) -> Self {
        let inner = Inner {
            issuer,
            sts,
            clock,
            current: ArcSwapOption::empty(),
            exchange: tokio::sync::Mutex::new(LastExchange::default()),
            ended: AtomicU64::new(0),
            started: AtomicU64::new(0),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Valid credentials: the cached ones, or new ones from one exchange.
    pub async fn credentials(&self) -> Result<Arc<AwsCredentials>, StsError> {
        if let Some(credentials) = self.fresh() {
            return Ok(credentials);
        }
        let deadline = self.inner.sts.config().deadline();
        let until = tokio::time::Instant::now() + deadline;
        if let Some(usable) = self.usable() {
            // Due for renewal but still valid: one caller renews, the others use these.
            let Ok(last) = self.inner.exchange.try_lock() else { return Ok(usable) };
            if let Some(credentials) = self.fresh() {
                return Ok(credentials);
            }
            return Ok(self.lead(last, until).await.unwrap_or(usable));
        }
        let seen = self.inner.ended.load(Ordering::SeqCst);
        let last = match tokio::time::timeout_at(until, self.inner.exchange.lock()).await {
            Ok(guard) => guard,
            Err(_) => return Err(StsError::DeadlineExceeded { deadline, attempts: 0, last: None }),
        };
        if let Some(credentials) = self.fresh() {
            return Ok(credentials);
        }
        if self.inner.ended.load(Ordering::SeqCst) != seen
            && let Some(failure) = &last.failure
        {
            // The exchange this call waited for failed: its answer is this call's too.
            return Err(failure.clone());
        }
        self.lead(last, until).await
    }

    /// Runs the exchange, holding `last` so that no other runs meanwhile, and records its outcome.
    async fn lead(
        &self,
        mut last: tokio::sync::MutexGuard<'_, LastExchange>,
        until: tokio::time::Instant,
    ) -> Result<Arc<AwsCredentials>, StsError> {
        self.inner.started.fetch_add(1, Ordering::SeqCst);
        let outcome = self.exchange(until).await;
        last.failure = outcome.as_ref().err().cloned();
        self.inner.ended.fetch_add(1, Ordering::SeqCst);
        match &outcome {
            Ok(credentials) => tracing::info!(
                layer = "workload",
                outcome = "sts_credentials",
                role = credentials.assumed_role_arn().unwrap_or(""),
                expiration = credentials.expiration()
            ),
            Err(e) => tracing::warn!(layer = "workload", outcome = "sts_failed", error = ?e.to_string()),
        }
        outcome
    }

    /// How many exchanges have been started (for metrics and tests).
    pub fn exchanges(&self) -> u64 {
        self.inner.started.load(Ordering::SeqCst)
    }

    /// Forgets the cached credentials, so the next call exchanges again (e.g. after AWS
    /// refused them).
    pub fn invalidate(&self) {
        self.inner.current.store(None);
    }

    fn fresh(&self) -> Option<Arc<AwsCredentials>> {
        let current = self.inner.current.load();
        let cached = current.as_ref()?;
        (self.inner.clock.now() < cached.renew_at).then(|| cached.credentials.clone())
    }

    fn usable(&self) -> Option<Arc<AwsCredentials>> {
        let current = self.inner.current.load();
        let cached = current.as_ref()?;
        (self.inner.clock.now() < cached.usable_until).then(|| cached.credentials.clone())
    }

    /// Signs a token and exchanges it, all before `until`; caches what comes back.
    async fn exchange(&self, until: tokio::time::Instant) -> Result<Arc<AwsCredentials>, StsError> {
        let deadline = self.inner.sts.config().deadline();
        let token = match tokio::time::timeout_at(until, self.inner.issuer.sign()).await {
            Ok(token) => token.map_err(StsError::Token)?,
            Err(_) => return Err(StsError::DeadlineExceeded { deadline, attempts: 0, last: None }),
        };
        let credentials = self.inner.sts.exchange_until(token.expose(), until).await?;
        let now = self.inner.clock.now();
        let expiration = credentials.expiration();
        if expiration <= now {
            return Err(StsError::Malformed("the credentials have already expired".into()));
        }
        let margin = self.inner.sts.config().refresh_margin().as_secs().min((expiration - now) / 2);
        let credentials = Arc::new(credentials);
        let cached = Cached {
            credentials: credentials.clone(),
            renew_at: expiration - margin,
            usable_until: expiration.saturating_sub(EXPIRY_SAFETY),
        };
        self.inner.current.store(Some(Arc::new(cached)));
        Ok(credentials)
    }
}
