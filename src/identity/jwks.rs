//! The JWKS cache: Cloudflare Access signing keys, fetched rarely and trusted carefully.
//!
//! Semantics (all times read from the injected [`Clock`]):
//! - **Keys by `kid`**, exact match. Only RSA signature keys of 2048–8192 bits with `use`
//!   absent or `sig`, `alg` absent or `RS256` and a sane public exponent are kept; a `kid`
//!   listed twice is dropped whole rather than guessed at. Cloudflare's extra
//!   `public_cert`/`public_certs` members are ignored.
//! - **One fetch in flight** whatever the concurrency: concurrent misses coalesce on one
//!   fetch through the single-flight port the runtime supplies (moka's `try_get_with` on
//!   native targets, a polling single-flight in Workers, where moka cannot run), and each
//!   cache generation is fetched at most once.
//! - **Refresh by age, without waiting**: keys are fresh for `Cache-Control: max-age` clamped
//!   to [`JwksConfig::min_max_age`, `JwksConfig::max_max_age`] (default 10 min without one).
//!   Past that, requests keep verifying with the cached keys and one refresh runs in the
//!   background (stale-while-revalidate; natively on the current tokio runtime). Where nothing
//!   can run in the background (Workers, or no tokio runtime), the first request that finds
//!   the keys stale refreshes them and the others keep using the stale ones. Only a cold cache
//!   or an unknown `kid` waits for a fetch.
//! - **A read path without locks**: the key set is read with one atomic load
//!   (`arc_swap::ArcSwapOption`); the lock that orders fetches is taken only when a fetch may
//!   be due. A refresh that brings back a key unchanged keeps the same key object, so
//!   verified-token cache entries (which remember their key) survive it.
//! - **Unknown `kid`** (a key rotation, or an attacker): at most one refetch per
//!   [`JwksConfig::refetch_cooldown`]. Failed fetches are retried no sooner either.
//! - **Stale on error**: keys outlive a failed refresh for [`JwksConfig::grace`]; after that,
//!   or with nothing ever fetched, lookups fail with [`KeyError::Unavailable`] (a 503).
//! - **Bounded fetches**: every fetcher (reqwest natively, the Workers fetch API at the edge)
//!   applies the same configuration rules (`check_fetch_config`) and the same response rules
//!   (`check_response`, `append_capped`): timeout, size cap from `Content-Length` and while
//!   streaming, no redirects, 200 + JSON only.
//!
//! The single-flight is a port (`SingleFlight`): moka's natively, a polling one in Workers;
//! [`JwksCache::new`] takes the runtime's.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use arc_swap::ArcSwapOption;

use super::ports::{Background, SingleFlight};
use super::rs256::Rs256Key;
use crate::BoxFuture;
use crate::clock::Clock;
use crate::error::ConfigError;

/// Default timeout for one JWKS fetch, connect and body included.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default cap on a JWKS response body.
pub const DEFAULT_MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Longest text of a fetch error kept (it can quote a runtime's message).
const MAX_ERROR_CHARS: usize = 200;

/// Where the JWKS comes from: HTTP on native (`ztgate::native::HttpFetcher`), the Workers
/// fetch API at the edge (`ztgate::workers::WorkersFetcher`), or a fixed document in tests,
/// fuzzing and deployments that pin their keys.
pub trait KeyFetcher: Send + Sync + fmt::Debug + 'static {
    /// Fetches the JWKS document once. Implementations bound time and size themselves.
    fn fetch(&self) -> BoxFuture<'_, Result<FetchedJwks, FetchError>>;
}

/// A fetched JWKS document.
#[derive(Clone, Debug)]
pub struct FetchedJwks {
    /// The response body (JSON).
    pub body: Vec<u8>,
    /// The response's `Cache-Control: max-age`, if it had one.
    pub max_age: Option<Duration>,
    /// The document came from a cache shared between instances (Workers' Cache API), not from
    /// the origin just now: an unknown `kid` in it may be a key published since, so it still
    /// earns one refetch from the origin instead of being refused as "just fetched".
    pub from_shared_cache: bool,
}

/// A fetcher that always returns the same document: for tests, benchmarks, fuzzing, and
/// deployments that pin their keys in configuration.
#[derive(Clone)]
pub struct StaticFetcher {
    body: Arc<[u8]>,
}

