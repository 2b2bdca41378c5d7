//! Attacks on the Access JWT path that `tests/access_jwt.rs` and `tests/jwks_cache.rs` do not
//! already cover, each test named after its attack, end to end through a real JWKS server on
//! 127.0.0.1.

mod common;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use ztgate::dev::{DevKey, user_claims};
use ztgate::identity::TokenError;
use ztgate::{Gate, Principal, Rejection};

fn alice() -> Value {
    user_claims(TEAM, AUD, "alice@acme.com", NOW, 3600)
}

async fn check(gate: &Gate, token: &str) -> Result<Principal, Rejection> {
    gate.check(&request_with_token(token)).await.map(|v| v.into_inner())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn n_and_e(key: &DevKey) -> (Vec<u8>, Vec<u8>) {
    let jwk = key.public_jwk();
    let decode = |m: &str| URL_SAFE_NO_PAD.decode(jwk[m].as_str().unwrap()).unwrap();
    (decode("n"), decode("e"))
}

// ---------------------------------------------------------------------------------------------
// ECDSA: ztgate accepts RS256 only, so an ES256 token is refused at the header, before any key
// is looked up, even when the JWKS serves an EC key under the token's kid.

fn ec_key() -> (EcdsaKeyPair, Value) {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = pair.public_key().as_ref(); // 0x04 || x || y
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "alg": "ES256",
        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
    });
    (pair, jwk)
}

#[tokio::test]
async fn es256_signed_token_is_refused_even_with_an_ec_key_in_the_jwks() {
    let rsa = key("k1");
    let (ec, ec_jwk) = ec_key();
    let server = JwksServer::start_with_body(json!({"keys": [rsa.public_jwk(), ec_jwk]}).to_string()).await;
    let gate = common::gate(&server.url(), clock());
    let pkcs8 = ec.to_pkcs8v1().unwrap();
    for kid in ["ec-1", "k1"] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.into());
        let token =
            jsonwebtoken::encode(&header, &alice(), &jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()))
                .unwrap();
        // A genuine ES256 signature: the token is valid for anyone who accepts ES256.
        let (signing_input, signature) = token.rsplit_once('.').unwrap();
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            ec.public_key().as_ref(),
        )
        .verify(signing_input.as_bytes(), &URL_SAFE_NO_PAD.decode(signature).unwrap())
        .expect("the ES256 signature is real");
        assert_eq!(check(&gate, &token).await.unwrap_err(), Rejection::InvalidToken(TokenError::Algorithm));
    }
    assert_eq!(server.fetches(), 0, "refused at the header: no key was even looked up");
}

#[tokio::test]
async fn ecdsa_psychic_signature_with_r_and_s_zero_is_refused() {
    // CVE-2022-21449: verifiers that skip the r, s ∈ [1, n-1] check accept (0, 0) for any
    // message and key.
    let rsa = key("k1");
    let (_, ec_jwk) = ec_key();
    let server = JwksServer::start_with_body(json!({"keys": [rsa.public_jwk(), ec_jwk]}).to_string()).await;
    let gate = common::gate(&server.url(), clock());
    let payload = b64(alice().to_string().as_bytes());
    let signatures: [(&str, Vec<u8>); 4] = [
        ("ES256", vec![0; 64]),                                          // P1363 (JWS) r = s = 0
        ("ES256", vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]), // DER r = s = 0
        ("ES384", vec![0; 96]),
        ("ES512", vec![0; 132]),
    ];
    for (alg, signature) in signatures {
        for kid in ["ec-1", "k1"] {
            let header = b64(json!({"alg": alg, "kid": kid, "typ": "JWT"}).to_string().as_bytes());
            let token = format!("{header}.{payload}.{}", b64(&signature));
            let err = check(&gate, &token).await.unwrap_err();
            assert_eq!(err, Rejection::InvalidToken(TokenError::Algorithm), "{alg} {kid}");
        }
    }
    assert_eq!(server.fetches(), 0);
}

