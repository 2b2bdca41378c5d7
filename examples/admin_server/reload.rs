//! Configuration reload (SIGHUP, `POST /admin/reload`): the settings are read again (the
//! environment, then the file `ZTGATE_CONFIG` names), and the route table, the API keys, the
//! HMAC key ring and the webhook secret are swapped at once. Connections stay open; the Access
//! verifier, with its JWKS and verified-token caches, is kept whenever the team, audiences,
//! certs URL and token cache are unchanged (only who is admitted changed). A configuration that
//! fails any check is refused whole and the running one keeps serving (logged
//! `config_reload_failed`, counted in `ztgate_config_reloads_total{outcome="refused"}`).
//!
//! The listen address, the database, the connection limits, and switching between dev mode and
//! production take a restart: a reload that changes them applies the rest and says so.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ztgate::config::RouteSpec;
use ztgate::identity::hmac_token::KeyRingSource;
use ztgate::identity::shared_state::{
    Budget, InMemoryRateLimiter, InMemoryRevocations, RateLimit, RevocationList,
};
use ztgate::identity::webhook::ReplayGuard;
use ztgate::identity::webhook::WebhookVerifier;
use ztgate::identity::{AccessJwt, ApiKeys};
use ztgate::redis::RedisStore;
use ztgate::{ReloadablePolicies, RoutePolicies};

use crate::LOG_TARGET;
use crate::config::{CredentialSettings, Credentials, Identity, Settings, WhenUnavailable};
use crate::routes::route_policies;
use crate::serve::Limits;
use crate::store::Store;

/// Counter of reloads, labelled `outcome` (`applied` or `refused`).
pub(crate) const CONFIG_RELOADS: &str = "ztgate_config_reloads_total";
/// How long the start waits for Redis to answer.
const CONNECT_AT_START: Duration = Duration::from_secs(2);

/// The keys the handlers read, swapped whole by a reload.
pub(crate) struct LiveKeys {
    /// Unsubscribe links' keys: the first signs, all verify.
    pub(crate) ring: Arc<KeyRingSource>,
    /// With the store's replay guard; `None`: the webhook route answers 503.
    pub(crate) webhooks: Option<WebhookVerifier>,
}

/// What the handlers hold: the keys in force now.
#[derive(Clone)]
pub(crate) struct Live(Arc<RwLock<Arc<LiveKeys>>>);

impl Live {
    fn new(keys: LiveKeys) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(keys))))
    }

    /// The keys in force now (a request keeps the ones it started with).
    pub(crate) fn get(&self) -> Arc<LiveKeys> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, keys: LiveKeys) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
    }
}

/// What a reload keeps from the running configuration.
struct Running {
    /// The production verifier's settings and the mechanism that owns its caches.
    verifier: Option<(Vec<String>, Arc<AccessJwt>)>,
    /// Kept when a reload leaves `ZTGATE_API_KEYS` unset (dev mode's random key stays valid).
    api_keys: Arc<ApiKeys>,
    /// Kept when a reload names no key ring (links signed with the random one stay valid).
    ring: Arc<KeyRingSource>,
}

/// Settings only a restart changes.
#[derive(PartialEq)]
struct Fixed {
    listen: std::net::SocketAddr,
    db: std::path::PathBuf,
    limits: Limits,
    max_body_reads: usize,
    sockets: crate::ws::SocketLimits,
    auth_failures: Budget,
}

/// What the instances of a fleet share: revocations, and the failed-authentication budgets.
/// In this process's memory (one instance).
#[derive(Clone)]
pub(crate) struct SharedState {
    pub(crate) revocations: Arc<dyn RevocationList>,
    pub(crate) auth_limit: RateLimit,
    /// `POST /api/subscribe`'s own budget: every request spends it, per client IP.
    pub(crate) subscribe_limit: RateLimit,
    /// The webhook replay guard; `None`: the SQLite store's (one instance, across restarts).
    pub(crate) replay: Option<Arc<dyn ReplayGuard>>,
    /// What the gates do while the store cannot answer.
    pub(crate) when_unavailable: WhenUnavailable,
    /// The Redis behind the others, if any: connected ahead of the first request.
    redis: Option<RedisStore>,
}

impl SharedState {
    /// In memory, with `auth_failures` per client IP and per credential.
    pub(crate) fn in_memory(
        auth_failures: Budget,
        subscribe: Budget,
        when_unavailable: WhenUnavailable,
    ) -> Self {
        let clock = Arc::new(ztgate::clock::SystemClock);
        let limiter = InMemoryRateLimiter::new(auth_failures, clock.clone());
        Self {
            revocations: Arc::new(InMemoryRevocations::default()),
            auth_limit: RateLimit::failures(Arc::new(limiter)),
            subscribe_limit: RateLimit::requests(
                Arc::new(InMemoryRateLimiter::new(subscribe, clock)),
                "subscribe",
            ),
            replay: None,
            when_unavailable,
            redis: None,
        }
        .with_fault_choices()
    }