impl StaticFetcher {
    /// Serves `jwks_json` on every fetch.
    pub fn new(jwks_json: impl Into<Vec<u8>>) -> Self {
        Self { body: jwks_json.into().into() }
    }
}

impl fmt::Debug for StaticFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticFetcher").field("bytes", &self.body.len()).finish()
    }
}

impl KeyFetcher for StaticFetcher {
    fn fetch(&self) -> BoxFuture<'_, Result<FetchedJwks, FetchError>> {
        let body = self.body.to_vec();
        Box::pin(async move { Ok(FetchedJwks { body, max_age: None, from_shared_cache: false }) })
    }
}

/// Why a JWKS fetch failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchError {
    /// Could not connect, or the connection broke.
    Network(String),
    /// No complete response within the timeout.
    Timeout,
    /// A status other than 200 (redirects are not followed).
    Status(u16),
    /// A `Content-Type` other than JSON.
    ContentType(String),
    /// The body exceeded the size cap.
    TooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// The body was not a JWKS document.
    Malformed(String),
    /// The document held no key that passes the filter.
    NoUsableKeys,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Network(e) => write!(f, "JWKS fetch failed: {e}"),
            Self::Timeout => f.write_str("JWKS fetch timed out"),
            Self::Status(s) => write!(f, "JWKS endpoint answered HTTP {s}"),
            Self::ContentType(t) => write!(f, "JWKS endpoint answered Content-Type {t:?}, not JSON"),
            Self::TooLarge { limit } => write!(f, "JWKS document larger than {limit} bytes"),
            Self::Malformed(e) => write!(f, "JWKS document malformed: {e}"),
            Self::NoUsableKeys => f.write_str("JWKS document has no usable RS256 signing key"),
        }
    }
}

impl std::error::Error for FetchError {}

/// Why a key could not be produced for a token.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The key set is usable but has no key with this `kid` (401).
    UnknownKid,
    /// No usable key set: never fetched successfully, or stale past the grace (503).
    Unavailable {
        /// When a new fetch may be attempted.
        retry_after: Duration,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKid => f.write_str("no signing key with this kid"),
            Self::Unavailable { retry_after } => {
                write!(f, "signing keys unavailable; retry in {}s", retry_after.as_secs())
            }
        }
    }
}

impl std::error::Error for KeyError {}

/// Tuning for the JWKS cache. The defaults suit Cloudflare Access.
#[derive(Clone, Debug)]
pub struct JwksConfig {
    /// Freshness when the response has no `Cache-Control: max-age` (default 10 min).
    pub default_max_age: Duration,
    /// Lower clamp for `max-age` (default 1 min).
    pub min_max_age: Duration,
    /// Upper clamp for `max-age` (default 1 h).
    pub max_max_age: Duration,
    /// Least time between fetches caused by an unknown `kid` or a failure (default 30 s).
    pub refetch_cooldown: Duration,
    /// How long keys stay usable after they went stale while refreshes fail (default 24 h).
    pub grace: Duration,
    /// Most keys kept from one document (default 64).
    pub max_keys: usize,
}

impl Default for JwksConfig {
    fn default() -> Self {
        Self {
            default_max_age: Duration::from_secs(600),
            min_max_age: Duration::from_secs(60),
            max_max_age: Duration::from_secs(3600),
            refetch_cooldown: Duration::from_secs(30),
            grace: Duration::from_secs(24 * 3600),
            max_keys: 64,
        }
    }
}

