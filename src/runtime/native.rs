//! The native runtime: the reqwest JWKS fetcher (bounded in time and size, no redirects),
//! moka's single-flight, the operating system's clock, RS256 by the compiled-in backend.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::BoxFuture;
use crate::error::ConfigError;
use crate::error::TokenError;
use crate::identity::jwks::{append_capped, check_fetch_config, check_response, network_error};
use crate::identity::ports::{Background, PureRs256, Rs256Engine, SingleFlight, VerifiedTokens};
use crate::identity::token_cache::{CacheValue, TokenCacheConfig, TokenDigest};
use crate::identity::turnstile::{self, SiteverifyClient, SiteverifyRequest};
use crate::identity::{
    DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_JWKS_BYTES, FetchError, FetchedJwks, IdentityConfig, IdentityFetcher,
    KeyFetcher,
};

/// A point in monotonic time (see `runtime::Stopwatch`).
pub(super) type Mark = std::time::Instant;

pub(super) fn mark() -> Mark {
    std::time::Instant::now()
}

pub(super) fn seconds_since(mark: Mark) -> f64 {
    mark.elapsed().as_secs_f64()
}

pub(super) fn unix_now() -> u64 {
    // A clock before 1970 is a broken host; 0 makes every token look "not yet valid" rather
    // than valid, which fails closed.
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(super) fn default_fetcher(url: &str) -> Result<Arc<dyn KeyFetcher>, ConfigError> {
    Ok(Arc::new(HttpFetcher::new(url)?))
}

pub(super) fn default_identity_fetcher(url: &str) -> Result<Arc<dyn IdentityFetcher>, ConfigError> {
    Ok(Arc::new(HttpIdentityFetcher::new(url)?))
}

pub(super) fn single_flight<K, V>() -> Arc<dyn SingleFlight<K, V>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Arc::new(MokaFlight(moka::future::Cache::builder().max_capacity(8).build()))
}

pub(super) fn rs256_engine() -> Arc<dyn Rs256Engine> {
    Arc::new(PureRs256)
}

pub(super) fn background() -> Arc<dyn Background> {
    Arc::new(TokioBackground)
}

pub(super) fn token_store<V>(config: &TokenCacheConfig) -> Arc<dyn VerifiedTokens<V>>
where
    V: CacheValue + Clone + Send + Sync + 'static,
{
    Arc::new(moka_tokens(config))
}

fn moka_tokens<V>(config: &TokenCacheConfig) -> MokaTokens<V>
where
    V: CacheValue + Clone + Send + Sync + 'static,
{
    let cache = moka::future::Cache::builder()
        .max_capacity(config.max_bytes())
        .weigher(|_: &TokenDigest, value: &V| value.weight())
        .expire_after(ExpireWithEntry)
        .build();
    MokaTokens(cache)
}

/// Background work on the tokio runtime of the caller, if there is one.
#[derive(Debug)]
struct TokioBackground;

impl Background for TokioBackground {
    fn spawn(&self, work: BoxFuture<'static, ()>) -> bool {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                drop(handle.spawn(work));
                true
            }
            Err(_) => false,
        }
    }
}

/// Each entry lives as long as its value says (its token's validity, capped by the max age).
struct ExpireWithEntry;

impl<V: CacheValue> moka::Expiry<TokenDigest, V> for ExpireWithEntry {
    fn expire_after_create(
        &self,
        _key: &TokenDigest,
        value: &V,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.time_to_live())
    }
}

/// The verified-token store: moka, bounded by weight, with `try_get_with` coalescing misses.
struct MokaTokens<V>(moka::future::Cache<TokenDigest, V>);

impl<V> fmt::Debug for MokaTokens<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MokaTokens").field("entries", &self.0.entry_count()).finish()
    }
}

