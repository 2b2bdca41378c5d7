//! jsonwebtoken against jwt-simple (pure Rust): the same token, key and rules must give the same
//! accept/reject and, on accept, the same claims. Any disagreement panics with both results.
//!
//! Rules given to both: RS256 only, one RSA key, `iss` = TEAM, `aud` contains AUD, `exp` and
//! `nbf` against the same second with no leeway. jsonwebtoken reads the system clock, so the
//! target reads it before and after and skips the comparison if the second changed; jwt-simple
//! gets that second as its `artificial_time`. Sign-mode inputs write times relative to now
//! (`$+N`), so seeds never expire. Where the libraries' own rules differ by design, the harness
//! applies the stricter rule to both (documented in docs/hardening.md):
//! - `exp` is required (jsonwebtoken: `required_spec_claims`; jwt-simple does not require it);
//! - `iat`, if present, must be a number not in the future (jwt-simple checks it; jsonwebtoken
//!   ignores `iat`).
//!
//! Tokens outside the common domain are still run through both (no panic) but not compared:
//! duplicate JSON members, a `typ` other than `JWT`/`*+JWT`, header members that the two type
//! differently (`jwk`, `crit`, `enc`, `zip`, `url`, `nonce`, `salt`), an array `iss`, time claims
//! that are not integers below 2^32 (floats are rounded by one and truncated by the other;
//! jwt-simple saturates at 2^32 s), `null` time claims, non-string `sub`/`jti`/`nonce`.
#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::algorithms::{RS256PublicKey, RSAPublicKeyLike};
use jwt_simple::claims::Audiences;
use jwt_simple::common::VerificationOptions;
use jwt_simple::reexports::coarsetime;
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};
use ztgate_fuzz::*;

type Claims = Map<String, Value>;

struct Fixture {
    jsonwebtoken: jsonwebtoken::DecodingKey,
    jwt_simple: RS256PublicKey,
    n: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let jwk = keys().k1.public_jwk();
        let (n, e) = (jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap());
        let n_bytes = URL_SAFE_NO_PAD.decode(n).unwrap();
        let e_bytes = URL_SAFE_NO_PAD.decode(e).unwrap();
        Fixture {
            jsonwebtoken: jsonwebtoken::DecodingKey::from_rsa_components(n, e).unwrap(),
            jwt_simple: RS256PublicKey::from_components(&n_bytes, &e_bytes).unwrap(),
            n: n_bytes,
        }
    })
}

fn unix_now() -> u64 {
    ztgate::clock::unix_now()
}

fuzz_target!(init: ztgate_fuzz::seeds::write_if_asked("differential_jwt"), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        compare(&String::from_utf8_lossy(rest));
        return;
    }
    let input = sign_input(rest, unix_now());
    let token = keys().k1.sign_raw(&input.header, &input.payload);
    compare(&token);
    if let Some(mutated) = mutate(&token, input.mutation, &fixture().n) {
        compare(&mutated);
    }
});

/// What one library concluded: rejected (with its reason, which is not compared), or the claims
/// it accepted.
enum Verdict {
    Rejected(String),
    Accepted(Normalized),
}

impl PartialEq for Verdict {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Rejected(_), Self::Rejected(_)) => true,
            (Self::Accepted(a), Self::Accepted(b)) => a == b,
            _ => false,
        }
    }
}

#[derive(Debug, PartialEq)]
struct Normalized {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<BTreeSet<String>>,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    jti: Option<String>,
    nonce: Option<String>,
    custom: BTreeMap<String, Value>,
}

impl fmt::Debug for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(why) => write!(f, "rejected: {why}"),
            Self::Accepted(claims) => write!(f, "accepted: {claims:?}"),
        }
    }
}

fn compare(token: &str) {
    let now = unix_now();
    let a = with_jsonwebtoken(token, now);
    if unix_now() != now {
        return; // the second changed while jsonwebtoken read the clock
    }
    let b = with_jwt_simple(token, now);
    if !in_common_domain(token) {
        return;
    }
    if a != b {
        panic!(
            "jsonwebtoken and jwt-simple disagree on {token:?} at {now}\n  jsonwebtoken: {a:?}\n  jwt-simple:   {b:?}"
        );
    }
}

const REGISTERED: [&str; 8] = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "nonce"];