/// The usable keys of one JWKS document, by `kid`.
#[derive(Clone)]
pub struct KeySet {
    keys: HashMap<String, Arc<Rs256Key>>,
    /// Parsed from a shared cache's copy rather than the origin's answer.
    from_shared_cache: bool,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// Parses a JWKS document and keeps only the keys ztgate will verify RS256 with.
    ///
    /// Keys that fail the filter are skipped (and counted in a `tracing` event); a document
    /// that is not JSON, has no `keys` array, or keeps no key at all is an error.
    pub fn parse(body: &[u8], max_keys: usize) -> Result<Self, FetchError> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(body).map_err(|e| FetchError::Malformed(e.to_string()))?;
        // Duplicates are judged over every acceptable key before the cap applies: a kid seen
        // twice is dropped whole, even if the cap had left one of its copies out.
        let mut accepted: Vec<(String, Rs256Key)> = Vec::new();
        let mut skipped = 0usize;
        for raw in doc.keys {
            match accept_key(raw) {
                Some(pair) => accepted.push(pair),
                None => skipped += 1,
            }
        }
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for (kid, _) in &accepted {
            *counts.entry(kid.as_str()).or_default() += 1;
        }
        let duplicated: Vec<String> =
            counts.iter().filter(|(_, n)| **n > 1).map(|(kid, _)| (*kid).to_owned()).collect();
        let mut keys: HashMap<String, Arc<Rs256Key>> = HashMap::new();
        for (kid, key) in accepted {
            if duplicated.contains(&kid) {
                continue;
            }
            if keys.len() == max_keys {
                skipped += 1;
                continue;
            }
            keys.insert(kid, Arc::new(key));
        }
        if skipped > 0 || !duplicated.is_empty() {
            tracing::warn!(
                layer = "identity",
                skipped,
                duplicated_kids = duplicated.len(),
                "JWKS keys refused by the key filter"
            );
        }
        if keys.is_empty() {
            return Err(FetchError::NoUsableKeys);
        }
        Ok(Self { keys, from_shared_cache: false })
    }

    /// This set, with every key that `previous` holds unchanged under the same `kid` replaced
    /// by `previous`'s own object (so identity comparisons, and engine state such as an
    /// imported WebCrypto key, carry over a refresh).
    fn reusing(mut self, previous: &KeySet) -> Self {
        for (kid, key) in &mut self.keys {
            if let Some(old) = previous.keys.get(kid)
                && old.same_key(key)
            {
                *key = old.clone();
            }
        }
        self
    }

    /// The key for `kid`, if kept.
    pub fn get(&self, kid: &str) -> Option<&Arc<Rs256Key>> {
        self.keys.get(kid)
    }

    /// How many keys were kept.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key was kept (never true for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The JWK members ztgate reads. Everything else (`x5c`, `public_cert`, ...) is ignored.
#[derive(Deserialize)]
struct RawJwk {
    kid: String,
    #[serde(rename = "use", default, deserialize_with = "present")]
    use_: Option<String>,
    #[serde(default, deserialize_with = "present")]
    alg: Option<String>,
    key_ops: Option<Vec<String>>,
    n: String,
    e: String,
}

/// A member that is present must have its type: `"use": null` is refused, not read as absent.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

const MAX_KID_BYTES: usize = 256;

fn accept_key(raw: serde_json::Value) -> Option<(String, Rs256Key)> {
    review_key(raw).ok()
}

/// The key filter, one JWK at a time: the key ztgate would verify with under its `kid`, or
/// why the key is refused (a short, fixed reason: never text from the document).
pub fn review_key(raw: serde_json::Value) -> Result<(String, Rs256Key), &'static str> {
    if raw.get("kty").and_then(serde_json::Value::as_str) != Some("RSA") {
        return Err("kty is not RSA");
    }
    let jwk: RawJwk = serde_json::from_value(raw).map_err(|_| "not an RSA JWK (kid, n, e strings)")?;
    if jwk.kid.is_empty() || jwk.kid.len() > MAX_KID_BYTES {
        return Err("kid is empty or too long");
    }
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err("use is not sig");
    }
    if jwk.alg.as_deref().is_some_and(|a| a != "RS256") {
        return Err("alg is not RS256");
    }
    if jwk.key_ops.as_ref().is_some_and(|ops| !ops.iter().any(|op| op == "verify")) {
        return Err("key_ops does not include verify");
    }
    let n = URL_SAFE_NO_PAD.decode(&jwk.n).map_err(|_| "n is not base64url")?;
    let e = URL_SAFE_NO_PAD.decode(&jwk.e).map_err(|_| "e is not base64url")?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    let n_bits = bit_length(n);
    if !(2048..=8192).contains(&n_bits) {
        return Err("modulus is not 2048 to 8192 bits");
    }
    if n[n.len() - 1] & 1 == 0 {
        return Err("modulus is even");
    }
    // e = 1 makes every "signature" its own message; even or huge exponents are not RSA keys.
    if e.is_empty() || e.len() > 4 || e[e.len() - 1] & 1 == 0 || e == [1] {
        return Err("exponent is not an odd number above 1 of at most 32 bits");
    }
    let key = Rs256Key::from_components(n, e).ok_or("the RSA backend refuses the key")?;
    Ok((jwk.kid, key))
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[first..]
}

