//! `ztgate verify`: the middleware's own verifier (same checks, same fetcher limits, same key
//! filter) against the live JWKS.

use std::sync::Arc;

use serde_json::json;

use ztgate::clock::SystemClock;
use ztgate::identity::{AccessVerifier, JwksCache, JwksConfig, KeyFetcher, TokenCacheConfig, TokenError};
use ztgate::native::HttpFetcher;

use crate::{AppArgs, Failure, Report, TokenArg, input, inspect};

pub(crate) fn run(app: &AppArgs, certs_url: Option<&str>, token: &TokenArg) -> Result<Report, Failure> {
    let token = input::token(token)?;
    let (config, file_url) = inspect::app_config(app)?;
    let config = config.ok_or_else(|| Failure("verify needs --team and --aud, or --config".into()))?;
    let url = certs_url.map(str::to_owned).or(file_url).unwrap_or_else(|| config.default_certs_url());
    let fetcher = HttpFetcher::new(&url)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let fetcher = Arc::new(fetcher);
    let outcome = runtime.block_on(async {
        let clock = Arc::new(SystemClock);
        let keys = JwksCache::new(fetcher.clone(), clock.clone(), JwksConfig::default());
        let verifier: AccessVerifier =
            AccessVerifier::new(config, keys, clock).with_token_cache(TokenCacheConfig::disabled());
        match verifier.verify(&token).await {
            // The cache keeps the cause to itself; one more fetch, on failure only, names it.
            Err(TokenError::KeysUnavailable { .. }) => Err(match fetcher.fetch().await {
                Err(e) => e.to_string(),
                Ok(_) => "the JWKS answered but gave no usable key".to_owned(),
            }),
            other => Ok(other),
        }
    });
    let outcome = outcome.map_err(|why| Failure(format!("no signing keys from {url}: {why}")))?;
    match outcome {
        Ok(principal) => {
            let id = principal.id();
            Ok(Report {
                text: format!("valid: {id}\n"),
                json: json!({"valid": true, "principal": id}),
                ok: true,
            })
        }
        Err(e) => {
            let code = ztgate::Rejection::from(e.clone()).code();
            Ok(Report {
                text: format!("refused ({code}): {e}\n"),
                json: json!({"valid": false, "code": code, "reason": e.to_string()}),
                ok: false,
            })
        }
    }
}