impl<V> VerifiedTokens<V> for MokaTokens<V>
where
    V: CacheValue + Clone + Send + Sync + 'static,
{
    fn get_or_verify<'a>(
        &'a self,
        key: TokenDigest,
        verify: BoxFuture<'a, Result<V, TokenError>>,
    ) -> BoxFuture<'a, Result<V, TokenError>> {
        Box::pin(async move { self.0.try_get_with(key, verify).await.map_err(|e| (*e).clone()) })
    }

    fn remove<'a>(&'a self, key: &'a TokenDigest) -> BoxFuture<'a, ()> {
        Box::pin(self.0.invalidate(key))
    }

    fn len(&self) -> u64 {
        self.0.entry_count()
    }
}

/// moka's `get_with`: one init future runs per key, the other callers are woken with its value.
struct MokaFlight<K, V>(moka::future::Cache<K, V>);

impl<K, V> fmt::Debug for MokaFlight<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MokaFlight")
    }
}

impl<K, V> SingleFlight<K, V> for MokaFlight<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn run<'a>(&'a self, key: K, work: BoxFuture<'a, V>) -> BoxFuture<'a, Option<V>> {
        Box::pin(async move { Some(self.0.get_with(key, work).await) })
    }
}

/// Fetches a JWKS over HTTP(S) with reqwest.
///
/// - whole-request timeout (default 5 s), connect included;
/// - body size cap enforced while streaming (default 1 MiB), and up front from
///   `Content-Length`;
/// - redirects are not followed (a 3xx is a failed fetch), only `200` with a JSON
///   `Content-Type` is accepted;
/// - `https://` is required, except for loopback hosts (`127.0.0.0/8`, `::1`, `localhost`),
///   which makes local development and tests possible without weakening production.
#[derive(Clone)]
pub struct HttpFetcher {
    client: reqwest::Client,
    url: reqwest::Url,
    max_bytes: usize,
}

impl fmt::Debug for HttpFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpFetcher")
            .field("url", &self.url.as_str())
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl HttpFetcher {
    /// A fetcher for `url` with the default timeout and size cap
    /// ([`DEFAULT_FETCH_TIMEOUT`], [`DEFAULT_MAX_JWKS_BYTES`]).
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        Self::with_limits(url, DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_JWKS_BYTES)
    }

    /// A fetcher with explicit limits.
    pub fn with_limits(url: &str, timeout: Duration, max_bytes: usize) -> Result<Self, ConfigError> {
        let (client, url) = bounded_client("certs_url", url, timeout, max_bytes)?;
        Ok(Self { client, url, max_bytes })
    }

    /// The URL fetched.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    async fn fetch_once(&self) -> Result<FetchedJwks, FetchError> {
        let (body, max_age) = bounded_get(&self.client, &self.url, None, self.max_bytes).await?;
        Ok(FetchedJwks { body, max_age, from_shared_cache: false })
    }
}

/// A client for `url` under the fetch rules (`https://` except on loopback, the timeout for the
/// whole request, no redirects, no proxy); errors name `setting`.
pub(crate) fn bounded_client(
    setting: &'static str,
    url: &str,
    timeout: Duration,
    max_bytes: usize,
) -> Result<(reqwest::Client, reqwest::Url), ConfigError> {
    let url = reqwest::Url::parse(url)
        .map_err(|e| ConfigError::new(setting, format!("{url:?} is not a URL: {e}")))?;
    check_fetch_config(setting, url.as_str(), url.scheme(), url.host_str(), timeout, max_bytes)?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| ConfigError::new(setting, format!("cannot build the HTTP client: {e}")))?;
    Ok((client, url))
}

/// One GET under the fetch rules (JSON, 200, the size cap while streaming; the client holds the
/// timeout and refuses redirects), with `cookie` if given: the body and its `max-age`.
async fn bounded_get(
    client: &reqwest::Client,
    url: &reqwest::Url,
    cookie: Option<&str>,
    max_bytes: usize,
) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
    let mut request = client.get(url.clone()).header(http::header::ACCEPT, "application/json");
    if let Some(cookie) = cookie {
        let value = http::HeaderValue::from_str(cookie)
            .map_err(|_| network_error("the cookie is not a header value"))?;
        request = request.header(http::header::COOKIE, value);
    }
    let mut response = request.send().await.map_err(classify)?;
    let header = |name| response.headers().get(name).and_then(|v: &http::HeaderValue| v.to_str().ok());
    let max_age = check_response(
        response.status().as_u16(),
        header(http::header::CONTENT_TYPE),
        header(http::header::CONTENT_LENGTH),
        header(http::header::CACHE_CONTROL),
        max_bytes,
    )?;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        append_capped(&mut body, &chunk, max_bytes)?;
    }
    Ok((body, max_age))
}