fn bit_length(b: &[u8]) -> usize {
    match b.first() {
        None => 0,
        Some(top) => (b.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

/// `localhost`, `127.0.0.0/8` or `::1` (brackets allowed): the only hosts a JWKS may be fetched
/// from over plain `http://`.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The rules every JWKS fetcher applies to its configuration, whatever its HTTP stack: `https://`
/// (plain `http://` only for loopback hosts), a non-zero timeout and size cap.
pub(crate) fn check_fetch_config(
    setting: &'static str,
    url: &str,
    scheme: &str,
    host: Option<&str>,
    timeout: Duration,
    max_bytes: usize,
) -> Result<(), ConfigError> {
    match scheme {
        "https" => {}
        "http" if host.is_some_and(is_loopback_host) => {}
        _ => {
            return Err(ConfigError::new(
                setting,
                format!("{url} must use https:// (plain http:// is only allowed for loopback hosts)"),
            ));
        }
    }
    if timeout.is_zero() || max_bytes == 0 {
        return Err(ConfigError::new(setting, "fetch timeout and size cap must be non-zero"));
    }
    Ok(())
}

/// The response rules every JWKS fetcher applies before reading the body, whatever its HTTP
/// stack: status 200 (redirects are not followed, so a 3xx fails here), a JSON `Content-Type`
/// (`application/json` or any `application/*+json`, e.g. `application/jwk-set+json`), and a
/// declared `Content-Length` within the cap. Returns the `Cache-Control: max-age`.
pub(crate) fn check_response(
    status: u16,
    content_type: Option<&str>,
    content_length: Option<&str>,
    cache_control: Option<&str>,
    max_bytes: usize,
) -> Result<Option<Duration>, FetchError> {
    if status != 200 {
        return Err(FetchError::Status(status));
    }
    let content_type = content_type.unwrap_or("");
    if !is_json(content_type) {
        return Err(FetchError::ContentType(content_type.chars().take(64).collect()));
    }
    let declared = content_length.and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes as u64) {
        return Err(FetchError::TooLarge { limit: max_bytes });
    }
    Ok(cache_control.and_then(parse_max_age))
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json"
        || essence.strip_prefix("application/").is_some_and(|sub| sub.len() > 5 && sub.ends_with("+json"))
}

/// Appends one body chunk, refusing once the body would exceed `max_bytes` (the cap while
/// streaming: a server may send more than it declared, or declare nothing).
pub(crate) fn append_capped(body: &mut Vec<u8>, chunk: &[u8], max_bytes: usize) -> Result<(), FetchError> {
    if body.len().saturating_add(chunk.len()) > max_bytes {
        return Err(FetchError::TooLarge { limit: max_bytes });
    }
    body.extend_from_slice(chunk);
    Ok(())
}

/// A transport failure, with the runtime's message cut to a bound (it is logged).
pub(crate) fn network_error(e: impl fmt::Display) -> FetchError {
    FetchError::Network(e.to_string().chars().take(MAX_ERROR_CHARS).collect())
}

/// Reads `max-age` from a `Cache-Control` value; `no-cache`/`no-store` count as zero (and are
/// then clamped up to the minimum).
pub fn parse_max_age(cache_control: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age") {
            max_age = value.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    max_age
}

/// The last good key set and when it goes stale.
struct Fresh {
    set: Arc<KeySet>,
    /// Unix seconds after which a refresh is due.
    stale_at: u64,
    /// Unix seconds after which the set is no longer used at all.
    dead_at: u64,
}

#[derive(Default)]
struct State {
    /// Completed fetch attempts; each generation is fetched at most once.
    generation: u64,
    /// When the latest fetch failed (cleared by a success): retries wait for the cooldown.
    last_failure: Option<u64>,
    /// When an unknown `kid` last caused a refetch: at most one per cooldown.
    last_kid_refetch: Option<u64>,
}

struct Shared {
    fetcher: Arc<dyn KeyFetcher>,
    clock: Arc<dyn Clock>,
    config: JwksConfig,
    /// The last good key set: read by every request with one atomic load.
    current: ArcSwapOption<Fresh>,
    /// Fetch bookkeeping, locked only when a fetch may be due.
    state: Mutex<State>,
    /// A fetch is running; stale-key readers use what they have instead of waiting.
    refreshing: AtomicBool,
    /// Unix seconds before which no fetch may start after a failure (0: none); the lock-free
    /// copy of `State::last_failure` plus the cooldown.
    retry_at: AtomicU64,
    /// Unix seconds at which a background refresh was started and not yet finished (0: none).
    background_since: AtomicU64,
    /// Coalesces concurrent fetches: key = the generation being replaced.
    flights: Arc<dyn SingleFlight<u64, Flight>>,
    /// Where background refreshes run.
    background: Arc<dyn Background>,
}

/// After this long, a background refresh that never finished (its task was lost) no longer
/// stops another from starting.
const BACKGROUND_CLAIM_SECS: u64 = 60;

/// What a fetch flight shares with its waiters: the new key set, or that it failed.
pub(crate) type Flight = Result<Arc<KeySet>, ()>;

/// A cache of signing keys with single-flight fetching. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct JwksCache {
    shared: Arc<Shared>,
}

impl fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksCache").field("fetcher", &self.shared.fetcher).finish_non_exhaustive()
    }
}

