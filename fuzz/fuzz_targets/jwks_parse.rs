//! `KeySet::parse` on arbitrary bytes, and on JWK sets built from structured choices.
//!
//! Modes (byte 0): raw document bytes; or 8 bytes per JWK choosing `kty`, `kid`, `use`, `alg`,
//! `key_ops`, `n`, `e` and extra members among valid, weak, malformed and look-alike values.
//! Invariants: no panic; every kept key satisfies the filter rules (restated here) and has a
//! kid no other accepted key has; every such key is kept when the cap allows; a kept real key
//! verifies its own signature.
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use ztgate::__private::KeySet;
use ztgate_fuzz::*;

const JWT_SIMPLE: bool = cfg!(feature = "jwt_simple");

struct Fixture {
    /// Real moduli (k1, k2) and a signed (signing input, signature) for each.
    real: [(Vec<u8>, String, String); 2],
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let make = |key: &ztgate::dev::DevKey| {
            let token = key.sign(&json!({"sub": "jwks_parse"}));
            let (input, sig) = token.rsplit_once('.').unwrap();
            (modulus(key), input.to_owned(), sig.to_owned())
        };
        Fixture { real: [make(&keys().k1), make(&keys().k2)] }
    })
}

fn odd_modulus(bits: usize) -> Vec<u8> {
    let mut n = vec![0xc5u8; bits.div_ceil(8)];
    let spare = n.len() * 8 - bits;
    n[0] = (0x80 | 0x45) >> spare;
    let last = n.len() - 1;
    n[last] |= 1;
    n
}

fn pick<T: Clone>(options: &[T], byte: u8) -> T {
    options[usize::from(byte) % options.len()].clone()
}

/// One JWK from 8 choice bytes; absent members are `None`.
fn jwk(c: &[u8; 8]) -> Value {
    let f = fixture();
    let mut m = serde_json::Map::new();
    let mut set = |name: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(name.to_owned(), v);
        }
    };
    let s = |v: &str| Some(json!(v));
    set(
        "kty",
        pick(&[s("RSA"), s("RSA"), s("RSA"), s("EC"), s("oct"), s("rsa"), s(""), Some(json!(1))], c[0]),
    );
    let long = "k".repeat(257);
    let max = "k".repeat(256);
    set(
        "kid",
        pick(&[s("k1"), s("k2"), s("k3"), s("k1"), s(""), s(&long), s(&max), Some(json!(7)), None], c[1]),
    );
    set("use", pick(&[None, None, s("sig"), s("enc"), s("SIG"), Some(Value::Null), Some(json!(1))], c[2]));
    set(
        "alg",
        pick(
            &[None, s("RS256"), s("RS256"), s("RS512"), s("HS256"), s("none"), s("rs256"), Some(Value::Null)],
            c[3],
        ),
    );
    set(
        "key_ops",
        pick(
            &[
                None,
                None,
                Some(json!(["verify"])),
                Some(json!(["sign"])),
                Some(json!([])),
                Some(json!(["sign", "verify"])),
                s("verify"),
                Some(Value::Null),
            ],
            c[4],
        ),
    );
    let real = &f.real[usize::from(c[5] >> 7)].0;
    let with_zero = [&[0u8][..], real].concat();
    let n = match c[5] % 14 {
        0 | 1 => s(&b64(real)),
        2 => s(&b64(&with_zero)),
        3 => s(&b64(&odd_modulus(1024))),
        4 => s(&b64(&odd_modulus(2047))),
        5 => s(&b64(&odd_modulus(8192))),
        6 => s(&b64(&odd_modulus(8193))),
        7 => s(&b64(&{
            let mut even = real.clone();
            *even.last_mut().unwrap() &= 0xfe;
            even
        })),
        8 => s(""),
        9 => s(STANDARD.encode(real).trim_end_matches('=')),
        10 => s(&format!("{}==", b64(real))),
        11 => Some(json!(5)),
        12 => None,
        _ => s(&b64(&odd_modulus(4096))),
    };
    set("n", n);
    let e = pick(
        &[
            s("AQAB"),
            s("AQAB"),
            s("AQ"),
            s("Aw"),
            s("Ag"),
            s("AAEAAQ"),
            s("AQAAAAE"),
            s("_____w"),
            s(""),
            None,
            s("AQAB="),
        ],
        c[6],
    );
    set("e", e);
    match c[7] % 4 {
        0 => set("x5c", Some(json!(["MIIB"]))),
        1 => set("public_cert", Some(json!({"kid": "k1", "cert": "-----BEGIN CERTIFICATE-----"}))),
        _ => {}
    }
    Value::Object(m)
}