/// Fetches a login's Access identity (`{team}/cdn-cgi/access/get-identity`) with reqwest,
/// sending the application token as the `CF_Authorization` cookie. Bounded like
/// [`HttpFetcher`]: a whole-request timeout (default 5 s), a size cap (default 64 KiB), no
/// redirects, a JSON 200 only, `https://` except on loopback.
#[derive(Clone)]
pub struct HttpIdentityFetcher {
    client: reqwest::Client,
    url: reqwest::Url,
    max_bytes: usize,
}

impl fmt::Debug for HttpIdentityFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpIdentityFetcher")
            .field("url", &self.url.as_str())
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl HttpIdentityFetcher {
    /// A fetcher for `url` with the default timeout and size cap.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        Self::with_limits(url, DEFAULT_FETCH_TIMEOUT, IdentityConfig::MAX_BYTES)
    }

    /// A fetcher with explicit limits.
    pub fn with_limits(url: &str, timeout: Duration, max_bytes: usize) -> Result<Self, ConfigError> {
        let (client, url) = bounded_client("identity_url", url, timeout, max_bytes)?;
        Ok(Self { client, url, max_bytes })
    }
}

impl IdentityFetcher for HttpIdentityFetcher {
    fn fetch<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Vec<u8>, FetchError>> {
        Box::pin(async move {
            let cookie = format!("CF_Authorization={token}");
            bounded_get(&self.client, &self.url, Some(&cookie), self.max_bytes).await.map(|(body, _)| body)
        })
    }
}

impl KeyFetcher for HttpFetcher {
    fn fetch(&self) -> BoxFuture<'_, Result<FetchedJwks, FetchError>> {
        Box::pin(self.fetch_once())
    }
}

pub(crate) fn classify(e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        FetchError::Timeout
    } else {
        // reqwest's Display never includes bodies or auth; the URL is public.
        network_error(e)
    }
}

pub(super) fn siteverify_client(
    url: &str,
    timeout: Duration,
) -> Result<Arc<dyn SiteverifyClient>, ConfigError> {
    Ok(Arc::new(HttpSiteverify::with_limits(url, timeout, turnstile::MAX_ANSWER_BYTES)?))
}

/// Posts Turnstile tokens to siteverify with reqwest, for a
/// [`TurnstileVerifier`](crate::identity::turnstile::TurnstileVerifier). Bounded like
/// [`HttpFetcher`]: a whole-request timeout (default 3 s), a size cap while streaming and from
/// `Content-Length` (default 16 KiB), no redirects, a JSON 200 only, `https://` except on
/// loopback. Errors never contain the posted form.
#[derive(Clone)]
pub struct HttpSiteverify {
    client: reqwest::Client,
    url: reqwest::Url,
    max_bytes: usize,
}

impl fmt::Debug for HttpSiteverify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSiteverify")
            .field("url", &self.url.as_str())
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl HttpSiteverify {
    /// A client for `url` with the default timeout and size cap
    /// ([`turnstile::DEFAULT_TIMEOUT`], [`turnstile::MAX_ANSWER_BYTES`]).
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        Self::with_limits(url, turnstile::DEFAULT_TIMEOUT, turnstile::MAX_ANSWER_BYTES)
    }

    /// A client with explicit limits (both non-zero); errors name setting `siteverify_url`.
    pub fn with_limits(url: &str, timeout: Duration, max_bytes: usize) -> Result<Self, ConfigError> {
        let (client, url) = bounded_client("siteverify_url", url, timeout, max_bytes)?;
        Ok(Self { client, url, max_bytes })
    }

    /// The URL posted to.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }
}

