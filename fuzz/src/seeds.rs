//! Seed corpora, written by the fuzz targets themselves: run a target with
//! `ZTGATE_FUZZ_SEEDS=<dir>` (and `-runs=0`) and its init hook writes that target's seeds into
//! `<dir>` and exits, so no second build is needed (`.ci/fuzz.sh` does this when a corpus has no
//! seeds). Seeds hold tokens, claims and public JWKs only: the keys that sign the sample tokens
//! live in that process and are dropped when it ends. The HMAC tokens and webhook signatures
//! are made with the test-only secrets of `lib.rs`.

use std::path::Path;

use serde_json::{Value, json};
use ztgate::dev::{DevKey, jwks_json};

use crate::{AUD, NOW, TEAM};

/// The init hook of every target: writes `target`'s seeds and exits if `ZTGATE_FUZZ_SEEDS` is set.
pub fn write_if_asked(target: &str) {
    let Some(dir) = std::env::var_os("ZTGATE_FUZZ_SEEDS") else { return };
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).expect("seed directory");
    let mut count = 0;
    for (name, bytes) in seeds(target) {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed file");
        count += 1;
    }
    println!("{count} seeds for {target} written to {}", dir.display());
    std::process::exit(0);
}

/// A sign-mode input: mode byte, header, 0, payload, 0, mutation bytes.
fn sign_mode(mode: u8, header: &Value, payload: &str, mutation: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(header.to_string().as_bytes());
    out.push(0);
    out.extend_from_slice(payload.as_bytes());
    out.push(0);
    out.extend_from_slice(mutation);
    out
}

