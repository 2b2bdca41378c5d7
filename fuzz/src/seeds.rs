//! Seed corpora, written by the fuzz targets themselves: run a target with
//! `ZTGATE_FUZZ_SEEDS=<dir>` (and `-runs=0`) and its init hook writes that target's seeds into
//! `<dir>` and exits, so no second build is needed (`.ci/fuzz.sh` does this when a corpus has no
//! seeds). Seeds hold tokens, claims and public JWKs only: the keys that sign the sample tokens
//! live in that process and are dropped when it ends.

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
    let headers: [(&str, Value); 6] = [
        ("k1", k1.clone()),
        ("none", json!({"alg": "none", "kid": "k1"})),
        ("hs256", json!({"alg": "HS256", "kid": "k1", "typ": "JWT"})),
        ("crit", json!({"alg": "RS256", "kid": "k1", "crit": ["exp"]})),
        ("no-kid", json!({"alg": "RS256"})),
        ("typ-at-jwt", json!({"alg": "RS256", "kid": "k1", "typ": "at+jwt"})),
    ];
    for t in ["access_jwt", "differential_jwt"] {
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
    out
}