// ---------------------------------------------------------------------------------------------
// Algorithm confusion: HS256 keyed with the RSA public key in the encodings a server might have
// on disk (access_jwt.rs covers the JWK, raw n and base64 n forms).

fn der_len(len: usize) -> Vec<u8> {
    match len {
        0..=0x7f => vec![len as u8],
        0x80..=0xff => vec![0x81, len as u8],
        _ => vec![0x82, (len >> 8) as u8, len as u8],
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(content.len()));
    out.extend_from_slice(content);
    out
}

fn der_uint(be: &[u8]) -> Vec<u8> {
    let be = &be[be.iter().position(|b| *b != 0).unwrap_or(be.len() - 1)..];
    let mut content = Vec::new();
    if be[0] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(be);
    der(0x02, &content)
}

/// PKCS#1 `RSAPublicKey` and X.509 `SubjectPublicKeyInfo` DER for (n, e).
fn rsa_public_der(n: &[u8], e: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let pkcs1 = der(0x30, &[der_uint(n), der_uint(e)].concat());
    let rsa_encryption_oid = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let algorithm = der(0x30, &[&rsa_encryption_oid[..], &[0x05, 0x00]].concat());
    let bit_string = der(0x03, &[&[0u8][..], &pkcs1].concat());
    let spki = der(0x30, &[algorithm, bit_string].concat());
    (pkcs1, spki)
}

fn pem(label: &str, der: &[u8], eol: &str) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN {label}-----{eol}{}{eol}-----END {label}-----{eol}", lines.join(eol))
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_as_pem_or_der_is_rejected() {
    let rsa = key("k1");
    let server = JwksServer::start(&[&rsa]).await;
    let gate = common::gate(&server.url(), clock());
    let (n, e) = n_and_e(&rsa);
    let (pkcs1, spki) = rsa_public_der(&n, &e);
    // The hand-made DER is exactly what aws-lc produces for this key.
    let reference = aws_lc_rs::rsa::PublicKeyComponents { n: &n[..], e: &e[..] }.as_der().unwrap();
    assert_eq!(spki, reference.as_ref(), "SubjectPublicKeyInfo DER");
    let secrets: Vec<Vec<u8>> = vec![
        spki.clone(),
        pkcs1.clone(),
        pem("PUBLIC KEY", &spki, "\n").into_bytes(),
        pem("PUBLIC KEY", &spki, "\n").trim_end().as_bytes().to_vec(),
        pem("PUBLIC KEY", &spki, "\r\n").into_bytes(),
        pem("RSA PUBLIC KEY", &pkcs1, "\n").into_bytes(),
        pem("RSA PUBLIC KEY", &pkcs1, "\n").trim_end().as_bytes().to_vec(),
    ];
    for alg in
        [jsonwebtoken::Algorithm::HS256, jsonwebtoken::Algorithm::HS384, jsonwebtoken::Algorithm::HS512]
    {
        for secret in &secrets {
            let mut header = jsonwebtoken::Header::new(alg);
            header.kid = Some("k1".into());
            let token =
                jsonwebtoken::encode(&header, &alice(), &jsonwebtoken::EncodingKey::from_secret(secret))
                    .unwrap();
            let err = check(&gate, &token).await.unwrap_err();
            assert_eq!(
                err,
                Rejection::InvalidToken(TokenError::Algorithm),
                "{alg:?}, {} byte key",
                secret.len()
            );
        }
    }
    // The same token shape with an RS256 header and the HMAC tag as "signature" is no better.
    let header = b64(json!({"alg": "RS256", "kid": "k1"}).to_string().as_bytes());
    let signing_input = format!("{header}.{}", b64(alice().to_string().as_bytes()));
    for secret in &secrets {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(signing_input.as_bytes());
        let token = format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()));
        let err = check(&gate, &token).await.unwrap_err();
        assert_eq!(err, Rejection::InvalidToken(TokenError::Signature));
    }
}

// ---------------------------------------------------------------------------------------------
// kid: an opaque lookup key, never a path, URL or pattern.