    /// In the Redis at `url`, shared with every instance pointed at it. By default revocations
    /// and replays fail closed when Redis cannot answer (503 `state_unavailable`) and rate
    /// limits fail open with a warning; `when_unavailable` says otherwise.
    pub(crate) fn redis(
        url: &str,
        auth_failures: Budget,
        subscribe: Budget,
        when_unavailable: WhenUnavailable,
    ) -> Result<Self, ztgate::ConfigError> {
        let redis = RedisStore::connect(url)?;
        Ok(Self {
            revocations: Arc::new(redis.revocations()),
            auth_limit: RateLimit::failures(Arc::new(redis.rate_limiter(auth_failures))),
            subscribe_limit: RateLimit::requests(Arc::new(redis.rate_limiter(subscribe)), "subscribe"),
            replay: Some(Arc::new(redis.replay_guard())),
            when_unavailable,
            redis: Some(redis),
        }
        .with_fault_choices())
    }

    /// Connects to Redis before the server takes requests, so the first ones do not pay for
    /// the connection (each call is bounded by 50 ms, the connection's making included): a few
    /// tries within [`CONNECT_AT_START`]. A Redis still unreachable is only logged: requests
    /// then get the fault choices, and the connection is tried again on each call.
    pub(crate) async fn connect(&self) {
        let Some(redis) = &self.redis else { return };
        let started = tokio::time::Instant::now();
        loop {
            match redis.ping().await {
                Ok(()) => {
                    tracing::info!(target: LOG_TARGET, layer = "server", outcome = "redis_connected");
                    return;
                }
                Err(e) if started.elapsed() >= CONNECT_AT_START => {
                    tracing::warn!(target: LOG_TARGET, layer = "server", outcome = "redis_unavailable", error = ?e.to_string(), "Redis did not answer at start; shared-state checks follow the fault choices until it does");
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The budgets refuse while unchecked, if the operator said so.
    fn with_fault_choices(mut self) -> Self {
        if self.when_unavailable.refuse_unlimited {
            self.auth_limit = self.auth_limit.fail_closed();
            self.subscribe_limit = self.subscribe_limit.fail_closed();
        }
        self
    }
}

/// The result of a reload that was applied.
pub(crate) struct Reloaded {
    /// Rules in the new route table.
    pub(crate) routes: usize,
    /// Whether the Access verifier (and its caches) was kept.
    pub(crate) kept_key_cache: bool,
    /// What changed but takes a restart.
    pub(crate) needs_restart: Vec<&'static str>,
}

/// Reloads the configuration; one reload at a time.
pub(crate) struct Reloader {
    store: Store,
    /// Revocations and rate limits: kept for the process's life (a reload keeps them).
    shared: SharedState,
    /// Dev mode's Access mechanism (the local issuer): kept for the process's life.
    dev: Option<Arc<AccessJwt>>,
    fixed: Fixed,
    policies: ReloadablePolicies,
    live: Live,
    running: tokio::sync::Mutex<Running>,
}

impl Reloader {
    /// The first configuration, assembled: the reloader, the policies layer for the router
    /// and the keys for the handlers. `access` is the dev mechanism in dev mode.
    pub(crate) fn start(
        settings: &Settings,
        access: Arc<AccessJwt>,
        credentials: Credentials,
        store: Store,
        shared: SharedState,
    ) -> Result<Arc<Self>, String> {
        let dev = matches!(settings.identity, Identity::Dev);
        let verifier = match &settings.identity {
            Identity::Access(a) => Some((a.verifier_key.clone(), access.clone())),
            Identity::Dev => None,
        };
        let (table, keys, api_keys, ring) =
            assemble(settings.sources.routes(), access.clone(), credentials, dev, &store, &shared)?;
        Ok(Arc::new(Self {
            dev: dev.then_some(access),
            fixed: fixed(settings),
            policies: ReloadablePolicies::new(table),
            live: Live::new(keys),
            running: tokio::sync::Mutex::new(Running { verifier, api_keys, ring }),
            store,
            shared,
        }))
    }

    /// The layer to put over the router.
    pub(crate) fn policies(&self) -> ReloadablePolicies {
        self.policies.clone()
    }

    /// The keys the handlers read.
    pub(crate) fn live(&self) -> Live {
        self.live.clone()
    }

    /// The revocation list the gates check.
    pub(crate) fn revocations(&self) -> Arc<dyn RevocationList> {
        self.shared.revocations.clone()
    }

    /// Reads the configuration again and swaps it in, or refuses it whole.
    pub(crate) async fn reload(&self, trigger: &'static str) -> Result<Reloaded, String> {
        let mut running = self.running.lock().await;
        let result = self.try_reload(&mut running).await;
        match &result {
            Ok(done) => {
                metrics::counter!(CONFIG_RELOADS, "outcome" => "applied").increment(1);
                tracing::info!(
                    target: LOG_TARGET,
                    layer = "config",
                    outcome = "config_reloaded",
                    trigger,
                    routes = done.routes,
                    kept_key_cache = done.kept_key_cache,
                    needs_restart = ?done.needs_restart,
                );
            }
            Err(why) => {
                metrics::counter!(CONFIG_RELOADS, "outcome" => "refused").increment(1);
                tracing::warn!(target: LOG_TARGET, layer = "config", outcome = "config_reload_failed", trigger, reason = ?why);
            }
        }
        result
    }

    async fn try_reload(&self, running: &mut Running) -> Result<Reloaded, String> {
        let settings = Settings::load().await.map_err(|e| e.to_string())?;
        let now = fixed(&settings);
        let Settings { sources, identity, credentials, .. } = settings;
        let (access, kept_key_cache, verifier) = match (&identity, &self.dev, &running.verifier) {
            (Identity::Dev, Some(dev), _) => (dev.clone(), true, None),
            (Identity::Access(new), None, Some((key, base))) if *key == new.verifier_key => {
                (Arc::new(base.with_policy(new.policy())), true, Some((key.clone(), base.clone())))
            }
            (Identity::Access(new), None, _) => {
                let base = new.mechanism.clone();
                (base.clone(), false, Some((new.verifier_key.clone(), base)))
            }
            (Identity::Dev, None, _) => {
                return Err("ZTGATE_TEAM_DOMAIN: is now unset; switching to dev mode takes a restart".into());
            }
            (Identity::Access(_), Some(_), _) => {
                return Err("ZTGATE_TEAM_DOMAIN: is now set; leaving dev mode takes a restart".into());
            }
        };
        let CredentialSettings { api_keys, hmac_keys, webhook, trust_cert_headers } = credentials;
        let api_keys = match api_keys {
            Some(keys) => Arc::new(keys),
            // Dev mode's random key was printed at start: it stays valid.
            None if self.dev.is_some() => running.api_keys.clone(),
            None => {
                tracing::warn!(target: LOG_TARGET, "no API keys are configured: API-key routes refuse every request");
                Arc::new(ApiKeys::new())
            }
        };
        // A ring made up at start (none configured) stays, so the links it signed stay valid.
        let ring = hmac_keys.unwrap_or_else(|| running.ring.clone());
        let credentials = Credentials { api_keys, ring, webhook, trust_cert_headers };
        let dev = self.dev.is_some();
        let (table, keys, api_keys, ring) =
            assemble(sources.routes(), access.clone(), credentials, dev, &self.store, &self.shared)?;
        let routes = table.rules().count();
        let mut needs_restart = Vec::new();
        for (changed, what) in [
            (now.listen != self.fixed.listen, "listen"),
            (now.db != self.fixed.db, "db"),
            (now.limits != self.fixed.limits, "connection limits"),
            (now.max_body_reads != self.fixed.max_body_reads, "max_body_reads"),
            (now.sockets != self.fixed.sockets, "websocket limits"),
            (now.auth_failures != self.fixed.auth_failures, "auth_failures"),
        ] {
            if changed {
                needs_restart.push(what);
            }
        }
        // Everything checked: swap it all in.
        self.policies.replace(table);
        self.live.set(keys);
        if !kept_key_cache {
            warm(access);
        }
        *running = Running { verifier, api_keys, ring };
        Ok(Reloaded { routes, kept_key_cache, needs_restart })
    }
}

/// The route table and the handlers' keys, from one configuration.
fn assemble(
    routes: &[RouteSpec],
    access: Arc<AccessJwt>,
    credentials: Credentials,
    dev: bool,
    store: &Store,
    shared: &SharedState,
) -> Result<(RoutePolicies, LiveKeys, Arc<ApiKeys>, Arc<KeyRingSource>), String> {
    // The replay guard: Redis for a fleet, else the same SQLite file (a replay is refused
    // across restarts).
    let guard = shared.replay.clone().unwrap_or_else(|| store.replay_guard());
    let webhooks = credentials.webhook.map(|verifier| {
        let verifier = verifier.with_replay_guard(guard);
        if shared.when_unavailable.accept_unchecked_replays {
            verifier.accept_unchecked_while_replay_store_unavailable()
        } else {
            verifier
        }
    });
    let (api_keys, ring) = (credentials.api_keys, credentials.ring);
    let table = route_policies(
        access,
        api_keys.clone(),
        ring.clone(),
        dev,
        credentials.trust_cert_headers,
        routes,
        shared,
    )
    .map_err(|e| format!("ZTGATE_CONFIG: {e}"))?;
    Ok((table, LiveKeys { ring: ring.clone(), webhooks }, api_keys, ring))
}

fn fixed(settings: &Settings) -> Fixed {
    Fixed {
        listen: settings.listen,
        db: settings.db.clone(),
        limits: settings.limits,
        max_body_reads: settings.max_body_reads,
        sockets: settings.sockets,
        auth_failures: settings.auth_failures,
    }
}

/// Fetches a new verifier's keys in the background, as at start.
pub(crate) fn warm(access: Arc<AccessJwt>) {
    tokio::spawn(async move {
        match access.verifier().keys().refresh().await {
            Ok(n) => tracing::info!(layer = "identity", outcome = "jwks_warm", keys = n),
            Err(e) => tracing::warn!(layer = "identity", outcome = "jwks_warm_failed", error = ?e),
        }
    });
}