/// The filter rules, restated: `Some(kid)` if ztgate may keep this JWK. A `use` or `alg` that
/// is present must be a string (`null` is refused); a `null` `key_ops` counts as absent.
fn passes_filter(jwk: &Value) -> Option<String> {
    let optional_str = |name: &str| match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(()),
    };
    let kid = jwk.get("kid")?.as_str()?;
    let (n, e) = (jwk.get("n")?.as_str()?, jwk.get("e")?.as_str()?);
    if jwk.get("kty")?.as_str()? != "RSA" || kid.is_empty() || kid.len() > 256 {
        return None;
    }
    if !matches!(optional_str("use").ok()?, None | Some("sig"))
        || !matches!(optional_str("alg").ok()?, None | Some("RS256"))
    {
        return None;
    }
    match jwk.get("key_ops") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ops)) => {
            let ops: Option<Vec<&str>> = ops.iter().map(Value::as_str).collect();
            if !ops?.contains(&"verify") {
                return None;
            }
        }
        Some(_) => return None,
    }
    let n = URL_SAFE_NO_PAD.decode(n).ok()?;
    let e = URL_SAFE_NO_PAD.decode(e).ok()?;
    let n: Vec<u8> = n.into_iter().skip_while(|b| *b == 0).collect();
    let e: Vec<u8> = e.into_iter().skip_while(|b| *b == 0).collect();
    let bits = (n.len() * 8).checked_sub(n.first()?.leading_zeros() as usize)?;
    let ok = (2048..=8192).contains(&bits)
        && n.last()? & 1 == 1
        && !e.is_empty()
        && e.len() <= 4
        && e.last()? & 1 == 1
        && e != [1];
    // The jwt_simple backend builds only 2048–4096-bit keys with e = 65537.
    let backend_ok = !JWT_SIMPLE || (bits <= 4096 && e == [1, 0, 1]);
    (ok && backend_ok).then(|| kid.to_owned())
}

fuzz_target!(init: ztgate_fuzz::seeds::write_if_asked("jwks_parse"), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let max_keys = [64, 1, 2, 3][usize::from(mode >> 6)];
    if mode % 2 == 0 {
        if let Ok(set) = KeySet::parse(rest, max_keys) {
            assert!((1..=max_keys).contains(&set.len()), "{} keys kept with a cap of {max_keys}", set.len());
        }
        return;
    }
    let jwks: Vec<Value> = rest.chunks_exact(8).take(16).map(|c| jwk(c.try_into().unwrap())).collect();
    let body = json!({ "keys": jwks }).to_string();
    let parsed = KeySet::parse(body.as_bytes(), max_keys);

    let accepted: Vec<String> = jwks.iter().filter_map(passes_filter).collect();
    let unique: Vec<&String> =
        accepted.iter().filter(|k| accepted.iter().filter(|o| o == k).count() == 1).collect();
    let kids: std::collections::BTreeSet<&str> = jwks.iter().filter_map(|j| j["kid"].as_str()).collect();
    for kid in kids {
        let kept = parsed.as_ref().is_ok_and(|set| set.get(kid).is_some());
        let allowed = unique.iter().any(|k| k.as_str() == kid);
        assert!(!kept || allowed, "kept kid {kid:?}, which the rules refuse or which is duplicated: {body}");
        if allowed && accepted.len() <= max_keys {
            assert!(kept, "dropped kid {kid:?}, which the rules allow: {body}");
        }
        if kept {
            // A kept key built from a real modulus and e = 65537 verifies that key's signature.
            let jwk = jwks.iter().find(|j| passes_filter(j).as_deref() == Some(kid)).unwrap();
            let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
            let n: Vec<u8> = n.into_iter().skip_while(|b| *b == 0).collect();
            let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
            let e: Vec<u8> = e.into_iter().skip_while(|b| *b == 0).collect();
            if let Some((_, input, sig)) = fixture().real.iter().find(|(real, _, _)| *real == n)
                && e == [1, 0, 1]
            {
                let key = parsed.as_ref().unwrap().get(kid).unwrap();
                assert!(
                    key.verify(input.as_bytes(), sig),
                    "kept key {kid:?} does not verify its own signature"
                );
            }
        }
    }
    if unique.is_empty() {
        assert!(parsed.is_err(), "a set with no usable key parsed: {body}");
    } else if accepted.len() <= max_keys {
        assert!(parsed.is_ok(), "a set with a usable key failed: {parsed:?} {body}");
    }
});