#[tokio::test]
async fn kid_path_traversal_and_injection_is_an_unknown_key() {
    let rsa = key("k1");
    let server = JwksServer::start(&[&rsa]).await;
    let gate = common::gate(&server.url(), clock());
    assert!(check(&gate, &rsa.sign(&alice())).await.is_ok());
    for kid in [
        "../../../../../../etc/passwd",
        "/etc/passwd",
        "/dev/null",
        "..\\..\\..\\windows\\win.ini",
        "./k1",
        "k1/../k1",
        "k1/.",
        "%2e%2e%2fk1",
        "..%2fk1",
        "k1%00",
        "k1\u{0}",
        "k1\u{0}../../etc/passwd",
        "k1\n",
        "k1\r\nX-Injected: 1",
        "file:///etc/passwd",
        "http://127.0.0.1:1/certs",
        "k*",
        ".*",
        "k1' OR '1'='1",
        "{\"$ne\": null}",
        "k\u{0131}", // dotless i: no Unicode case folding either
    ] {
        let token = rsa.sign_with_header(&json!({"alg": "RS256", "kid": kid, "typ": "JWT"}), &alice());
        let err = check(&gate, &token).await.unwrap_err();
        assert_eq!(err, Rejection::InvalidToken(TokenError::UnknownKey), "{kid:?}");
    }
    // The certs URL never changes with the kid: one fetch at start, one unknown-kid refetch per
    // cooldown, however many hostile kids arrive.
    assert_eq!(server.fetches(), 2);
}

// ---------------------------------------------------------------------------------------------
// Weak keys served by the JWKS endpoint, with tokens genuinely signed for them.

/// EMSA-PKCS1-v1_5 encoding of SHA-256(`message`) for a `k`-byte modulus (RFC 8017 §9.2).
fn emsa_pkcs1_sha256(message: &[u8], k: usize) -> Vec<u8> {
    const DIGEST_INFO: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
        0x04, 0x20,
    ];
    let t = [&DIGEST_INFO[..], &Sha256::digest(message)[..]].concat();
    let mut em = vec![0x00, 0x01];
    em.resize(k - t.len() - 1, 0xff);
    em.push(0x00);
    em.extend(t);
    em
}

#[tokio::test]
async fn jwks_key_with_e_1_cannot_be_used_to_forge_tokens() {
    // With e = 1, s^e mod n = s: the "signature" of any message is its own padded digest, so
    // anyone can sign. The modulus here is a real 2048-bit one.
    let good = key("k1");
    let (n, _) = n_and_e(&key("donor"));
    let e_one = json!({"kty": "RSA", "kid": "e-one", "use": "sig", "alg": "RS256", "n": b64(&n), "e": "AQ"});
    let header = json!({"alg": "RS256", "kid": "e-one", "typ": "JWT"}).to_string();
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(alice().to_string().as_bytes()));
    let forged = format!("{signing_input}.{}", b64(&emsa_pkcs1_sha256(signing_input.as_bytes(), n.len())));

    // Next to a good key: the e = 1 key is filtered out, its kid is unknown.
    let server =
        JwksServer::start_with_body(json!({"keys": [good.public_jwk(), e_one.clone()]}).to_string()).await;
    let gate = common::gate(&server.url(), clock());
    assert_eq!(check(&gate, &forged).await.unwrap_err(), Rejection::InvalidToken(TokenError::UnknownKey));
    assert!(check(&gate, &good.sign(&alice())).await.is_ok(), "the good key still works");

    // Alone: the document has no usable key, which is a failed fetch (503), not an open door.
    let server = JwksServer::start_with_body(json!({"keys": [e_one]}).to_string()).await;
    let gate = common::gate(&server.url(), clock());
    let err = check(&gate, &forged).await.unwrap_err();
    assert!(matches!(err, Rejection::KeysUnavailable { .. }), "{err:?}");
}

/// Just enough big-integer arithmetic to sign with a 1024-bit key from the Wycheproof file
/// (aws-lc refuses to sign with keys under 2048 bits, which is the point).
mod bignum {
    use std::cmp::Ordering;

