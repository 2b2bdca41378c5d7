//! `ztgate jwks`: each key of a JWKS with what ztgate makes of it, through the middleware's own
//! fetcher (limits, response rules) and key filter.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use ztgate::identity::{FetchedJwks, KeyFetcher};
use ztgate::native::HttpFetcher;

use crate::{Failure, Report, input};

pub(crate) fn run(source: &str) -> Result<Report, Failure> {
    let fetched = if source.starts_with("http://") || source.starts_with("https://") {
        let fetcher = Arc::new(HttpFetcher::new(source)?);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(fetcher.fetch()).map_err(|e| Failure(format!("{source}: {e}")))?
    } else {
        let body = input::file(source, input::MAX_DOCUMENT_BYTES)?;
        FetchedJwks { body, max_age: None, from_shared_cache: false }
    };
    review(&fetched, source)
}

fn review(fetched: &FetchedJwks, source: &str) -> Result<Report, Failure> {
    let doc: Value =
        serde_json::from_slice(&fetched.body).map_err(|e| Failure(format!("{source}: not JSON: {e}")))?;
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Err(Failure(format!("{source}: no \"keys\" array")));
    };
    let text_of = |key: &Value, field: &str| key.get(field).and_then(Value::as_str).map(str::to_owned);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for key in keys {
        if let Some(kid) = text_of(key, "kid") {
            *seen.entry(kid).or_default() += 1;
        }
    }
    let mut rows = Vec::new();
    let mut text = String::new();
    for key in keys {
        let kid = text_of(key, "kid");
        let verdict = match ztgate::__private::review_key(key.clone()) {
            Err(why) => Err(why),
            // The middleware drops a kid that appears twice: which copy is meant is unknowable.
            Ok(_) if kid.as_ref().is_some_and(|k| seen[k] > 1) => Err("kid appears more than once"),
            Ok(_) => Ok(()),
        };
        let bits = text_of(key, "n").and_then(|n| URL_SAFE_NO_PAD.decode(n).ok()).map(|n| modulus_bits(&n));
        let shown = |v: Option<String>| v.map(|s| sanitize(&s)).unwrap_or_else(|| "-".into());
        text.push_str(&format!(
            "{}  kid={} kty={} bits={} use={} alg={}  {}\n",
            if verdict.is_ok() { "accepted" } else { "refused " },
            shown(kid.clone()),
            shown(text_of(key, "kty")),
            bits.map_or_else(|| "-".into(), |b| b.to_string()),
            shown(text_of(key, "use")),
            shown(text_of(key, "alg")),
            verdict.err().unwrap_or(""),
        ));
        rows.push(json!({
            "kid": kid,
            "kty": text_of(key, "kty"),
            "bits": bits,
            "use": text_of(key, "use"),
            "alg": text_of(key, "alg"),
            "accepted": verdict.is_ok(),
            "reason": verdict.err(),
        }));
    }
    let accepted = rows.iter().filter(|r| r["accepted"] == true).count();
    let max_age = fetched.max_age.map(|d| d.as_secs());
    text.push_str(&format!("{accepted} of {} keys accepted\n", rows.len()));
    text.push_str(&match max_age {
        Some(secs) => format!("Cache-Control max-age: {secs} s (ztgate keeps keys 1 min to 1 h)\n"),
        None => "Cache-Control max-age: none (ztgate keeps keys 10 min)\n".to_owned(),
    });
    let json = json!({"keys": rows, "accepted": accepted, "max_age_secs": max_age});
    // No usable key means the middleware would refuse every token: a failure for scripts.
    Ok(Report { text, json, ok: accepted > 0 })
}

fn modulus_bits(n: &[u8]) -> usize {
    let n = &n[n.iter().position(|b| *b != 0).unwrap_or(n.len())..];
    n.first().map_or(0, |top| (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize))
}

/// A value from the document for a terminal: control characters escaped, at most 64 chars.
fn sanitize(s: &str) -> String {
    s.chars().take(64).flat_map(char::escape_default).collect()
}
