//! Wycheproof vectors (C2SP/wycheproof, vendored unmodified in `tests/vectors/wycheproof/`, see
//! its README) run through ztgate's own verification paths. Each file's applicability is
//! documented in `docs/hardening.md`; every file prints `applied / skipped (reason) / passed`
//! counts, and a file that should apply but ran no vector fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use ztgate::__private::KeySet;
use ztgate::__private::Rs256Key;
use ztgate::AccessConfig;
use ztgate::clock::FixedClock;
use ztgate::identity::webhook::{MIN_SECRET_BYTES, WebhookError, WebhookScheme, WebhookVerifier};
use ztgate::identity::{AccessVerifier, JwksCache, JwksConfig, StaticFetcher, TokenError};
use ztgate::secrets::Secret;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/wycheproof/");
const TEAM: &str = "https://acme-test.cloudflareaccess.com";
const AUD: &str = "aud-4b8f1c";
const NOW: u64 = 1_800_000_000;
/// The `jwt_simple` backend verifies JWS signing inputs only (see `src/identity/rs256/`).
const JWT_SIMPLE: bool = cfg!(feature = "jwt_simple");

fn load(file: &str) -> Value {
    let path = format!("{DIR}{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Per-file bookkeeping: vectors applied and passed (a vector may carry several checks and
/// passes when all of them do), and skips by reason.
struct Tally {
    file: &'static str,
    applied: BTreeSet<u64>,
    failed: BTreeSet<u64>,
    skipped: BTreeMap<String, usize>,
    failures: Vec<String>,
}

impl Tally {
    fn new(file: &'static str) -> Self {
        Self {
            file,
            applied: BTreeSet::new(),
            failed: BTreeSet::new(),
            skipped: BTreeMap::new(),
            failures: Vec::new(),
        }
    }

    fn skip(&mut self, reason: &str) {
        *self.skipped.entry(reason.to_owned()).or_default() += 1;
    }

    fn check(&mut self, tc_id: u64, ok: bool, what: impl FnOnce() -> String) {
        self.applied.insert(tc_id);
        if !ok {
            self.failed.insert(tc_id);
            self.failures.push(format!("tcId {tc_id}: {}", what()));
        }
    }

    /// Prints the counts; fails on any failed vector, and on zero applied vectors if `must_apply`.
    fn finish(self, must_apply: bool) {
        let skipped: usize = self.skipped.values().sum();
        let (applied, passed) = (self.applied.len(), self.applied.len() - self.failed.len());
        eprintln!("wycheproof {}: applied {applied} / skipped {skipped} / passed {passed}", self.file);
        for (reason, n) in &self.skipped {
            eprintln!("    skipped {n}: {reason}");
        }
        assert!(self.failures.is_empty(), "{}: {} failures:\n{}", self.file, self.failures.len(), {
            self.failures.join("\n")
        });
        if must_apply {
            assert!(applied > 0, "{}: no vector applied", self.file);
        }
    }
}

fn tests_of(group: &Value) -> impl Iterator<Item = &Value> {
    group["tests"].as_array().unwrap().iter()
}

fn tc_id(test: &Value) -> u64 {
    test["tcId"].as_u64().unwrap()
}

/// A verifier for TEAM/AUD whose only key source is `jwks` (any bytes), at a fixed time.
fn verifier(jwks: &str) -> AccessVerifier {
    let clock = Arc::new(FixedClock::at(NOW));
    let keys = JwksCache::new(
        Arc::new(StaticFetcher::new(jwks.as_bytes().to_vec())),
        clock.clone(),
        JwksConfig::default(),
    );
    AccessVerifier::new(AccessConfig::new(TEAM, [AUD]).unwrap(), keys, clock)
}

/// The public members of a JWK (Wycheproof groups carry private keys too).
fn public_jwk(jwk: &Value) -> Value {
    let mut public = serde_json::Map::new();
    for member in ["kty", "kid", "use", "alg", "key_ops", "n", "e", "crv", "x", "y"] {
        if let Some(v) = jwk.get(member) {
            public.insert(member.to_owned(), v.clone());
        }
    }
    Value::Object(public)
}

/// Errors that can only happen after the signature verified (the payloads of these vectors are
/// not Access claims).
fn after_signature(e: &TokenError) -> bool {
    matches!(
        e,
        TokenError::Issuer
            | TokenError::Audience
            | TokenError::MissingExpiry
            | TokenError::Expired
            | TokenError::NotYetValid
            | TokenError::IssuedInFuture
            | TokenError::Claims(_)
    )
}

/// The header's `alg`, if the token has three non-empty segments and a JSON object header.
fn header_alg(jws: &str) -> Option<Option<String>> {
    let parts: Vec<&str> = jws.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).ok()?).ok()?;
    Some(header.get("alg").and_then(Value::as_str).map(str::to_owned))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

#[test]
fn rsa_pkcs1_2048_sha256_through_rs256_key() {
    let doc = load("rsa_signature_2048_sha256_test.json");
    let mut tally = Tally::new("rsa_signature_2048_sha256_test.json");
    for group in doc["testGroups"].as_array().unwrap() {
        assert_eq!(group["sha"], "SHA-256");
        let n = hex(group["publicKey"]["modulus"].as_str().unwrap());
        let e = hex(group["publicKey"]["publicExponent"].as_str().unwrap());
        let n = &n[n.iter().position(|b| *b != 0).unwrap()..];
        let Some(key) = Rs256Key::from_components(n, &e) else {
            // jwt-simple builds only e = 65537 keys; the e = 3 groups are refused whole.
            if !JWT_SIMPLE {
                panic!("the default backend must build every 2048-bit key");
            }
            for _ in tests_of(group) {
                tally.skip("key refused by the jwt_simple backend (e != 65537)");
            }
            continue;
        };
        for test in tests_of(group) {
            let msg = hex(test["msg"].as_str().unwrap());
            let signature = b64(&hex(test["sig"].as_str().unwrap()));
            if JWT_SIMPLE {
                // No vector's msg is a JWS signing input, which is all jwt-simple can verify.
                tally.skip("msg is not a JWS signing input (jwt_simple backend)");
                continue;
            }
            let accepted = key.verify(&msg, &signature);
            match test["result"].as_str().unwrap() {
                "valid" => tally.check(tc_id(test), accepted, || "valid signature refused".into()),
                "invalid" => tally.check(tc_id(test), !accepted, || {
                    format!("invalid signature accepted ({})", test["comment"])
                }),
                // Wycheproof allows either answer (here: a missing ASN.1 NULL). ztgate takes the
                // backend's answer and records it; accepting would not be a forgery.
                "acceptable" => {
                    eprintln!("    tcId {}: acceptable vector, backend says {accepted}", tc_id(test));
                    tally.check(tc_id(test), true, String::new);
                }
                other => panic!("unknown result {other}"),
            }
        }
    }
    tally.finish(!JWT_SIMPLE);
}

#[tokio::test]
async fn json_web_signature_compact_cases() {
    let doc = load("json_web_signature_test.json");
    let mut tally = Tally::new("json_web_signature_test.json");
    let mut signature_layer = 0usize;
    for group in doc["testGroups"].as_array().unwrap() {
        let key = &group["private"];
        let public = public_jwk(key);
        let jwks = json!({ "keys": [public] }).to_string();
        let verifier = verifier(&jwks);
        // The key as ztgate would keep it from a JWKS (None: refused by the key filter).
        let kept = KeySet::parse(jwks.as_bytes(), 8).ok();
        let kid = key["kid"].as_str().unwrap_or_default();
        let rsa = if key["kty"] == "RSA" {
            let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
            let e = URL_SAFE_NO_PAD.decode(key["e"].as_str().unwrap()).unwrap();
            // Every RSA key of this file is 2048-bit with e = 65537: both backends build it.
            Some(Rs256Key::from_components(&n, &e).expect("a 2048-bit, e = 65537 key"))
        } else {
            None
        };
        for test in tests_of(group) {
            let id = tc_id(test);
            let valid = test["result"] == "valid";
            let Some(jws) = test["jws"].as_str() else {
                // JSON serialization: ztgate takes compact tokens only.
                let err = verifier.verify(&test["jws"].to_string()).await.unwrap_err();
                tally
                    .check(id, matches!(err, TokenError::Malformed(_)), || format!("JSON form gave {err:?}"));
                continue;
            };
            let outcome = verifier.verify(jws).await;
            match header_alg(jws) {
                None => tally.check(id, matches!(outcome, Err(TokenError::Malformed(_))), || {
                    format!("not a three-segment JSON-header token, got {outcome:?}")
                }),
                Some(alg) if alg.as_deref() != Some("RS256") => {
                    // Every algorithm but RS256 is refused at the header, valid or not.
                    tally.check(id, outcome == Err(TokenError::Algorithm), || {
                        format!("alg {alg:?}: expected Algorithm, got {outcome:?}")
                    });
                }
                Some(_) => {
                    let header_kid = header_kid(jws);
                    let key_usable = kept.as_ref().is_some_and(|set| set.get(&header_kid).is_some());
                    if !key_usable {
                        // The key filter refused the group's key (wrong `use`, `key_ops`, alg
                        // PS512...) or the kid differs: refused before any signature check.
                        tally.check(id, matches!(outcome, Err(ref e) if !after_signature(e)), || {
                            format!("unusable key (kid {header_kid:?}, group kid {kid:?}): got {outcome:?}")
                        });
                    } else if valid {
                        tally.check(id, matches!(outcome, Err(ref e) if after_signature(e)), || {
                            format!("valid RS256 signature: expected a claims error, got {outcome:?}")
                        });
                    } else {
                        tally.check(id, matches!(outcome, Err(ref e) if !after_signature(e)), || {
                            format!("invalid RS256 token passed the signature check: {outcome:?}")
                        });
                    }
                    // The signature layer alone, with the group's key, wherever the key is RSA
                    // and the token's own kid names it (a modified kid changes the input anyway).
                    let parts: Vec<&str> = jws.split('.').collect();
                    if let Some(rsa) = &rsa
                        && header_kid == kid
                        && key_usable
                    {
                        let signing_input = format!("{}.{}", parts[0], parts[1]);
                        let accepted = rsa.verify(signing_input.as_bytes(), parts[2]);
                        signature_layer += 1;
                        tally.check(id, accepted == valid, || {
                            format!("Rs256Key::verify said {accepted}, Wycheproof says {}", test["result"])
                        });
                    }
                }
            }
        }
    }
    eprintln!("    RS256 signature-layer checks: {signature_layer}");
    assert!(signature_layer > 0, "no RS256 case reached the signature layer");
    tally.finish(true);
}

fn header_kid(jws: &str) -> String {
    let header = jws.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap_or_default().to_owned()
}

/// ztgate's JWK acceptance rules, restated independently of `jwks.rs`.
fn ztgate_keeps(jwk: &Value) -> bool {
    let str_or_absent = |m: &str, want: &str| jwk.get(m).is_none_or(|v| v.as_str() == Some(want));
    let (Some(n), Some(e)) = (jwk["n"].as_str(), jwk["e"].as_str()) else { return false };
    let (Ok(n), Ok(e)) = (URL_SAFE_NO_PAD.decode(n), URL_SAFE_NO_PAD.decode(e)) else { return false };
    let n: Vec<u8> = n.into_iter().skip_while(|b| *b == 0).collect();
    let e: Vec<u8> = e.into_iter().skip_while(|b| *b == 0).collect();
    let bits = n.first().map_or(0, |top| (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize));
    jwk["kty"] == "RSA"
        && jwk["kid"].as_str().is_some_and(|k| !k.is_empty() && k.len() <= 256)
        && str_or_absent("use", "sig")
        && str_or_absent("alg", "RS256")
        && jwk
            .get("key_ops")
            .is_none_or(|ops| ops.as_array().is_some_and(|a| a.iter().any(|o| o == "verify")))
        && (2048..=8192).contains(&bits)
        && n.last().is_some_and(|b| b & 1 == 1)
        && !e.is_empty()
        && e.len() <= 4
        && e.last().is_some_and(|b| b & 1 == 1)
        && e != [1]
}

#[tokio::test]
async fn json_web_key_sets_through_the_key_filter() {
    let doc = load("json_web_key_test.json");
    let mut tally = Tally::new("json_web_key_test.json");
    for group in doc["testGroups"].as_array().unwrap() {
        let keyset = &group["private"];
        let body = keyset.to_string();
        let parsed = KeySet::parse(body.as_bytes(), 64);
        let keys = keyset["keys"].as_array().unwrap();
        for test in tests_of(group) {
            let id = tc_id(test);
            // 1. The key filter: exactly the keys the rules allow are kept (a duplicated kid
            //    drops both copies; the jwt_simple backend may refuse more, never fewer).
            for jwk in keys {
                let kid = jwk["kid"].as_str().unwrap_or_default();
                let twice = keys.iter().filter(|k| k["kid"].as_str() == Some(kid)).count() > 1;
                let expected = ztgate_keeps(jwk) && !twice;
                let kept = parsed.as_ref().is_ok_and(|set| set.get(kid).is_some());
                let ok = kept == expected || (JWT_SIMPLE && expected && !kept);
                tally.check(id, ok, || format!("kid {kid:?}: kept {kept}, rules say {expected}"));
            }
            // 2. The token through the verifier with this key set.
            let jws = test["jws"].as_str().unwrap();
            let outcome = verifier(&body).verify(jws).await;
            let alg = header_alg(jws);
            let expect_signature_checked = match &alg {
                Some(Some(a)) if a == "RS256" => {
                    parsed.as_ref().is_ok_and(|set| set.get(&header_kid(jws)).is_some())
                }
                _ => false,
            };
            let ok = match (&alg, test["result"].as_str().unwrap()) {
                (Some(Some(a)), _) if a != "RS256" => outcome == Err(TokenError::Algorithm),
                (None, _) => matches!(outcome, Err(TokenError::Malformed(_))),
                // A valid RS256 token with a kept key: the signature passes, the claims don't.
                (_, "valid") if expect_signature_checked => {
                    matches!(outcome, Err(ref e) if after_signature(e))
                }
                // tcId 7: a key with the ROCA weakness. ztgate does not screen keys for ROCA
                // (keys come only from the configured issuer's JWKS over TLS): the signature
                // verifies and the payload, not Access claims, is refused.
                (_, "invalid") if test["comment"] == "rejectsKeyWithRocaVulnerability" => {
                    matches!(outcome, Err(ref e) if after_signature(e)) || JWT_SIMPLE
                }
                _ => matches!(outcome, Err(ref e) if !after_signature(e)),
            };
            tally.check(id, ok, || format!("{}: alg {alg:?} gave {outcome:?}", test["comment"]));
        }
    }
    tally.finish(true);
}

/// Lowercase hex, as GitHub sends its signatures.
fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 vectors through ztgate's own verification. Of ztgate's HMAC checks, only the
/// GitHub webhook scheme MACs a message the caller chooses whole (`HMAC(secret, body)`), so
/// every vector runs there: the vector's key is the webhook secret, its message the body, its
/// tag the `X-Hub-Signature-256` header. The other HMAC paths cannot take a vector: the HMAC
/// token's MAC input starts with `ztgate-hmac-v1\0`, Svix's with `{id}.{timestamp}.`, Stripe's
/// with `{t}.` (and Stripe's key must be a `whsec_` string); none of the vectors' messages does.
#[test]
fn hmac_sha256_vectors_through_the_github_webhook_verifier() {
    let doc = load("hmac_sha256_test.json");
    let mut tally = Tally::new("hmac_sha256_test.json");
    let mut truncated_refused = 0usize;
    for group in doc["testGroups"].as_array().unwrap() {
        let tag_bits = group["tagSize"].as_u64().unwrap();
        for test in tests_of(group) {
            let id = tc_id(test);
            let key = hex(test["key"].as_str().unwrap());
            let msg = hex(test["msg"].as_str().unwrap());
            let tag = hex(test["tag"].as_str().unwrap());
            // Every key of the file is 16, 32 or 65 bytes without outer whitespace: a secret
            // WebhookVerifier::github takes (at least MIN_SECRET_BYTES).
            assert!(key.len() >= MIN_SECRET_BYTES, "tcId {id}: key of {} bytes", key.len());
            let verifier = WebhookVerifier::github(Secret::new(key)).unwrap();
            let mut headers = http::HeaderMap::new();
            headers.insert("x-hub-signature-256", format!("sha256={}", to_hex(&tag)).parse().unwrap());
            let outcome = verifier.verify_without_replay_guard(&headers, &msg, NOW);
            if tag_bits != 256 {
                // A truncated tag is not a signature ztgate reads: refused before any MAC work,
                // whatever Wycheproof says of the vector.
                tally.check(id, outcome == Err(WebhookError::MalformedSignature), || {
                    format!("{tag_bits}-bit tag: expected MalformedSignature, got {outcome:?}")
                });
                truncated_refused += 1;
                continue;
            }
            let expected_ok = match test["result"].as_str().unwrap() {
                "valid" => true,
                "invalid" => false,
                other => panic!("tcId {id}: result {other}"),
            };
            let ok = match &outcome {
                Ok(message) => expected_ok && message.scheme() == WebhookScheme::GitHub,
                Err(e) => !expected_ok && *e == WebhookError::SignatureMismatch,
            };
            tally.check(id, ok, || format!("{} ({}): got {outcome:?}", test["result"], test["comment"]));
        }
    }
    eprintln!("    truncated (128-bit) tags refused as MalformedSignature: {truncated_refused}");
    assert!(truncated_refused > 0);
    tally.finish(true);
}

/// ztgate accepts neither ES256 nor EdDSA: every vector's signature, in a token under that
/// algorithm and the group's key id (the group's public key served as the key set), is refused
/// at the header with `Algorithm`, before any key lookup (an empty signature one step earlier,
/// as malformed). Nothing here tests curve arithmetic,
/// which ztgate never runs.
fn non_rs256_algorithm_is_refused(file: &'static str, alg: &str) {
    let doc = load(file);
    let mut tally = Tally::new(file);
    block_on(async {
        for group in doc["testGroups"].as_array().unwrap() {
            // A few ECDSA groups have a key no JWK can hold (Wycheproof gives none): their key
            // set is empty, which changes nothing, as no key is looked up.
            let (keys, kid) = match group.get("publicKeyJwk") {
                Some(jwk) => (json!([jwk]), jwk["kid"].clone()),
                None => (json!([]), json!("no-jwk")),
            };
            let verifier = verifier(&json!({ "keys": keys }).to_string());
            for test in tests_of(group) {
                let header = json!({"alg": alg, "kid": kid, "typ": "JWT"}).to_string();
                let claims = json!({"iss": TEAM, "aud": [AUD], "exp": NOW + 60, "email": "a@b.c"});
                let token = format!(
                    "{}.{}.{}",
                    b64(header.as_bytes()),
                    b64(claims.to_string().as_bytes()),
                    b64(&hex(test["sig"].as_str().unwrap()))
                );
                let outcome = verifier.verify(&token).await;
                // An empty signature (Ed25519 tcId 30) leaves an empty third segment: refused as
                // malformed, one step before the algorithm.
                let expected = if test["sig"] == "" {
                    Err(TokenError::Malformed("empty segment"))
                } else {
                    Err(TokenError::Algorithm)
                };
                tally.check(tc_id(test), outcome == expected, || {
                    format!("expected {expected:?}, got {outcome:?}")
                });
            }
        }
    });
    let vectors = doc["numberOfTests"].as_u64().unwrap() as usize;
    assert_eq!(tally.applied.len(), vectors, "{file}: every vector runs");
    tally.finish(true);
}

#[test]
fn ecdsa_p256_tokens_are_refused() {
    non_rs256_algorithm_is_refused("ecdsa_secp256r1_sha256_p1363_test.json", "ES256");
}

#[test]
fn ed25519_tokens_are_refused() {
    non_rs256_algorithm_is_refused("ed25519_test.json", "EdDSA");
}