    /// Little-endian 32-bit limbs.
    pub type Big = Vec<u32>;

    pub fn from_be(bytes: &[u8]) -> Big {
        let mut limbs: Big =
            bytes.rchunks(4).map(|c| c.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))).collect();
        trim(&mut limbs);
        limbs
    }

    pub fn to_be(a: &Big, len: usize) -> Vec<u8> {
        let mut out: Vec<u8> = a.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
        let first = out.iter().position(|b| *b != 0).unwrap_or(out.len());
        out.drain(..first);
        assert!(out.len() <= len);
        let mut padded = vec![0; len - out.len()];
        padded.extend(out);
        padded
    }

    fn trim(a: &mut Big) {
        while a.last() == Some(&0) {
            a.pop();
        }
    }

    fn cmp(a: &Big, b: &Big) -> Ordering {
        let (mut a, mut b) = (a.clone(), b.clone());
        trim(&mut a);
        trim(&mut b);
        a.len().cmp(&b.len()).then_with(|| a.iter().rev().cmp(b.iter().rev()))
    }

    fn sub_in_place(a: &mut Big, b: &Big) {
        let mut borrow = 0i64;
        for (i, limb) in a.iter_mut().enumerate() {
            let d = i64::from(*limb) - i64::from(b.get(i).copied().unwrap_or(0)) - borrow;
            borrow = i64::from(d < 0);
            *limb = d.rem_euclid(1 << 32) as u32;
        }
        assert_eq!(borrow, 0);
    }

    pub fn add(a: &Big, b: &Big) -> Big {
        let mut out = Vec::with_capacity(a.len().max(b.len()) + 1);
        let mut carry = 0u64;
        for i in 0..a.len().max(b.len()) {
            let s =
                u64::from(a.get(i).copied().unwrap_or(0)) + u64::from(b.get(i).copied().unwrap_or(0)) + carry;
            out.push(s as u32);
            carry = s >> 32;
        }
        out.push(carry as u32);
        trim(&mut out);
        out
    }

    pub fn mul(a: &Big, b: &Big) -> Big {
        let mut out = vec![0u32; a.len() + b.len() + 1];
        for (i, x) in a.iter().enumerate() {
            let mut carry = 0u64;
            for (j, y) in b.iter().enumerate() {
                let t = u64::from(*x) * u64::from(*y) + u64::from(out[i + j]) + carry;
                out[i + j] = t as u32;
                carry = t >> 32;
            }
            out[i + b.len()] = carry as u32;
        }
        trim(&mut out);
        out
    }

    /// `a mod m`, one bit at a time.
    pub fn rem(a: &Big, m: &Big) -> Big {
        let mut r: Big = vec![0; m.len() + 1];
        for i in (0..a.len() * 32).rev() {
            let mut carry = (a[i / 32] >> (i % 32)) & 1;
            for limb in r.iter_mut() {
                let next = *limb >> 31;
                *limb = (*limb << 1) | carry;
                carry = next;
            }
            if cmp(&r, m) != Ordering::Less {
                sub_in_place(&mut r, m);
            }
        }
        trim(&mut r);
        r
    }

    /// `a - b mod m` for `a, b < m`.
    pub fn sub_mod(a: &Big, b: &Big, m: &Big) -> Big {
        let mut t = add(a, m);
        sub_in_place(&mut t, b);
        rem(&t, m)
    }

    pub fn modpow(base: &Big, exp: &Big, m: &Big) -> Big {
        let base = rem(base, m);
        let mut result: Big = vec![1];
        for i in (0..exp.len() * 32).rev() {
            result = rem(&mul(&result, &result), m);
            if (exp[i / 32] >> (i % 32)) & 1 == 1 {
                result = rem(&mul(&result, &base), m);
            }
        }
        result
    }
}