enum Plan {
    /// Use this (fresh, or stale while a refresh runs or backs off) set.
    Use(Arc<KeySet>),
    /// Fetch (or join the fetch of) this generation; fall back to the stale set on failure.
    Fetch {
        generation: u64,
        fallback: Option<Arc<KeySet>>,
    },
    Unavailable(Duration),
}

impl JwksCache {
    /// A cache whose concurrent fetches coalesce through `flights` (the runtime's; the public
    /// constructor, `JwksCache::new`, is in `crate::runtime`, which picks it).
    pub(crate) fn with_runtime(
        fetcher: Arc<dyn KeyFetcher>,
        clock: Arc<dyn Clock>,
        config: JwksConfig,
        flights: Arc<dyn SingleFlight<u64, Flight>>,
        background: Arc<dyn Background>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                fetcher,
                clock,
                config,
                current: ArcSwapOption::empty(),
                state: Mutex::new(State::default()),
                refreshing: AtomicBool::new(false),
                retry_at: AtomicU64::new(0),
                background_since: AtomicU64::new(0),
                flights,
                background,
            }),
        }
    }

    /// The verification key for `kid`, fetching or refreshing the JWKS as the rules allow.
    pub async fn key(&self, kid: &str) -> Result<Arc<Rs256Key>, KeyError> {
        let now = self.shared.clock.now();
        {
            let current = self.shared.current.load();
            if let Some(fresh) = current.as_deref()
                && (now < fresh.stale_at || (now < fresh.dead_at && self.refresh_in_background(now)))
                && let Some(key) = fresh.set.get(kid)
            {
                return Ok(key.clone());
            }
        }
        self.key_slow(kid, now).await
    }

    /// Whether a fetch of the key set is running or a background refresh has been started and
    /// not finished: for health checks and metrics, and for tests that wait for a
    /// stale-while-revalidate refresh to land.
    pub fn is_refreshing(&self) -> bool {
        let shared = &self.shared;
        let since = shared.background_since.load(Ordering::Acquire);
        shared.refreshing.load(Ordering::Acquire)
            || (since != 0 && shared.clock.now() < since.saturating_add(BACKGROUND_CLAIM_SECS))
    }

    /// Whether `key` is, at this moment, the usable key for `kid`: the check a verified-token
    /// cache entry passes before it stands in for a verification. Never fetches, never waits
    /// (a stale set starts its background refresh as [`JwksCache::key`] would); `false` when
    /// the set is past its grace, or stale with no way to refresh in the background (the
    /// caller then verifies anew, which refreshes).
    pub(crate) fn is_current(&self, kid: &str, key: &Arc<Rs256Key>) -> bool {
        let now = self.shared.clock.now();
        let current = self.shared.current.load();
        let Some(fresh) = current.as_deref() else { return false };
        (now < fresh.stale_at || (now < fresh.dead_at && self.refresh_in_background(now)))
            && fresh.set.get(kid).is_some_and(|k| Arc::ptr_eq(k, key))
    }

    /// The set is stale but usable: make sure a refresh runs without this request waiting for
    /// it. `true` when the stale set may be served: a fetch is running, a recent failure
    /// forbids one, or one was started in the background now; `false` when this platform
    /// cannot run it in the background (the caller's slow path fetches inline).
    fn refresh_in_background(&self, now: u64) -> bool {
        let shared = &self.shared;
        if shared.refreshing.load(Ordering::Acquire) || now < shared.retry_at.load(Ordering::Acquire) {
            return true;
        }
        let since = shared.background_since.load(Ordering::Acquire);
        if since != 0 && now < since.saturating_add(BACKGROUND_CLAIM_SECS) {
            return true;
        }
        if shared
            .background_since
            .compare_exchange(since, now.max(1), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Another request claimed it this instant.
            return true;
        }
        let this = self.clone();
        let started = shared.background.spawn(Box::pin(async move {
            let generation = this.lock().generation;
            // The outcome is recorded (and logged) by the fetch itself.
            let _ = this.fetch(generation).await;
            this.shared.background_since.store(0, Ordering::Release);
        }));
        if !started {
            shared.background_since.store(0, Ordering::Release);
        }
        started
    }

    async fn key_slow(&self, kid: &str, now: u64) -> Result<Arc<Rs256Key>, KeyError> {
        let (set, just_fetched) = match self.plan(now) {
            Plan::Use(set) => (set, false),
            Plan::Unavailable(retry_after) => return Err(KeyError::Unavailable { retry_after }),
            Plan::Fetch { generation, fallback } => match (self.fetch(generation).await, fallback) {
                // A shared cache's copy may predate a key published since: not "just fetched".
                (Ok(set), _) => {
                    let from_origin = !set.from_shared_cache;
                    (set, from_origin)
                }
                (Err(_), Some(stale)) => (stale, true),
                (Err(retry_after), None) => return Err(KeyError::Unavailable { retry_after }),
            },
        };
        if let Some(key) = set.get(kid) {
            return Ok(key.clone());
        }
        if just_fetched {
            return Err(KeyError::UnknownKid);
        }
        // An unknown kid on a set we did not just fetch: maybe the keys rotated. One refetch
        // per cooldown however many unknown kids arrive; requests arriving during that refetch
        // join it instead of being refused.
        if let Some(generation) = self.claim_kid_refetch(now)
            && let Ok(set) = self.fetch(generation).await
        {
            return set.get(kid).cloned().ok_or(KeyError::UnknownKid);
        }
        Err(KeyError::UnknownKid)
    }

    /// Fetches now unless a recent failure forbids it, and reports how many keys are usable.
    /// For warming the cache at start-up and for health checks.
    pub async fn refresh(&self) -> Result<usize, KeyError> {
        let now = self.shared.clock.now();
        let generation = {
            let state = self.lock();
            if !self.failure_cooled(&state, now) {
                return match self.shared.current.load().as_deref() {
                    Some(fresh) if now < fresh.dead_at => Ok(fresh.set.len()),
                    _ => Err(KeyError::Unavailable { retry_after: self.retry_after(&state, now) }),
                };
            }
            state.generation
        };
        self.fetch(generation)
            .await
            .map(|set| set.len())
            .map_err(|retry_after| KeyError::Unavailable { retry_after })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn plan(&self, now: u64) -> Plan {
        let state = self.lock();
        let may_fetch = self.failure_cooled(&state, now);
        match self.shared.current.load().as_deref() {
            Some(fresh) if now < fresh.stale_at => Plan::Use(fresh.set.clone()),
            Some(fresh) if now < fresh.dead_at => {
                if may_fetch && !self.shared.refreshing.load(Ordering::Acquire) {
                    Plan::Fetch { generation: state.generation, fallback: Some(fresh.set.clone()) }
                } else {
                    Plan::Use(fresh.set.clone())
                }
            }
            _ if may_fetch => Plan::Fetch { generation: state.generation, fallback: None },
            _ => Plan::Unavailable(self.retry_after(&state, now)),
        }
    }

    /// The generation to refetch for an unknown kid, if this request may cause or join one.
    fn claim_kid_refetch(&self, now: u64) -> Option<u64> {
        let mut state = self.lock();
        if self.shared.refreshing.load(Ordering::Acquire) {
            return Some(state.generation);
        }
        let cooldown = self.shared.config.refetch_cooldown.as_secs();
        let kid_cooled = state.last_kid_refetch.is_none_or(|t| now >= t.saturating_add(cooldown));
        if !kid_cooled || !self.failure_cooled(&state, now) {
            return None;
        }
        state.last_kid_refetch = Some(now);
        Some(state.generation)
    }

    fn failure_cooled(&self, state: &State, now: u64) -> bool {
        let cooldown = self.shared.config.refetch_cooldown.as_secs();
        state.last_failure.is_none_or(|t| now >= t.saturating_add(cooldown))
    }

    fn retry_after(&self, state: &State, now: u64) -> Duration {
        let cooldown = self.shared.config.refetch_cooldown.as_secs();
        let next = state.last_failure.map_or(now, |t| t.saturating_add(cooldown));
        Duration::from_secs(next.saturating_sub(now).max(1))
    }

    /// Fetches the generation after `generation`, joining a fetch already in flight for it.
    /// On failure returns how long until a retry is allowed.
    async fn fetch(&self, generation: u64) -> Result<Arc<KeySet>, Duration> {
        let work = Box::pin(async move { self.fetch_generation(generation).await.map_err(drop) });
        let outcome = self.shared.flights.run(generation, work).await.unwrap_or(Err(()));
        outcome.map_err(|()| {
            let state = self.lock();
            self.retry_after(&state, self.shared.clock.now())
        })
    }

    /// The single fetch of one generation. Runs in one task; concurrent callers wait for it.
    async fn fetch_generation(&self, generation: u64) -> Result<Arc<KeySet>, FetchError> {
        let shared = &self.shared;
        {
            let state = self.lock();
            if state.generation != generation {
                // This generation completed between the caller's plan and now.
                return match self.shared.current.load().as_deref() {
                    Some(fresh) => Ok(fresh.set.clone()),
                    None => Err(FetchError::NoUsableKeys),
                };
            }
        }
        shared.refreshing.store(true, Ordering::Release);
        let _reset = ResetOnDrop(&shared.refreshing);
        let result = shared.fetcher.fetch().await.and_then(|doc| {
            let mut set = KeySet::parse(&doc.body, shared.config.max_keys)?;
            set.from_shared_cache = doc.from_shared_cache;
            Ok((set, doc.max_age))
        });
        let now = shared.clock.now();
        let mut state = self.lock();
        state.generation = generation + 1;
        match result {
            Ok((set, max_age)) => {
                let set = match shared.current.load().as_deref() {
                    Some(previous) => set.reusing(&previous.set),
                    None => set,
                };
                let set = Arc::new(set);
                let cfg = &shared.config;
                let age = max_age
                    .unwrap_or(cfg.default_max_age)
                    .clamp(cfg.min_max_age, cfg.max_max_age.max(cfg.min_max_age))
                    .as_secs();
                let stale_at = now.saturating_add(age);
                shared.current.store(Some(Arc::new(Fresh {
                    set: set.clone(),
                    stale_at,
                    dead_at: stale_at.saturating_add(cfg.grace.as_secs()),
                })));
                state.last_failure = None;
                shared.retry_at.store(0, Ordering::Release);
                crate::metrics::jwks_fetched(Ok((set.len(), now)));
                tracing::info!(
                    layer = "identity",
                    outcome = "jwks_refreshed",
                    keys = set.len(),
                    max_age_secs = age
                );
                Ok(set)
            }
            Err(e) => {
                state.last_failure = Some(now);
                let retry_at = now.saturating_add(shared.config.refetch_cooldown.as_secs()).max(1);
                shared.retry_at.store(retry_at, Ordering::Release);
                crate::metrics::jwks_fetched(Err(()));
                tracing::warn!(layer = "identity", outcome = "jwks_fetch_failed", error = ?e.to_string());
                Err(e)
            }
        }
    }
}