fn with_jsonwebtoken(token: &str, now: u64) -> Verdict {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.leeway = 0;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_issuer(&[TEAM]);
    validation.set_audience(&[AUD]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let claims = match jsonwebtoken::decode::<Claims>(token, &fixture().jsonwebtoken, &validation) {
        Ok(data) => data.claims,
        Err(e) => return Verdict::Rejected(format!("{e:?}")),
    };
    // Harness rule: iat, if present, is a number not in the future.
    if let Some(iat) = claims.get("iat")
        && iat.as_u64().is_none_or(|iat| iat > now)
    {
        return Verdict::Rejected(format!("harness: iat {iat}"));
    }
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let aud = match claims.get("aud") {
        Some(Value::String(a)) => Some(BTreeSet::from([a.clone()])),
        Some(Value::Array(list)) => Some(list.iter().filter_map(|a| a.as_str().map(str::to_owned)).collect()),
        _ => None,
    };
    Verdict::Accepted(Normalized {
        iss: text("iss"),
        sub: text("sub"),
        aud,
        exp: claims.get("exp").and_then(Value::as_u64),
        nbf: claims.get("nbf").and_then(Value::as_u64),
        iat: claims.get("iat").and_then(Value::as_u64),
        jti: text("jti"),
        nonce: text("nonce"),
        custom: claims.into_iter().filter(|(k, _)| !REGISTERED.contains(&k.as_str())).collect(),
    })
}

fn with_jwt_simple(token: &str, now: u64) -> Verdict {
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([TEAM.to_owned()])),
        allowed_audiences: Some(HashSet::from([AUD.to_owned()])),
        time_tolerance: Some(coarsetime::Duration::from_secs(0)),
        artificial_time: Some(coarsetime::UnixTimeStamp::from_secs(now)),
        max_token_length: None,
        ..VerificationOptions::default()
    };
    let claims = match fixture().jwt_simple.verify_token::<Claims>(token, Some(options)) {
        Ok(claims) => claims,
        Err(e) => return Verdict::Rejected(e.to_string()),
    };
    // Harness rule: exp is required.
    if claims.expires_at.is_none() {
        return Verdict::Rejected("harness: no exp".into());
    }
    let secs = |t: Option<coarsetime::UnixTimeStamp>| t.map(|t| t.as_secs());
    Verdict::Accepted(Normalized {
        iss: claims.issuer,
        sub: claims.subject,
        aud: claims.audiences.map(|a| match a {
            Audiences::AsString(a) => BTreeSet::from([a]),
            Audiences::AsSet(set) => set.into_iter().collect(),
        }),
        exp: secs(claims.expires_at),
        nbf: secs(claims.invalid_before),
        iat: secs(claims.issued_at),
        jti: claims.jwt_id,
        nonce: claims.nonce,
        custom: claims.custom.into_iter().collect(),
    })
}

/// Whether the token is inside the domain where both libraries promise the same thing.
fn in_common_domain(token: &str) -> bool {
    let segments: Vec<&str> = token.split('.').collect();
    let [header, payload, _] = segments.as_slice() else { return true };
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).ok();
    let (Some(header), Some(payload)) = (decode(header), decode(payload)) else { return true };
    if segments[0].len() > 8192 {
        return false; // jwt-simple's header size limit
    }
    let (parsed_header, parsed_claims) = (object(&header), object(&payload));
    let duplicates = |bytes: &[u8], parsed: &Option<Map<String, Value>>| {
        parsed.is_none() && serde_json::from_slice::<Map<String, Value>>(bytes).is_ok()
    };
    if duplicates(&header, &parsed_header) || duplicates(&payload, &parsed_claims) {
        return false;
    }
    // Not JSON objects: both must refuse, which is compared.
    let (Some(header), Some(claims)) = (parsed_header, parsed_claims) else { return true };
    if ["jwk", "crit", "enc", "zip", "url", "nonce", "salt"].iter().any(|m| header.contains_key(*m)) {
        return false;
    }
    if let Some(typ) = header.get("typ").and_then(Value::as_str) {
        let typ = typ.to_uppercase();
        if typ != "JWT" && !typ.ends_with("+JWT") {
            return false;
        }
    }
    if claims.get("iss").is_some_and(Value::is_array) {
        return false;
    }
    let time_ok = |name: &str| claims.get(name).is_none_or(|v| v.as_u64().is_some_and(|t| t < 1 << 32));
    let text_ok = |name: &str| claims.get(name).is_none_or(|v| v.is_string() || v.is_null());
    ["exp", "nbf", "iat"].iter().all(|n| time_ok(n)) && ["sub", "jti", "nonce"].iter().all(|n| text_ok(n))
}

/// A JSON object with no duplicate top-level members.
fn object(bytes: &[u8]) -> Option<Map<String, Value>> {
    struct NoDuplicates;
    impl<'de> Visitor<'de> for NoDuplicates {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key) {
                    return Err(serde::de::Error::custom("duplicate member"));
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.deserialize_map(NoDuplicates).ok()?;
    de.end().ok()?;
    serde_json::from_slice(bytes).ok()
}