#[tokio::test]
async fn jwks_1024_bit_key_is_refused_with_a_token_it_really_signed() {
    use bignum::*;
    // The 1024-bit RS256 key pair of Wycheproof's json_web_key_test.json (group
    // keysize_too_small), read at test time from the vendored upstream file
    // (tests/vectors/wycheproof/): the private key is not copied into this test's source.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/wycheproof/json_web_key_test.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let weak = doc["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["private"]["keys"].as_array().unwrap())
        .find(|k| k["kid"] == "RS256_1024")
        .expect("the 1024-bit key of Wycheproof's JWK file")
        .clone();
    let part = |m: &str| URL_SAFE_NO_PAD.decode(weak[m].as_str().unwrap()).unwrap();
    let n_bytes = part("n");
    assert_eq!(n_bytes.len(), 128, "a 1024-bit modulus");
    let [n, e, p, q, dp, dq, qi] = ["n", "e", "p", "q", "dp", "dq", "qi"].map(|m| from_be(&part(m)));

    let header = json!({"alg": "RS256", "kid": "RS256_1024", "typ": "JWT"}).to_string();
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(alice().to_string().as_bytes()));
    let em = from_be(&emsa_pkcs1_sha256(signing_input.as_bytes(), 128));
    // RSA-CRT: s = m2 + q * (qi * (m1 - m2) mod p).
    let m1 = modpow(&em, &dp, &p);
    let m2 = modpow(&em, &dq, &q);
    let h = rem(&mul(&qi, &sub_mod(&m1, &rem(&m2, &p), &p)), &p);
    let s = add(&m2, &mul(&h, &q));
    assert_eq!(modpow(&s, &e, &n), em, "the signature verifies under the weak key");
    let token = format!("{signing_input}.{}", b64(&to_be(&s, 128)));

    let public = json!({"kty": "RSA", "kid": "RS256_1024", "use": "sig", "alg": "RS256",
        "n": weak["n"], "e": weak["e"]});
    let good = key("k1");
    let server =
        JwksServer::start_with_body(json!({"keys": [good.public_jwk(), public.clone()]}).to_string()).await;
    let gate = common::gate(&server.url(), clock());
    assert_eq!(check(&gate, &token).await.unwrap_err(), Rejection::InvalidToken(TokenError::UnknownKey));

    let server = JwksServer::start_with_body(json!({"keys": [public]}).to_string()).await;
    let gate = common::gate(&server.url(), clock());
    let err = check(&gate, &token).await.unwrap_err();
    assert!(matches!(err, Rejection::KeysUnavailable { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Time claims outside what access_jwt.rs tries (it covers strings, fractions, null, negatives,
// 1e30, booleans, arrays and u64::MAX): integers beyond u64, and integral values written in
// float or exponent syntax, which a lenient parser would read as numbers.

#[tokio::test]
async fn time_claims_beyond_u64_or_in_float_syntax_are_refused() {
    let rsa = key("k1");
    let server = JwksServer::start(&[&rsa]).await;
    let gate = common::gate(&server.url(), clock());
    let header = json!({"alg": "RS256", "kid": "k1", "typ": "JWT"}).to_string();
    let exp_ok = NOW + 600;
    for field in ["exp", "nbf", "iat"] {
        for literal in [
            "18446744073709551616".to_owned(),
            "340282366920938463463374607431768211456".to_owned(),
            "-9223372036854775809".to_owned(),
            format!("{exp_ok}.0"),
            format!("{exp_ok}e0"),
            "1.8e9".to_owned(),
            "1e400".to_owned(),
        ] {
            let mut claims = alice();
            claims.as_object_mut().unwrap().remove(field);
            let body = claims.to_string();
            let payload = format!("{{\"{field}\":{literal},{}", &body[1..]);
            let token = rsa.sign_raw(header.as_bytes(), payload.as_bytes());
            let err = check(&gate, &token).await.unwrap_err();
            assert!(
                matches!(err, Rejection::InvalidToken(TokenError::Claims(_))),
                "{field}={literal}: {err:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 10: a query credential is read like a cookie. Two `token` parameters with different
// values (names compared after percent-decoding) are refused: whichever copy the gate verified,
// code after it (a proxy, a handler's own query parser) may read the other.

mod query_credentials {
    use std::sync::Arc;
    use std::time::Duration;

    use super::common::{NOW, clock};
    use ztgate::identity::Requirement;
    use ztgate::identity::hmac_token::{KeyRing, SignedTokenAuth, TokenSource};
    use ztgate::{Gate, Principal, Rejection};

    /// A gate for unsubscribe tokens in `?token=`, and two genuine tokens it accepts.
    fn gate_and_tokens() -> (Gate, String, String) {
        let ring = KeyRing::random().unwrap();
        let hour = Duration::from_secs(3600);
        let alice = ring.mint("unsubscribe", "alice@example.com", NOW, hour).unwrap();
        let mallory = ring.mint("unsubscribe", "mallory@example.com", NOW, hour).unwrap();
        let mechanism =
            SignedTokenAuth::new(Arc::new(ring), "unsubscribe", TokenSource::Query("token".into()), clock());
        (Gate::new(Requirement::mechanism(mechanism)), alice, mallory)
    }

    async fn check(gate: &Gate, query: &str) -> Result<Principal, Rejection> {
        let req =
            http::Request::builder().uri(format!("/api/unsubscribe?{query}")).body(String::new()).unwrap();
        gate.check(&req).await.map(|v| v.into_inner())
    }

    async fn assert_ambiguous(gate: &Gate, query: &str) {
        let err = check(gate, query).await.unwrap_err();
        assert_eq!(err.code(), "ambiguous_credential", "{query}");
        assert_eq!(err.to_response::<String>().status(), 400, "{query}");
    }

    #[tokio::test]
    async fn query_token_sent_twice_with_different_values_is_refused() {
        let (gate, alice, mallory) = gate_and_tokens();
        assert_eq!(
            check(&gate, &format!("token={alice}")).await.unwrap().id(),
            "signed:unsubscribe:alice@example.com"
        );
        for query in [
            format!("token={alice}&token={mallory}"),
            format!("token={mallory}&token={alice}"),
            format!("token={alice}&token="),
            format!("token={alice}&token"),
            format!("token=&token={alice}"),
            format!("token={alice}&utm_source=mail&token=garbage"),
        ] {
            assert_ambiguous(&gate, &query).await;
        }
        // The same token twice (a client that repeats the link's query) is one credential.
        let twice = check(&gate, &format!("token={alice}&token={}", alice.replace('.', "%2E"))).await;
        assert_eq!(twice.unwrap().id(), "signed:unsubscribe:alice@example.com");
    }

    #[tokio::test]
    async fn percent_encoded_parameter_name_cannot_smuggle_a_second_token() {
        let (gate, alice, mallory) = gate_and_tokens();
        for query in [
            format!("token={alice}&%74oken={mallory}"),
            format!("%74oken={alice}&token={mallory}"),
            format!("token={alice}&%74%6F%6B%65%6E="),
            format!("tok%65n={mallory}&token={alice}"),
        ] {
            assert_ambiguous(&gate, &query).await;
        }
        // An encoded name alone is the parameter it decodes to.
        let encoded = check(&gate, &format!("%74%6f%6b%65%6e={alice}")).await.unwrap();
        assert_eq!(encoded.id(), "signed:unsubscribe:alice@example.com");
    }

    #[tokio::test]
    async fn a_query_flooded_with_parameters_is_414_before_any_token_is_read() {
        let (gate, alice, _) = gate_and_tokens();
        let flood: String = (0..64).map(|i| format!("p{i}=1&")).collect();
        let err = check(&gate, &format!("{flood}token={alice}")).await.unwrap_err();
        assert_eq!((err.code(), err.to_response::<String>().status().as_u16()), ("uri_too_long", 414));
        // Empty pairs are no parameters: `&&&` does not count.
        let ok = check(&gate, &format!("{}token={alice}", "&".repeat(500))).await;
        assert_eq!(ok.unwrap().id(), "signed:unsubscribe:alice@example.com");
    }
}
