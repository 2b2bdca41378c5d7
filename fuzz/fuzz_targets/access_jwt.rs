//! The Access verifier end to end (fixed key set via `StaticFetcher`, `FixedClock`).
//!
//! Modes (byte 0): raw token bytes; or header/payload JSON that the target signs with a
//! published key, an unpublished impostor, or not at all, followed by a mutation of the signed
//! token. Invariants: no panic; an accepted token satisfies every documented rule, re-checked
//! here independently on its JSON; a token whose bytes were changed after signing is refused.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use ztgate::{AccessConfig, Principal};
use ztgate_fuzz::*;

fuzz_target!(init: ztgate_fuzz::seeds::write_if_asked("access_jwt"), |data: &[u8]| {
    let Some(tokens) = access_tokens(data) else { return };
    let verify = |token: &str| runtime().block_on(verifier().verify(token));
    if let Ok(principal) = verify(&tokens.token) {
        assert_sound(&tokens.token, &principal);
    }
    if let Some(mutated) = tokens.mutated {
        let outcome = verify(&mutated);
        assert!(outcome.is_err(), "a token changed after signing was accepted: {mutated:?} -> {outcome:?}");
    }
});

/// The members the rules are about; a member present with `null` is `Some(Value::Null)`.
#[derive(serde::Deserialize)]
struct Checked {
    #[serde(default, deserialize_with = "present")]
    alg: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    kid: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    crit: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    iss: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    aud: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    exp: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    nbf: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    iat: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    email: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    common_name: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

impl Checked {
    fn into_value(self) -> Value {
        let members = [
            ("alg", self.alg),
            ("kid", self.kid),
            ("crit", self.crit),
            ("iss", self.iss),
            ("aud", self.aud),
            ("exp", self.exp),
            ("nbf", self.nbf),
            ("iat", self.iat),
            ("email", self.email),
            ("common_name", self.common_name),
        ];
        Value::Object(members.into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))).collect())
    }
}

/// Re-checks an accepted token against the documented rules, on its own JSON.
fn assert_sound(token: &str, principal: &Principal) {
    let keys = keys();
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3, "accepted a token without three segments");
    let decode =
        |s: &str| URL_SAFE_NO_PAD.decode(s).expect("accepted a segment that is not strict base64url");
    // Read as leniently as ztgate reads them (members it ignores are skipped unchecked, as
    // serde does), keeping only what the rules are about.
    let header: Checked = serde_json::from_slice(&decode(segments[0])).expect("header is JSON");
    let claims: Checked = serde_json::from_slice(&decode(segments[1])).expect("payload is JSON");
    let (header, claims) = (header.into_value(), claims.into_value());
    assert_eq!(header["alg"], "RS256", "accepted alg {}", header["alg"]);
    assert!(header.get("crit").is_none(), "accepted a crit header");
    // Signed by the published key its kid names (checked with jsonwebtoken's aws-lc path,
    // independently of the backend the verifier was built with).
    let key = match header["kid"].as_str() {
        Some("k1") => &keys.k1,
        Some("k2") => &keys.k2,
        other => panic!("accepted kid {other:?}"),
    };
    let jwk = key.public_jwk();
    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
        jwk["n"].as_str().unwrap(),
        jwk["e"].as_str().unwrap(),
    )
    .unwrap();
    let signing_input = &token[..segments[0].len() + 1 + segments[1].len()];
    let signed = jsonwebtoken::crypto::verify(
        segments[2],
        signing_input.as_bytes(),
        &decoding,
        jsonwebtoken::Algorithm::RS256,
    );
    assert_eq!(signed.ok(), Some(true), "accepted a signature its key does not make");

    assert_eq!(claims["iss"], TEAM);
    let aud_ok = match &claims["aud"] {
        Value::String(a) => a == AUD,
        Value::Array(list) => list.iter().any(|a| a == AUD),
        _ => false,
    };
    assert!(aud_ok, "accepted aud {}", claims["aud"]);
    let time =
        |name: &str| claims.get(name).map(|v| v.as_u64().unwrap_or_else(|| panic!("accepted {name}={v}")));
    let exp = time("exp").expect("accepted a token without exp");
    assert!(exp.saturating_add(LEEWAY) > NOW, "accepted exp {exp}");
    assert!(time("nbf").is_none_or(|nbf| nbf <= NOW + LEEWAY), "accepted a future nbf");
    assert!(time("iat").is_none_or(|iat| iat <= NOW + LEEWAY), "accepted a future iat");
    // The lifetime is bounded (31 days by default): `exp − iat`, and `exp − now` plus the leeway.
    let max_lifetime = AccessConfig::MAX_LIFETIME.as_secs();
    assert!(
        time("iat").is_none_or(|iat| exp.saturating_sub(iat) <= max_lifetime),
        "accepted a lifetime over the max"
    );
    assert!(exp.saturating_sub(NOW) <= max_lifetime + LEEWAY, "accepted exp {exp}, beyond the max lifetime");
    match principal {
        Principal::Service(service) => {
            assert_eq!(claims["common_name"], service.common_name.as_str());
            assert!(!service.common_name.is_empty());
        }
        Principal::User(user) => {
            assert!(claims.get("common_name").is_none(), "a token with common_name became a user");
            // One person, one id: the email is ASCII-lowercased, nothing else.
            let sent = claims["email"].as_str().expect("accepted a non-string email");
            assert_eq!(sent.to_ascii_lowercase(), user.email);
            assert!(!user.email.is_empty());
        }
        other => panic!("the Access verifier made {other:?}"),
    }
}