impl SiteverifyClient for HttpSiteverify {
    fn siteverify<'a>(
        &'a self,
        request: &'a SiteverifyRequest,
    ) -> BoxFuture<'a, Result<Vec<u8>, FetchError>> {
        Box::pin(bounded_post_form(&self.client, &self.url, request.body(), self.max_bytes))
    }
}

/// One form POST under the fetch rules (JSON, 200, the size cap while streaming; the client
/// holds the timeout and refuses redirects): the body.
async fn bounded_post_form(
    client: &reqwest::Client,
    url: &reqwest::Url,
    form: &[u8],
    max_bytes: usize,
) -> Result<Vec<u8>, FetchError> {
    let request = client
        .post(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::CONTENT_TYPE, SiteverifyRequest::CONTENT_TYPE)
        .body(form.to_vec());
    let mut response = request.send().await.map_err(classify)?;
    let header = |name| response.headers().get(name).and_then(|v: &http::HeaderValue| v.to_str().ok());
    check_response(
        response.status().as_u16(),
        header(http::header::CONTENT_TYPE),
        header(http::header::CONTENT_LENGTH),
        None,
        max_bytes,
    )?;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        append_capped(&mut body, &chunk, max_bytes)?;
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::identity::ports::VerifiedTokens;
    use crate::identity::token_cache::{CacheValue, TokenCacheConfig, TokenDigest};
    use crate::runtime::native::{HttpFetcher, moka_tokens};

    #[derive(Clone)]
    struct Entry(u32);

    impl CacheValue for Entry {
        fn weight(&self) -> u32 {
            self.0
        }
        fn time_to_live(&self) -> Duration {
            Duration::from_secs(60)
        }
    }

    #[tokio::test]
    async fn the_moka_store_holds_its_entry_and_byte_bounds() {
        let config =
            TokenCacheConfig::default().with_max_entries(100).unwrap().with_max_bytes(1 << 20).unwrap();
        let store = moka_tokens::<Entry>(&config);
        // Small tokens: the weight floor (max_bytes / max_entries) makes the entry bound hold.
        for i in 0..1000u32 {
            let weight = config.weight(100);
            store
                .get_or_verify(TokenDigest::of(&i.to_string()), Box::pin(async move { Ok(Entry(weight)) }))
                .await
                .unwrap();
        }
        store.0.run_pending_tasks().await;
        assert!(store.len() <= 100, "{} entries", store.len());
        assert!(store.0.weighted_size() <= 1 << 20);
        // Large tokens: the byte bound holds whatever their count.
        let store = moka_tokens::<Entry>(&config);
        for i in 0..100u32 {
            let weight = config.weight(64 * 1024);
            store
                .get_or_verify(TokenDigest::of(&i.to_string()), Box::pin(async move { Ok(Entry(weight)) }))
                .await
                .unwrap();
        }
        store.0.run_pending_tasks().await;
        assert!(store.0.weighted_size() <= 1 << 20, "{} bytes", store.0.weighted_size());
        assert!(store.len() <= 16, "{} entries", store.len());
    }

    #[test]
    fn plain_http_only_for_loopback() {
        assert!(HttpFetcher::new("http://127.0.0.1:9/certs").is_ok());
        assert!(HttpFetcher::new("http://[::1]:9/certs").is_ok());
        assert!(HttpFetcher::new("http://localhost/certs").is_ok());
        assert!(HttpFetcher::new("https://acme.cloudflareaccess.com/cdn-cgi/access/certs").is_ok());
        assert!(HttpFetcher::new("http://acme.cloudflareaccess.com/cdn-cgi/access/certs").is_err());
        assert!(HttpFetcher::new("http://127.0.0.1.evil.example/certs").is_err());
        assert!(HttpFetcher::new("file:///etc/passwd").is_err());
        assert!(HttpFetcher::new("not a url").is_err());
    }
}
