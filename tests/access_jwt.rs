//! Cloudflare Access JWT verification through a real JWKS server on 127.0.0.1, with tokens
//! signed at test time. Each test is a case of the threat model.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use serde_json::{Value, json};
use ztgate::dev::{DevKey, service_claims, user_claims};
use ztgate::identity::TokenError;
use ztgate::{AccessConfig, Gate, Policy, Principal, Rejection};

struct Fixture {
    server: JwksServer,
    key: DevKey,
    gate: Gate,
}

async fn fixture() -> Fixture {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let gate = gate(&server.url(), clock());
    Fixture { server, key, gate }
}

fn alice() -> Value {
    user_claims(TEAM, AUD, "alice@acme.com", NOW, 3600)
}

async fn check(gate: &Gate, token: &str) -> Result<Principal, Rejection> {
    gate.check(&request_with_token(token)).await.map(|v| v.into_inner())
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

fn without(mut claims: Value, field: &str) -> Value {
    claims.as_object_mut().unwrap().remove(field);
    claims
}

#[tokio::test]
async fn valid_user_token_is_admitted_as_user() {
    let f = fixture().await;
    match check(&f.gate, &f.key.sign(&alice())).await.unwrap() {
        Principal::User(user) => {
            assert_eq!(user.email, "alice@acme.com");
            assert_eq!(user.sub, "sub-alice@acme.com");
            assert_eq!(user.country.as_deref(), Some("XX"));
        }
        other => panic!("expected a user, got {other:?}"),
    }
    assert_eq!(f.server.fetches(), 1);
}

#[tokio::test]
async fn valid_service_token_is_admitted_as_service() {
    let f = fixture().await;
    let p = check(&f.gate, &f.key.sign(&service_claims(TEAM, AUD, "ci.access", NOW, 3600))).await.unwrap();
    assert_eq!(p.as_service().map(|s| s.common_name.as_str()), Some("ci.access"));
    assert_eq!(p.id(), "service:ci.access");
}

#[tokio::test]
async fn service_token_carrying_an_email_is_never_a_user() {
    let f = fixture().await;
    // alice@acme.com is allowlisted as a user; a service token claiming her email must not pass.
    let claims = with(service_claims(TEAM, AUD, "rogue.access", NOW, 3600), "email", json!("alice@acme.com"));
    assert_eq!(check(&f.gate, &f.key.sign(&claims)).await.unwrap_err(), Rejection::Forbidden);
}

#[tokio::test]
async fn custom_claims_are_typed_by_the_caller() {
    #[derive(Clone, Debug, PartialEq, serde::Deserialize)]
    struct Groups {
        groups: Vec<String>,
    }
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let gate = Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
        .custom_claims::<Groups>()
        .certs_url(server.url())
        .clock(clock())
        .policy(Policy::new().allow_if(|p: &Principal<Groups>| {
            p.as_user().is_some_and(|u| u.custom.groups.iter().any(|g| g == "admins"))
        }))
        .build()
        .unwrap();
    let admin = with(user_claims(TEAM, AUD, "bob@x.com", NOW, 60), "groups", json!(["admins"]));
    let verified = gate.check(&request_with_token(&key.sign(&admin))).await.unwrap();
    assert_eq!(verified.as_user().unwrap().custom, Groups { groups: vec!["admins".into()] });
    let other = with(user_claims(TEAM, AUD, "eve@x.com", NOW, 60), "groups", json!(["staff"]));
    assert_eq!(gate.check(&request_with_token(&key.sign(&other))).await.unwrap_err(), Rejection::Forbidden);
    // Claims that do not fit the caller's type are refused, not defaulted.
    let wrong = with(user_claims(TEAM, AUD, "bob@x.com", NOW, 60), "groups", json!("admins"));
    assert!(matches!(
        gate.check(&request_with_token(&key.sign(&wrong))).await.unwrap_err(),
        Rejection::InvalidToken(TokenError::Claims(_))
    ));
}

#[tokio::test]
async fn missing_credential_is_401_with_www_authenticate() {
    let f = fixture().await;
    let req = http::Request::builder().uri("/admin").body(String::new()).unwrap();
    let rejection = f.gate.check(&req).await.unwrap_err();
    assert_eq!(rejection, Rejection::MissingCredential);
    let response: http::Response<String> = rejection.to_response();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let body: Value = serde_json::from_str(response.body()).unwrap();
    assert_eq!(body["code"], "missing_credential");
    assert_eq!(f.server.fetches(), 0, "no credential, no key fetch");
}

#[tokio::test]
async fn cookie_is_used_when_the_header_is_absent() {
    let f = fixture().await;
    let req = http::Request::builder()
        .uri("/admin")
        .header("cookie", format!("theme=dark; CF_Authorization={}", f.key.sign(&alice())))
        .body(String::new())
        .unwrap();
    assert_eq!(f.gate.check(&req).await.unwrap().id(), "user:alice@acme.com");
}

#[tokio::test]
async fn bad_header_never_falls_through_to_a_valid_cookie() {
    let f = fixture().await;
    for bad in ["", "garbage", "a.b.c"] {
        let req = http::Request::builder()
            .uri("/admin")
            .header("cf-access-jwt-assertion", bad)
            .header("cookie", format!("CF_Authorization={}", f.key.sign(&alice())))
            .body(String::new())
            .unwrap();
        let err = f.gate.check(&req).await.unwrap_err();
        assert!(matches!(err, Rejection::InvalidToken(_)), "{bad:?} gave {err:?}");
    }
}

#[tokio::test]
async fn oversized_assertion_header_is_431_not_a_panic() {
    let f = fixture().await;
    let rejection = check(&f.gate, &"a".repeat(64 * 1024)).await.unwrap_err();
    assert_eq!(rejection.to_response::<String>().status(), 431);
    assert_eq!(rejection.code(), "header_too_large");
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let f = fixture().await;
    let claims = with(alice(), "exp", json!(NOW - 61));
    let err = check(&f.gate, &f.key.sign(&claims)).await.unwrap_err();
    assert_eq!(err, Rejection::InvalidToken(TokenError::Expired));
    assert_eq!(err.code(), "token_expired");
}

#[tokio::test]
async fn expiry_within_the_leeway_is_accepted() {
    let f = fixture().await;
    let claims = with(alice(), "exp", json!(NOW - 59));
    assert!(check(&f.gate, &f.key.sign(&claims)).await.is_ok());
}

#[tokio::test]
async fn missing_expiry_is_rejected() {
    let f = fixture().await;
    let err = check(&f.gate, &f.key.sign(&without(alice(), "exp"))).await.unwrap_err();
    assert_eq!(err, Rejection::InvalidToken(TokenError::MissingExpiry));
}

#[tokio::test]
async fn not_yet_valid_token_is_rejected() {
    let f = fixture().await;
    let err = check(&f.gate, &f.key.sign(&with(alice(), "nbf", json!(NOW + 61)))).await.unwrap_err();
    assert_eq!(err, Rejection::InvalidToken(TokenError::NotYetValid));
    assert!(check(&f.gate, &f.key.sign(&with(alice(), "nbf", json!(NOW + 59)))).await.is_ok());
}

#[tokio::test]
async fn future_iat_beyond_the_leeway_is_rejected() {
    let f = fixture().await;
    let err = check(&f.gate, &f.key.sign(&with(alice(), "iat", json!(NOW + 61)))).await.unwrap_err();
    assert_eq!(err, Rejection::InvalidToken(TokenError::IssuedInFuture));
    assert!(check(&f.gate, &f.key.sign(&with(alice(), "iat", json!(NOW + 59)))).await.is_ok());
}

const DAY: u64 = 86_400;

/// A token that claims to live (nearly) forever: a stolen one never expires, and a minting
/// bug (milliseconds for seconds) goes unnoticed. Refused past the maximum lifetime, 31 days
/// by default, measured as `exp − iat` and as `exp − now`.
#[tokio::test]
async fn a_token_living_longer_than_the_max_lifetime_is_401_invalid_token() {
    let f = fixture().await;
    let (gate, key) = (&f.gate, &f.key);
    let lifetime = |claims: Value| {
        let token = key.sign(&claims);
        async move { check(gate, &token).await }
    };
    let max = 31 * DAY;
    for (what, claims) in [
        ("exp = u64::MAX", with(alice(), "exp", json!(u64::MAX))),
        ("exp in milliseconds", with(alice(), "exp", json!((NOW + 3600) * 1000))),
        ("exp − iat one second over", with(with(alice(), "iat", json!(NOW)), "exp", json!(NOW + max + 1))),
        (
            "issued long ago, expiring soon",
            with(with(alice(), "iat", json!(NOW - 40 * DAY)), "exp", json!(NOW + 3600)),
        ),
        ("no iat, exp − now over", with(without(alice(), "iat"), "exp", json!(NOW + max + 61))),
        (
            "service token",
            with(service_claims(TEAM, AUD, "ci.access", NOW, 60), "exp", json!(NOW + 400 * DAY)),
        ),
    ] {
        let err = lifetime(claims).await.unwrap_err();
        assert_eq!(err, Rejection::InvalidToken(TokenError::LifetimeTooLong), "{what}");
        let response = err.to_response::<String>();
        assert_eq!(response.status(), 401, "{what}");
        assert_eq!(err.code(), "invalid_token", "{what}");
        assert!(response.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    }
    // Exactly the maximum is accepted; so is `exp − now` within the leeway of it.
    let at_max = with(with(alice(), "iat", json!(NOW)), "exp", json!(NOW + max));
    assert!(lifetime(at_max).await.is_ok());
    assert!(lifetime(with(without(alice(), "iat"), "exp", json!(NOW + max + 60))).await.is_ok());
}

#[tokio::test]
async fn the_max_lifetime_can_be_lowered_to_the_session_duration_never_raised() {
    use std::time::Duration;
    use ztgate::native::HttpFetcher;
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let config = AccessConfig::new(TEAM, [AUD]).unwrap().with_max_lifetime(Duration::from_secs(DAY)).unwrap();
    let fetcher = HttpFetcher::with_limits(&server.url(), Duration::from_secs(2), 1024 * 1024).unwrap();
    let gate = Gate::builder(config)
        .fetcher(std::sync::Arc::new(fetcher))
        .clock(clock())
        .policy(policy())
        .build()
        .unwrap();
    let day = key.sign(&user_claims(TEAM, AUD, "alice@acme.com", NOW, DAY));
    assert!(check(&gate, &day).await.is_ok());
    let longer = key.sign(&user_claims(TEAM, AUD, "alice@acme.com", NOW, DAY + 1));
    assert_eq!(
        check(&gate, &longer).await.unwrap_err(),
        Rejection::InvalidToken(TokenError::LifetimeTooLong)
    );

    let base = AccessConfig::new(TEAM, [AUD]).unwrap();
    assert_eq!(base.max_lifetime(), AccessConfig::MAX_LIFETIME);
    assert_eq!(AccessConfig::MAX_LIFETIME, Duration::from_secs(31 * DAY));
    for refused in [Duration::ZERO, AccessConfig::MAX_LIFETIME + Duration::from_secs(1), Duration::MAX] {
        assert_eq!(
            base.clone().with_max_lifetime(refused).unwrap_err().setting(),
            "max_lifetime",
            "{refused:?}"
        );
    }
}

#[tokio::test]
async fn time_claims_of_the_wrong_type_are_refused_not_ignored() {
    let f = fixture().await;
    let bad_values = [
        json!("1800003600"),
        json!(1800003600.5),
        json!(null),
        json!(-1),
        json!(1e30),
        json!(true),
        json!([1]),
    ];
    for field in ["exp", "nbf", "iat"] {
        for value in &bad_values {
            let err = check(&f.gate, &f.key.sign(&with(alice(), field, value.clone()))).await.unwrap_err();
            assert!(
                matches!(err, Rejection::InvalidToken(TokenError::Claims(_))),
                "{field}={value}: {err:?}"
            );
        }
    }
    // Beyond i64 but a valid u64 is still a number, of the right type: a far-future exp is
    // refused for its lifetime (not as a claim of the wrong type), a far-future nbf as not yet valid.
    let err = check(&f.gate, &f.key.sign(&with(alice(), "exp", json!(u64::MAX)))).await.unwrap_err();
    assert_eq!(err, Rejection::InvalidToken(TokenError::LifetimeTooLong));
    assert!(check(&f.gate, &f.key.sign(&with(alice(), "nbf", json!(u64::MAX)))).await.is_err());
}

#[tokio::test]
async fn issuer_must_match_the_team_domain_exactly() {
    let f = fixture().await;
    for iss in [
        json!("https://acme-test.cloudflareaccess.com/"),
        json!("https://ACME-TEST.cloudflareaccess.com"),
        json!("https://acme-test.cloudflareaccess.com.evil.com"),
        json!("http://acme-test.cloudflareaccess.com"),
        json!("https://evil.cloudflareaccess.com"),
        json!(["https://acme-test.cloudflareaccess.com"]),
        json!(""),
    ] {
        let err = check(&f.gate, &f.key.sign(&with(alice(), "iss", iss.clone()))).await.unwrap_err();
        assert!(
            matches!(err, Rejection::InvalidToken(TokenError::Issuer | TokenError::Claims(_))),
            "{iss}: {err:?}"
        );
    }
    let err = check(&f.gate, &f.key.sign(&without(alice(), "iss"))).await.unwrap_err();
    assert_eq!(err, Rejection::InvalidToken(TokenError::Issuer));
}

#[tokio::test]
async fn audience_must_contain_a_configured_tag() {
    let f = fixture().await;
    assert!(check(&f.gate, &f.key.sign(&with(alice(), "aud", json!(AUD)))).await.is_ok(), "string form");
    assert!(
        check(&f.gate, &f.key.sign(&with(alice(), "aud", json!(["other", AUD])))).await.is_ok(),
        "array form"
    );
    for aud in [
        json!("other-app"),
        json!([]),
        json!(["other-app"]),
        json!(format!("{AUD} ")),
        json!(AUD.to_uppercase()),
    ] {
        let err = check(&f.gate, &f.key.sign(&with(alice(), "aud", aud.clone()))).await.unwrap_err();
        assert_eq!(err, Rejection::InvalidToken(TokenError::Audience), "{aud}");
    }
    let err = check(&f.gate, &f.key.sign(&without(alice(), "aud"))).await.unwrap_err();
    assert_eq!(err, Rejection::InvalidToken(TokenError::Audience));
}

#[tokio::test]
async fn alg_none_in_every_casing_is_rejected() {
    let f = fixture().await;
    let claims = alice();
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    // A casing trick on the one accepted name, too: the match is exact.
    for alg in ["none", "None", "NONE", "nOnE", "rs256", "Rs256", "RS256 "] {
        let header = json!({"alg": alg, "kid": "k1", "typ": "JWT"});
        // The tokens carry a real RS256 signature by the published key `k1`: only the `alg`
        // rule stands between them and acceptance.
        let signed = f.key.sign_with_header(&header, &claims);
        assert_eq!(
            check(&f.gate, &signed).await.unwrap_err(),
            Rejection::InvalidToken(TokenError::Algorithm),
            "{alg}"
        );
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
        let garbage = format!("{header}.{payload}.AAAA");
        assert_eq!(
            check(&f.gate, &garbage).await.unwrap_err(),
            Rejection::InvalidToken(TokenError::Algorithm),
            "{alg}"
        );
        // The classic `alg: none` form, with no signature at all.
        let unsigned = format!("{header}.{payload}.");
        assert_eq!(
            check(&f.gate, &unsigned).await.unwrap_err(),
            Rejection::InvalidToken(TokenError::Malformed("empty segment")),
            "{alg}"
        );
    }
    // The same signature under the real header is accepted: the refusals above are the alg's.
    let accepted = f.key.sign_with_header(&json!({"alg": "RS256", "kid": "k1", "typ": "JWT"}), &claims);
    assert!(check(&f.gate, &accepted).await.is_ok());
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_rejected() {
    let f = fixture().await;
    let jwk = f.key.public_jwk();
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    // The public key in the forms an attacker might guess the server uses as an HMAC secret.
    for secret in [jwk.to_string().into_bytes(), n, jwk["n"].as_str().unwrap().as_bytes().to_vec()] {
        let token = jsonwebtoken::encode(&header, &alice(), &jsonwebtoken::EncodingKey::from_secret(&secret))
            .unwrap();
        assert_eq!(check(&f.gate, &token).await.unwrap_err(), Rejection::InvalidToken(TokenError::Algorithm));
    }
}

#[tokio::test]
async fn jku_and_x5u_headers_are_never_fetched() {
    let f = fixture().await;
    let attacker = key("evil");
    let attacker_server = JwksServer::start(&[&attacker]).await;
    for field in ["jku", "x5u"] {
        let header = json!({"alg": "RS256", "kid": "evil", field: attacker_server.url()});
        let err = check(&f.gate, &attacker.sign_with_header(&header, &alice())).await.unwrap_err();
        assert_eq!(err, Rejection::InvalidToken(TokenError::UnknownKey));
    }
    assert_eq!(attacker_server.fetches(), 0, "the attacker's server must never be contacted");
}

#[tokio::test]
async fn embedded_jwk_header_is_ignored() {
    let f = fixture().await;
    let attacker = key("k1"); // same kid as the real key
    let header = json!({"alg": "RS256", "kid": "k1", "jwk": attacker.public_jwk(), "x5c": ["AAAA"]});
    let err = check(&f.gate, &attacker.sign_with_header(&header, &alice())).await.unwrap_err();
    assert_eq!(err, Rejection::InvalidToken(TokenError::Signature));
}

#[tokio::test]
async fn kid_is_matched_exactly() {
    let f = fixture().await;
    for kid in [
        json!("K1"),
        json!("k1 "),
        json!(" k1"),
        json!("k"),
        json!(""),
        json!("../k1"),
        json!("k".repeat(10_000)),
    ] {
        let err =
            check(&f.gate, &f.key.sign_with_header(&json!({"alg": "RS256", "kid": kid}), &alice())).await;
        assert_eq!(err.unwrap_err(), Rejection::InvalidToken(TokenError::UnknownKey), "{kid}");
    }
    let err = check(&f.gate, &f.key.sign_with_header(&json!({"alg": "RS256"}), &alice())).await.unwrap_err();
    assert_eq!(err, Rejection::InvalidToken(TokenError::UnknownKey));
    let err = check(&f.gate, &f.key.sign_with_header(&json!({"alg": "RS256", "kid": 1}), &alice()))
        .await
        .unwrap_err();
    assert!(matches!(err, Rejection::InvalidToken(TokenError::Malformed(_))));
}

#[tokio::test]
async fn tampered_payload_fails_the_signature() {
    let f = fixture().await;
    let token = f.key.sign(&with(alice(), "email", json!("eve@acme.com")));
    let honest = f.key.sign(&alice());
    let forged = format!(
        "{}.{}.{}",
        honest.split('.').next().unwrap(),
        token.split('.').nth(1).unwrap(),
        honest.split('.').nth(2).unwrap()
    );
    assert_eq!(check(&f.gate, &forged).await.unwrap_err(), Rejection::InvalidToken(TokenError::Signature));
}

#[tokio::test]
async fn crit_header_is_refused() {
    let f = fixture().await;
    let header = json!({"alg": "RS256", "kid": "k1", "crit": ["exp"], "exp": 1});
    let err = check(&f.gate, &f.key.sign_with_header(&header, &alice())).await.unwrap_err();
    assert_eq!(err, Rejection::InvalidToken(TokenError::CriticalHeader));
}

#[tokio::test]
async fn duplicate_claim_names_are_refused() {
    let f = fixture().await;
    let header = json!({"alg": "RS256", "kid": "k1"}).to_string();
    let base = alice().to_string();
    for dup in [r#""email":"eve@evil.com","#, r#""exp":1,"#, r#""iss":"https://evil","#, r#""aud":"x","#] {
        let payload = format!("{{{dup}{}", &base[1..]);
        let err = check(&f.gate, &f.key.sign_raw(header.as_bytes(), payload.as_bytes())).await.unwrap_err();
        assert!(matches!(err, Rejection::InvalidToken(TokenError::Claims(_))), "{dup}: {err:?}");
    }
    // Duplicate header members too.
    let header = r#"{"alg":"none","alg":"RS256","kid":"k1"}"#;
    let err = check(&f.gate, &f.key.sign_raw(header.as_bytes(), base.as_bytes())).await.unwrap_err();
    assert!(matches!(err, Rejection::InvalidToken(TokenError::Malformed(_))));
}

#[tokio::test]
async fn invalid_utf8_in_an_ignored_member_is_refused() {
    // Found by the access_jwt fuzz target: serde_json skips the strings of members it does not
    // read without validating them, so a header or claims set that is not UTF-8 JSON passed.
    let f = fixture().await;
    let bad_header = [&br#"{"alg":"RS256","kid":"k1","note":"a"#[..], &[0xff, 0xfe], &br#"b"}"#[..]].concat();
    let good_header = json!({"alg": "RS256", "kid": "k1"}).to_string();
    let base = alice().to_string();
    let err = check(&f.gate, &f.key.sign_raw(&bad_header, base.as_bytes())).await.unwrap_err();
    assert_eq!(err, Rejection::InvalidToken(TokenError::Malformed("header")));

    let bad_payload =
        [&br#"{"note":"a"#[..], &[0xf7, 0xff, 0xff, 0xff], &br#"","#[..], &base.as_bytes()[1..]].concat();
    let err = check(&f.gate, &f.key.sign_raw(good_header.as_bytes(), &bad_payload)).await.unwrap_err();
    assert_eq!(err, Rejection::InvalidToken(TokenError::Claims("claims are not UTF-8".into())));
    // The same token with the member valid is admitted, so the refusal is about the encoding.
    let fine = [&br#"{"note":"ab","#[..], &base.as_bytes()[1..]].concat();
    assert!(check(&f.gate, &f.key.sign_raw(good_header.as_bytes(), &fine)).await.is_ok());
}

#[tokio::test]
async fn non_canonical_base64_is_refused() {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
    use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

    // A key that signs any text, so every variant below carries a valid RS256 signature over
    // its own (non-canonical) first two segments: only the strict decoding can refuse it.
    let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let public: PublicKeyComponents<Vec<u8>> = pair.public_key().into();
    let jwk = json!({"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(&public.n), "e": URL_SAFE_NO_PAD.encode(&public.e)});
    let server = JwksServer::start_with_body(json!({"keys": [jwk]}).to_string()).await;
    let gate = gate(&server.url(), clock());
    let sign = |signing_input: &str| {
        let mut signature = vec![0; pair.public_modulus_len()];
        pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), signing_input.as_bytes(), &mut signature).unwrap();
        URL_SAFE_NO_PAD.encode(&signature)
    };
    // What a lenient decoder reads: padding optional, non-zero trailing bits, both alphabets,
    // whitespace dropped. Each variant must mean the same bytes to it (else the case proves
    // nothing about strictness).
    let lenient = |text: &str| {
        let config = GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true);
        let text: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let text = text.replace('+', "-").replace('/', "_");
        GeneralPurpose::new(&base64::alphabet::URL_SAFE, config).decode(text).unwrap()
    };
    // Last character with non-zero unused low bits (same decoded bytes to a lenient decoder).
    let dirty_tail = |segment: &str| {
        let unused = [0, 0, 4, 2][segment.len() % 4];
        assert!(unused > 0, "a segment of length {} has no unused bits", segment.len());
        let last = segment.as_bytes()[segment.len() - 1];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"; // pragma: allowlist secret
        let index = alphabet.iter().position(|c| *c == last).unwrap();
        format!("{}{}", &segment[..segment.len() - 1], alphabet[index | 1] as char)
    };
    let padded = |segment: &str| format!("{segment}{}", "=".repeat((4 - segment.len() % 4) % 4));
    let std_alphabet = |segment: &str| segment.replace('-', "+").replace('_', "/");

    // A header and payload whose encodings end in a partial group and use `-` and `_`.
    let mut header_json = json!({"alg": "RS256", "kid": "k1", "typ": "JWT", "x": "~~~?>?"});
    while URL_SAFE_NO_PAD.encode(header_json.to_string()).len() % 4 < 2 {
        header_json["x"] = json!(format!("{}~", header_json["x"].as_str().unwrap()));
    }
    let mut claims = with(alice(), "x", json!("~~~?>?"));
    while URL_SAFE_NO_PAD.encode(claims.to_string()).len() % 4 < 2 {
        claims["x"] = json!(format!("{}~", claims["x"].as_str().unwrap()));
    }
    let header = URL_SAFE_NO_PAD.encode(header_json.to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    assert!(header.contains(['-', '_']) && payload.contains(['-', '_']), "{header} {payload}");
    let signed = |h: &str, p: &str| format!("{h}.{p}.{}", sign(&format!("{h}.{p}")));
    let token = signed(&header, &payload);
    assert!(check(&gate, &token).await.is_ok(), "the canonical token must pass");
    // A signature whose encoding has `-` or `_` (re-signed with a nonce until it has).
    let (sig_header, sig_payload, signature) = (0..)
        .map(|i| {
            let p = URL_SAFE_NO_PAD.encode(with(alice(), "jti", json!(i)).to_string());
            let s = sign(&format!("{header}.{p}"));
            (header.clone(), p, s)
        })
        .find(|(_, _, s)| s.contains(['-', '_']))
        .unwrap();
    assert!(check(&gate, &format!("{sig_header}.{sig_payload}.{signature}")).await.is_ok());

    let header_refusal = Rejection::InvalidToken(TokenError::Malformed("header"));
    let payload_refusal = Rejection::InvalidToken(TokenError::Malformed("payload encoding"));
    // The signature's encoding is checked by the RS256 backend, which answers "not valid".
    let signature_refusal = Rejection::InvalidToken(TokenError::Signature);
    let header_cases = [padded(&header), dirty_tail(&header), std_alphabet(&header), format!(" {header}")];
    let payload_cases =
        [padded(&payload), dirty_tail(&payload), std_alphabet(&payload), format!("{payload}\t")];
    let signature_cases = [
        padded(&signature),
        dirty_tail(&signature),
        std_alphabet(&signature),
        format!("{signature} "),
        format!("{} {}", &signature[..100], &signature[100..]),
    ];
    let mut cases = Vec::new();
    for h in &header_cases {
        assert_eq!(lenient(h), lenient(&header));
        cases.push((signed(h, &payload), &header_refusal));
    }
    for p in &payload_cases {
        assert_eq!(lenient(p), lenient(&payload));
        cases.push((signed(&header, p), &payload_refusal));
    }
    for s in &signature_cases {
        assert_eq!(lenient(s), lenient(&signature));
        cases.push((format!("{sig_header}.{sig_payload}.{s}"), &signature_refusal));
    }
    for (case, refusal) in cases {
        assert_ne!(case, token);
        assert_eq!(&check(&gate, &case).await.unwrap_err(), refusal, "{case:?}");
    }
    // Not base64 at all (a signature one character short): refused too.
    let short = format!("{sig_header}.{sig_payload}.{}", &signature[..signature.len() - 1]);
    assert_eq!(check(&gate, &short).await.unwrap_err(), signature_refusal);
}

#[tokio::test]
async fn extra_segments_and_json_serialization_are_refused() {
    let f = fixture().await;
    let token = f.key.sign(&alice());
    let (h, rest) = token.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let json_serialization = json!({"protected": h, "payload": p, "signature": s}).to_string();
    for case in [format!("{token}.{s}"), format!("{token}."), format!("{h}.{p}"), json_serialization] {
        let err = check(&f.gate, &case).await.unwrap_err();
        assert!(matches!(err, Rejection::InvalidToken(TokenError::Malformed(_))), "{case}: {err:?}");
    }
}

#[tokio::test]
async fn user_without_email_is_refused() {
    let f = fixture().await;
    for claims in [without(alice(), "email"), with(alice(), "email", json!(""))] {
        let err = check(&f.gate, &f.key.sign(&claims)).await.unwrap_err();
        assert!(matches!(err, Rejection::InvalidToken(TokenError::Claims(_))));
    }
}

#[tokio::test]
async fn email_not_on_the_allowlist_is_403() {
    let f = fixture().await;
    let claims = user_claims(TEAM, AUD, "mallory@acme.com", NOW, 3600);
    let err = check(&f.gate, &f.key.sign(&claims)).await.unwrap_err();
    assert_eq!(err, Rejection::Forbidden);
    assert_eq!(err.to_response::<String>().status(), 403);
}

#[tokio::test]
async fn email_matching_ignores_ascii_case() {
    let f = fixture().await;
    let claims = user_claims(TEAM, AUD, "Alice@ACME.com", NOW, 3600);
    assert!(check(&f.gate, &f.key.sign(&claims)).await.is_ok());
}

/// Split identity: the allowlist compares case-insensitively, so if the id kept the case sent,
/// one person would write as `user:ALICE@…` and as `user:alice@…`. The email is
/// ASCII-lowercased once, and the allowlist, the id and the proofs all see that form.
#[tokio::test]
async fn the_same_person_in_any_ascii_case_is_one_principal() {
    let f = fixture().await;
    for sent in ["alice@acme.com", "ALICE@ACME.COM", "Alice@Acme.Com", "aLiCe@acme.COM"] {
        let token = f.key.sign(&user_claims(TEAM, AUD, sent, NOW, 3600));
        let verified = f.gate.check(&request_with_token(&token)).await.unwrap();
        assert_eq!(verified.id(), "user:alice@acme.com", "{sent}");
        assert_eq!(verified.as_user().unwrap().email, "alice@acme.com", "{sent}");
        assert_eq!(verified.proofs()[0].principal_id, "user:alice@acme.com", "{sent}");
    }
    // Domain rules see the same form.
    let token = f.key.sign(&user_claims(TEAM, AUD, "Bob@OPS.Acme.com", NOW, 3600));
    assert_eq!(f.gate.check(&request_with_token(&token)).await.unwrap().id(), "user:bob@ops.acme.com");
}

/// What is not normalised, exactly as documented: only ASCII letters change case. A non-ASCII
/// letter in another case is another address (no Unicode case folding), and so is anything
/// else that differs (dots, `+tags`, whitespace).
#[tokio::test]
async fn only_ascii_case_is_normalised() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let policy = Policy::new().allow_emails(["jörg@acme.com"]);
    let gate = gate_with(&server.url(), clock(), policy, Default::default());
    let sign = |email: &str| key.sign(&user_claims(TEAM, AUD, email, NOW, 3600));
    let verified = gate.check(&request_with_token(&sign("JÖRG@ACME.COM"))).await;
    assert_eq!(verified.unwrap_err(), Rejection::Forbidden, "Ö is not folded to ö");
    let verified = gate.check(&request_with_token(&sign("JöRG@ACME.COM"))).await.unwrap();
    assert_eq!(verified.id(), "user:jörg@acme.com");
    let everyone = gate_with(&server.url(), clock(), Policy::new().allow_if(|_| true), Default::default());
    for (sent, id) in [
        ("JÖRG@Acme.com", "user:jÖrg@acme.com"),
        ("a.lice+News@ACME.com", "user:a.lice+news@acme.com"),
        ("ALİCE@acme.com", "user:alİce@acme.com"),
    ] {
        let verified = everyone.check(&request_with_token(&sign(sent))).await.unwrap();
        assert_eq!(verified.id(), id, "{sent}");
    }
}

#[tokio::test]
async fn email_domain_suffix_tricks_are_403() {
    let f = fixture().await;
    assert!(check(&f.gate, &f.key.sign(&user_claims(TEAM, AUD, "bob@ops.acme.com", NOW, 60))).await.is_ok());
    for email in [
        "bob@evilops.acme.com",
        "bob@sub.ops.acme.com",
        "bob@ops.acme.com.evil.com",
        "ops.acme.com",
        "@ops.acme.com",
    ] {
        let err = check(&f.gate, &f.key.sign(&user_claims(TEAM, AUD, email, NOW, 60))).await.unwrap_err();
        assert_eq!(err, Rejection::Forbidden, "{email}");
    }
}

#[tokio::test]
async fn service_token_not_on_the_allowlist_is_403() {
    let f = fixture().await;
    for name in ["other.access", "CI.access", "ci.access.evil"] {
        let err = check(&f.gate, &f.key.sign(&service_claims(TEAM, AUD, name, NOW, 60))).await.unwrap_err();
        assert_eq!(err, Rejection::Forbidden, "{name}");
    }
}

#[tokio::test]
async fn a_gate_without_a_policy_cannot_be_built() {
    let err = Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap()).build().unwrap_err();
    assert_eq!(err.setting(), "policy");
}

#[tokio::test]
async fn an_empty_policy_admits_nobody() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let gate = gate_with(&server.url(), clock(), Policy::new(), Default::default());
    assert_eq!(check(&gate, &key.sign(&alice())).await.unwrap_err(), Rejection::Forbidden);
}