/// The seeds of one target, by name.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut write = |t: &str, name: &str, bytes: &[u8]| {
        if t == target {
            out.push((name.to_owned(), bytes.to_vec()));
        }
    };
    let key = DevKey::generate("k1").unwrap();
    let k1 = json!({"alg": "RS256", "kid": "k1", "typ": "JWT"});
    let user = format!(
        r#"{{"aud":["{AUD}"],"email":"alice@acme.com","exp":$+3600,"iat":$0,"nbf":$0,"iss":"{TEAM}","type":"app","identity_nonce":"n","sub":"s","country":"XX"}}"#
    );
    let service = format!(
        r#"{{"aud":"{AUD}","common_name":"ci.access","exp":$+600,"iat":$-10,"iss":"{TEAM}","sub":""}}"#
    );
    let claims: [(&str, String); 10] = [
        ("user", user.clone()),
        ("service", service),
        ("expired", user.replace("$+3600", "$-3600")),
        ("not-yet-valid", user.replace(r#""nbf":$0"#, r#""nbf":$+3600"#)),
        ("future-iat", user.replace(r#""iat":$0"#, r#""iat":$+3600"#)),
        ("wrong-iss", user.replace(TEAM, "https://evil.cloudflareaccess.com")),
        ("aud-string", user.replace(&format!(r#"["{AUD}"]"#), &format!(r#""{AUD}""#))),
        ("exp-string", user.replace("$+3600", r#""1800003600""#)),
        ("exp-float", user.replace("$+3600", "1800003600.5")),
        ("duplicate-email", user.replacen('{', r#"{"email":"eve@evil.com","#, 1)),
    ];
    let headers: [(&str, Value); 12] = [
        ("k1", k1.clone()),
        ("none", json!({"alg": "none", "kid": "k1"})),
        ("hs256", json!({"alg": "HS256", "kid": "k1", "typ": "JWT"})),
        ("crit", json!({"alg": "RS256", "kid": "k1", "crit": ["exp"]})),
        ("no-kid", json!({"alg": "RS256"})),
        ("typ-at-jwt", json!({"alg": "RS256", "kid": "k1", "typ": "at+jwt"})),
        // Where the two RS256 backends of ztgate may differ (verifier_backends): headers
        // jwt-simple reads more strictly than ztgate.
        ("typ-jose", json!({"alg": "RS256", "kid": "k1", "typ": "JOSE"})),
        ("typ-lowercase", json!({"alg": "RS256", "kid": "k1", "typ": "jwt"})),
        ("typ-number", json!({"alg": "RS256", "kid": "k1", "typ": 1})),
        ("salt", json!({"alg": "RS256", "kid": "k1", "salt": "AAAA"})),
        ("jwk-object", json!({"alg": "RS256", "kid": "k1", "jwk": {"kty": "RSA"}})),
        ("cty-null", json!({"alg": "RS256", "kid": "k1", "cty": null, "x5t": "x"})),
    ];
    for t in ["access_jwt", "differential_jwt", "verifier_backends"] {
        // Sign mode: k1 (mode 1), with each mutation kind (first mutation byte).
        for (name, payload) in &claims {
            write(t, &format!("sign-{name}"), &sign_mode(1, &k1, payload, &[0, 0, 7, 3]));
        }
        for (name, header) in &headers {
            write(t, &format!("sign-header-{name}"), &sign_mode(1, header, &user, &[]));
        }
        for op in 0..9u8 {
            write(t, &format!("mutate-{op}"), &sign_mode(1, &k1, &user, &[op, 0, 40, 5]));
        }
        write(t, "sign-k2", &sign_mode(7, &json!({"alg": "RS256", "kid": "k2"}), &user, &[]));
        write(t, "sign-impostor", &sign_mode(2, &k1, &user, &[]));
        // Raw mode: real-shaped tokens (signed by a key that is not the target's).
        let concrete = user.replace("$+3600", &(NOW + 3600).to_string()).replace("$0", &NOW.to_string());
        let token = key.sign_raw(k1.to_string().as_bytes(), concrete.as_bytes());
        write(t, "raw-user", &[&[0u8][..], token.as_bytes()].concat());
        let (h, rest) = token.split_once('.').unwrap();
        let p = rest.split_once('.').unwrap().0;
        write(t, "raw-alg-none", format!("\0{h}.{p}.").as_bytes());
        write(t, "raw-two-segments", format!("\0{h}.{p}").as_bytes());
    }

    // jwks_parse: a real document (raw mode) and structured choices (mode 1, 8 bytes a key).
    let other = DevKey::generate("k2").unwrap();
    write("jwks_parse", "raw-jwks", &[&[0u8][..], jwks_json(&[&key, &other]).as_bytes()].concat());
    let cloudflare_like = json!({
        "keys": [key.public_jwk(), other.public_jwk()],
        "public_cert": {"kid": "k1", "cert": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"},
        "public_certs": [{"kid": "k1", "cert": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"}],
    });
    write(
        "jwks_parse",
        "raw-cloudflare-shape",
        &[&[0u8][..], cloudflare_like.to_string().as_bytes()].concat(),
    );
    let good = [0u8, 0, 0, 1, 0, 0, 0, 2];
    let structured: [(&str, Vec<u8>); 6] = [
        ("good", [&[1u8][..], &good].concat()),
        ("two-good", [&[1u8][..], &good, &[0, 1, 2, 2, 2, 0x80, 1, 0]].concat()),
        ("duplicate-kid", [&[1u8][..], &good, &good].concat()),
        ("weak-and-bad-e", [&[1u8][..], &[0, 2, 0, 1, 0, 3, 0, 3], &[0, 0, 0, 1, 0, 0, 2, 3]].concat()),
        ("cap-1", [&[0x41u8][..], &good, &[0, 1, 0, 1, 0, 0x80, 0, 3]].concat()),
        ("leading-zeros", [&[1u8][..], &[0, 0, 2, 1, 2, 2, 5, 0]].concat()),
    ];
    for (name, bytes) in structured {
        write("jwks_parse", &format!("structured-{name}"), &bytes);
    }

    // request_facts: limits byte, length-prefixed path, then (name, length, value) entries with
    // names 0 = assertion header, 1 = cookie, 2 = cf-connecting-ip, 3 = cf-ipcountry.
    let entry = |name: u8, value: &str| [&[name, value.len() as u8][..], value.as_bytes()].concat();
    let path = |p: &str| [&[p.len() as u8][..], p.as_bytes()].concat();
    let facts: [(&str, Vec<u8>); 6] = [
        (
            "header-and-cookie",
            [vec![0], path("/admin"), entry(0, "h.h.h"), entry(1, "CF_Authorization=c.c.c")].concat(),
        ),
        ("empty-header", [vec![0], path("/"), entry(0, ""), entry(1, "CF_Authorization=c.c.c")].concat()),
        (
            "cookie-quoted",
            [vec![0], path("/x"), entry(1, "a=1; b=2"), entry(1, "CF_Authorization=\"t.t.t\"")].concat(),
        ),
        (
            "cookie-conflict",
            [vec![0], path("/x"), entry(1, "CF_Authorization=a; CF_Authorization=b")].concat(),
        ),
        ("two-headers", [vec![0], path("/x"), entry(0, "a.b.c"), entry(0, "a.b.c")].concat()),
        (
            "small-limits",
            [
                vec![0x3f],
                path("/\u{e9}\u{e9}"),
                entry(2, "203.0.113.9"),
                entry(3, "XX"),
                entry(1, &format!("CF_Authorization={}", "t".repeat(80))),
            ]
            .concat(),
        ),
    ];
    for (name, bytes) in facts {
        write("request_facts", name, &bytes);
    }

    hmac_token_seeds(&mut write);
    webhook_seeds(&mut write);
    client_cert_seeds(&mut write);
    out
}

/// `hmac_token`: raw tokens minted by the target's ring (mode 0), mint arguments (mode 1),
/// key specs (mode 2) and single keys (mode 3).
fn hmac_token_seeds(write: &mut impl FnMut(&str, &str, &[u8])) {
    let t = "hmac_token";
    let ring = crate::hmac_ring();
    let day = std::time::Duration::from_secs(86_400);
    let minted = ring.mint("unsubscribe", "alice@example.com", NOW, day).unwrap();
    let expired = ring.mint("unsubscribe", "alice@example.com", NOW - 2 * 86_400, day).unwrap();
    let other = ring.mint("magic-link", "bob", NOW, day).unwrap();
    // Choice byte 0: purpose "unsubscribe" at NOW.
    for (name, token) in [("raw-valid", &minted), ("raw-expired", &expired), ("raw-other-purpose", &other)] {
        write(t, name, &[&[0u8, 0][..], token.as_bytes()].concat());
    }
    write(t, "raw-padded-mac", &[&[0u8, 0][..], minted.as_bytes(), b"="].concat());
    write(t, "raw-shape", b"\0\0v1.k1.1800000000.YWxpY2U.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let mint = |clock: u8, ttl: u32, purpose: &str, subject: &str, mutation: &[u8]| {
        let mut out = vec![1u8, clock];
        out.extend_from_slice(&ttl.to_be_bytes());
        out.push(purpose.len() as u8);
        out.extend_from_slice(purpose.as_bytes());
        out.extend_from_slice(&(subject.len() as u16).to_be_bytes());
        out.extend_from_slice(subject.as_bytes());
        out.extend_from_slice(mutation);
        out
    };
    write(
        t,
        "mint-day",
        &mint(0, 86_400, "unsubscribe", "alice@example.com", &[0xc0, 3, b'x', 0x40, 0, b'A']),
    );
    write(t, "mint-max-ttl", &mint(0, 400 * 86_400, "session:v2", "user-42", &[0x80, 50, b'A', 0, 40, 0]));
    write(t, "mint-over-max-ttl", &mint(0, 400 * 86_400 + 1, "session:v2", "user-42", &[]));
    write(t, "mint-overflow", &mint(4, 2, "magic-link", "x", &[]));
    write(t, "mint-nul-subject", &mint(1, 1, "magic-link", "a\0b\u{e9}", &[0xff, 0xff, b'-']));
    write(t, "mint-long-subject", &mint(0, 60, "p", &"s".repeat(1024), &[0xc5, 0x80, b'.']));
    write(t, "mint-bad-purpose", &mint(0, 60, "a/b", "s", &[]));
    let spec = |s: &str| [&[2u8][..], s.as_bytes()].concat();
    let k = "0123456789abcdef0123456789abcdef"; // pragma: allowlist secret
    write(t, "parse-two", &spec(&format!("2025-06:{k},2025-01:{k}x")));
    write(t, "parse-trailing-newline", &spec(&format!("only:{k}\n")));
    write(t, "parse-colon-in-secret", &spec(&format!("a:{k}:x, b :{k}")));
    write(t, "parse-duplicate", &spec(&format!("a:{k},a:{k}")));
    write(t, "parse-empty-entry", &spec(&format!("a:{k},,b:{k}")));
    write(t, "parse-short", &spec("a:short"));
    write(t, "key-binary", &[&[3u8, 3][..], b"bin", &[0u8, 0xff, 0x80].repeat(11)].concat());
}

/// `webhook_headers`: deliveries signed the way each provider does, sent raw (mode bit 2
/// clear: `(name, length, value)` headers, 0xff, body) and as sign-mode arguments.
fn webhook_seeds(write: &mut impl FnMut(&str, &str, &[u8])) {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use hmac::{Hmac, Mac};

    let t = "webhook_headers";
    let mac = |key: &[u8], parts: &[&[u8]]| {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes()
    };
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let raw = |mode: u8, headers: &[(u8, &str)], body: &[u8]| {
        let mut out = vec![mode];
        for (name, value) in headers {
            out.push(*name);
            out.push(value.len() as u8);
            out.extend_from_slice(value.as_bytes());
        }
        out.push(0xff);
        out.extend_from_slice(body);
        out
    };
    let body = br#"{"type":"email.delivered","data":{"id":"4ef9"}}"#;
    let ts = (NOW - 5).to_string();
    let svix_sig = format!(
        "v1,{}",
        STANDARD.encode(mac(&crate::SVIX_KEY, &[b"msg_2x", b".", ts.as_bytes(), b".", body]))
    );
    write(t, "raw-svix", &raw(0, &[(0, "msg_2x"), (1, &ts), (2, &svix_sig)], body));
    write(
        t,
        "raw-standard-webhooks",
        &raw(1, &[(3, "msg_2x"), (4, &ts), (5, &format!("v1,AAAA {svix_sig}"))], body),
    );
    let gh = format!("sha256={}", hex(&mac(crate::GITHUB_SECRET.as_bytes(), &[body])));
    write(t, "raw-github", &raw(2, &[(6, &gh), (9, "72d3162e-cc78-11e3-81ab-4c9367dc0958")], body));
    let st = hex(&mac(crate::STRIPE_SECRET.as_bytes(), &[ts.as_bytes(), b".", body]));
    write(t, "raw-stripe", &raw(3, &[(7, &format!("t={ts},v1={st},v0={st}"))], body));
    write(t, "raw-stripe-two-t", &raw(3, &[(7, &format!("t={ts},t={ts},v1={st}"))], body));
    write(t, "raw-empty", &raw(0, &[], b""));

    let signed = |mode: u8, offset: i16, flags: u8, id: &[u8], body: &[u8], mutation: &[u8]| {
        let mut out = vec![mode | 4];
        out.extend_from_slice(&offset.to_be_bytes());
        out.push(flags);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(mutation);
        out
    };
    let all_ops = [0u8, 3, 1, 1, 0, 9, 2, 2, 0, 3, 1, 7, 4, 0, 0, 5, 20, b'A', 5, 7, b'0'];
    for (mode, name) in [(0u8, "svix"), (1, "standard-webhooks"), (2, "github"), (3, "stripe")] {
        write(t, &format!("sign-{name}"), &signed(mode, -5, 0, b"msg_2x", body, &all_ops));
        write(t, &format!("sign-{name}-flags"), &signed(mode, 0, 0x0f, b"msg_2x", body, &all_ops));
        write(t, &format!("sign-{name}-edge-old"), &signed(mode, -300, 0, b"msg_1", b"{}", &[]));
        write(t, &format!("sign-{name}-too-old"), &signed(mode, -301, 0, b"msg_1", b"{}", &[]));
        write(t, &format!("sign-{name}-edge-future"), &signed(mode, 300, 0, b"msg_1", b"{}", &[]));
        write(t, &format!("sign-{name}-tolerance-1"), &signed(mode | 8, 2, 0, b"msg_1", b"", &all_ops));
        write(t, &format!("sign-{name}-body-cap"), &signed(mode | 24, 0, 0, b"msg_1", &[b'x'; 16], &all_ops));
    }
    write(t, "sign-svix-dotted-id", &signed(0, 0, 0, b"msg.1", body, &[]));
    write(t, "sign-svix-empty-id", &signed(0, 0, 0, b"", body, &[]));
}

/// `client_cert`: Cloudflare-shaped header sets and `tlsClientAuth` field sets.
fn client_cert_seeds(write: &mut impl FnMut(&str, &str, &[u8])) {
    let t = "client_cert";
    let fp = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12"; // pragma: allowlist secret
    let entries = |mode: u8, fields: &[(u8, &str)]| {
        let mut out = vec![mode];
        for (name, value) in fields {
            out.push(*name);
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out
    };
    let good: [(u8, &str); 6] = [
        (0, "true"),
        (1, "true"),
        (2, "false"),
        (3, fp),
        (4, "CN=deployer,O=Acme"),
        (5, "CN=Acme Client CA"),
    ];
    for pins in 0..4u8 {
        write(t, &format!("headers-trusted-pins-{pins}"), &entries(2 | pins << 2, &good));
    }
    write(t, "headers-untrusted", &entries(0, &good));
    let failed = [(0, "1"), (1, "FAILED:unable to get local issuer certificate"), (2, "0"), (3, fp)];
    write(t, "headers-failed", &entries(2, &failed));
    write(t, "headers-revoked", &entries(2, &[(0, "1"), (1, "SUCCESS"), (2, "1"), (3, fp)]));
    write(t, "headers-unknown-revocation", &entries(2, &[(0, "1"), (1, " success "), (3, fp), (6, "0a1b")]));
    write(t, "headers-not-presented", &entries(2, &[(0, "0"), (1, "NONE")]));
    write(t, "headers-look-alikes", &entries(2, &[(7, "1"), (8, "1"), (9, "1")]));
    // Fields: presence byte, u16 length, value; in FIELD_NAMES order.
    let fields = |mode: u8, values: &[Option<&str>]| {
        let mut out = vec![mode];
        for v in values {
            out.push(u8::from(v.is_some()));
            let v = v.unwrap_or_default();
            out.extend_from_slice(&(v.len() as u16).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    };
    let workers = [
        Some("1"),
        Some("SUCCESS"),
        Some("0"),
        Some(fp),
        Some("CN=deployer,O=Acme"),
        Some("CN=CA"),
        Some("01"),
    ];
    for pins in 0..4u8 {
        write(t, &format!("fields-pins-{pins}"), &fields(1 | pins << 2, &workers));
    }
    write(
        t,
        "fields-failed",
        &fields(1, &[Some("1"), Some("FAILED:certificate has expired"), Some("0"), Some(fp)]),
    );
    write(t, "fields-absent", &fields(1, &[None, None, None, None, None, None, None]));
}
