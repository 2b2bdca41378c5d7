//! The native JWKS fetcher: reqwest, bounded in time and size, no redirects.

use std::fmt;
use std::time::Duration;

use super::jwks::{BoxFuture, FetchError, FetchedJwks, KeyFetcher, check_fetch_config, parse_max_age};
use crate::ConfigError;

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

/// Default timeout for one JWKS fetch.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default cap on a JWKS response body.
pub const DEFAULT_MAX_JWKS_BYTES: usize = 1024 * 1024;

impl HttpFetcher {
    /// A fetcher for `url` with the default timeout and size cap.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        Self::with_limits(url, DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_JWKS_BYTES)
    }

    /// A fetcher with explicit limits.
    pub fn with_limits(url: &str, timeout: Duration, max_bytes: usize) -> Result<Self, ConfigError> {
        let url = reqwest::Url::parse(url)
            .map_err(|e| ConfigError::new("certs_url", format!("{url:?} is not a URL: {e}")))?;
        check_fetch_config(url.as_str(), url.scheme(), url.host_str(), timeout, max_bytes)?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| ConfigError::new("certs_url", format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { client, url, max_bytes })
    }

    /// The URL fetched.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    async fn fetch_once(&self) -> Result<FetchedJwks, FetchError> {
        let mut response = self
            .client
            .get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(classify)?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status(status));
        }
        let headers = response.headers();
        let content_type =
            headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        if !is_json(&content_type) {
            return Err(FetchError::ContentType(content_type.chars().take(64).collect()));
        }
        let max_age =
            headers.get(http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(parse_max_age);
        if response.content_length().is_some_and(|n| n > self.max_bytes as u64) {
            return Err(FetchError::TooLarge { limit: self.max_bytes });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(FetchError::TooLarge { limit: self.max_bytes });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(FetchedJwks { body, max_age })
    }
}

impl KeyFetcher for HttpFetcher {
    fn fetch(&self) -> BoxFuture<'_, Result<FetchedJwks, FetchError>> {
        Box::pin(self.fetch_once())
    }
}

fn classify(e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        FetchError::Timeout
    } else {
        // reqwest's Display never includes bodies or auth; the URL is public.
        FetchError::Network(e.to_string())
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.eq_ignore_ascii_case("application/jwk-set+json")
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/jwk-set+json"));
        assert!(!is_json("text/html"));
        assert!(!is_json(""));
    }
}