struct ResetOnDrop<'a>(&'a AtomicBool);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_parsing() {
        assert_eq!(parse_max_age("public, max-age=300"), Some(Duration::from_secs(300)));
        assert_eq!(parse_max_age("MAX-AGE=\"42\""), Some(Duration::from_secs(42)));
        assert_eq!(parse_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(parse_max_age("public"), None);
        assert_eq!(parse_max_age("max-age=-5"), None);
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/jwk-set+json"));
        assert!(!is_json("application/+json"));
        assert!(!is_json("text/json+json"));
        assert!(!is_json("text/html"));
        assert!(!is_json(""));
    }

    #[test]
    fn response_rules_refuse_redirects_html_and_declared_oversize() {
        let ok = |ct, cl| check_response(200, Some(ct), cl, Some("max-age=120"), 10);
        assert_eq!(ok("application/json", Some("10")), Ok(Some(Duration::from_secs(120))));
        assert_eq!(
            check_response(302, Some("application/json"), None, None, 10),
            Err(FetchError::Status(302))
        );
        assert!(matches!(ok("text/html", None), Err(FetchError::ContentType(_))));
        assert_eq!(ok("application/json", Some("11")), Err(FetchError::TooLarge { limit: 10 }));
        let mut body = Vec::new();
        assert_eq!(append_capped(&mut body, b"12345", 8), Ok(()));
        assert_eq!(append_capped(&mut body, b"6789", 8), Err(FetchError::TooLarge { limit: 8 }));
        assert_eq!(body, b"12345");
        match network_error("x".repeat(1000)) {
            FetchError::Network(text) => assert_eq!(text.len(), MAX_ERROR_CHARS),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bit_length_counts_significant_bits() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(bit_length(&[0x80, 0]), 16);
        assert_eq!(bit_length(strip_leading_zeros(&[0, 0, 0x7f])), 7);
    }

    #[test]
    fn null_use_or_alg_is_a_wrong_type_not_an_absence() {
        let mut n = vec![0xc5u8; 256];
        n[255] |= 1;
        let n = URL_SAFE_NO_PAD.encode(&n);
        let doc =
            |extra: &str| format!(r#"{{"keys":[{{"kty":"RSA","kid":"a","n":"{n}","e":"AQAB"{extra}}}]}}"#);
        assert_eq!(KeySet::parse(doc("").as_bytes(), 8).unwrap().len(), 1);
        for extra in [r#","use":null"#, r#","alg":null"#, r#","use":1"#] {
            assert!(
                matches!(KeySet::parse(doc(extra).as_bytes(), 8), Err(FetchError::NoUsableKeys)),
                "{extra}"
            );
        }
    }

    #[test]
    fn a_duplicated_kid_is_dropped_even_when_the_cap_skipped_one_copy() {
        let mut n = vec![0xc5u8; 256];
        n[255] |= 1;
        let n = URL_SAFE_NO_PAD.encode(&n);
        let jwk = |kid: &str| format!(r#"{{"kty":"RSA","kid":"{kid}","n":"{n}","e":"AQAB"}}"#);
        let doc = format!(r#"{{"keys":[{},{},{},{}]}}"#, jwk("a"), jwk("b"), jwk("a"), jwk("b"));
        assert!(matches!(KeySet::parse(doc.as_bytes(), 1), Err(FetchError::NoUsableKeys)));
        let doc = format!(r#"{{"keys":[{},{},{}]}}"#, jwk("a"), jwk("b"), jwk("c"));
        assert_eq!(KeySet::parse(doc.as_bytes(), 2).unwrap().len(), 2);
    }

    #[test]
    fn documents_without_usable_keys_are_errors() {
        assert!(matches!(KeySet::parse(b"[]", 8), Err(FetchError::Malformed(_))));
        assert!(matches!(KeySet::parse(b"{\"keys\":[]}", 8), Err(FetchError::NoUsableKeys)));
        assert!(matches!(KeySet::parse(b"{\"keys\":[{\"kty\":\"EC\"}]}", 8), Err(FetchError::NoUsableKeys)));
    }
}
