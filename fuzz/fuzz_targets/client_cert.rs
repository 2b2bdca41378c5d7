//! mTLS facts (`request::ClientCertFacts`) and the mechanism that judges them
//! (`identity::ClientCertAuth`).
//!
//! Byte 0: bit 0 picks the source (`cf-cert-*` headers, or `request.cf.tlsClientAuth` fields),
//! bit 1 `RequestLimits::trust_client_cert_headers`, bits 2-3 the pins (none, a fingerprint, a
//! subject DN, a subject DN of exactly 256 bytes). Headers: `(name byte, u16 BE length, value)`
//! entries among the seven `cf-cert-*` names and look-alikes. Fields: per field, a presence
//! byte, then a u16 BE length and the value (lossy UTF-8).
//!
//! Invariants: no panic; facts exist iff a `cf-cert-*` header does; `verified` is `Success`
//! only when the verified field, sent once, is exactly a documented success spelling (`1`,
//! `true`, `SUCCESS`, ASCII case-insensitive; headers trimmed), a repeated field makes the
//! certificate presented and not verified, `revoked` is `Some(false)` only
//! when its field is exactly `0` or `false`; names and serial are never longer than 256 bytes and
//! never differ from what was sent, so a cut value cannot match a pin; the fingerprint is kept
//! exactly when an independent model reads what was sent as a SHA-256 fingerprint (64 hex
//! digits or 32 `:`-separated pairs), as that model normalises it (64 lowercase hex), and is
//! flagged malformed exactly when something else was sent; with `trust_client_cert_headers` off,
//! `cf-cert-*` headers never reach the mechanism; `ClientCertAuth` verifies exactly the
//! presented, verified, explicitly unrevoked certificates with a well-formed fingerprint that
//! satisfy the pins (the fingerprint pin is written in colon form, upper case), every principal
//! it proves has a 64-lowercase-hex fingerprint, and it refuses every other presented one.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use ztgate::Principal;
use ztgate::identity::ClientCertAuth;
use ztgate::identity::{Attempt, Mechanism};
use ztgate::request::{CertVerification, ClientCertFacts, RequestFacts, RequestLimits};
use ztgate_fuzz::runtime;

const HEADER_NAMES: [&str; 10] = [
    "cf-cert-presented",
    "cf-cert-verified",
    "cf-cert-revoked",
    "cf-cert-fingerprint-sha256",
    "cf-cert-subject-dn",
    "cf-cert-issuer-dn",
    "cf-cert-serial",
    "cf-cert-other",
    "x-cf-cert-verified",
    "cf-certverified",
];
const FIELD_NAMES: [&str; 7] = [
    "certPresented",
    "certVerified",
    "certRevoked",
    "certFingerprintSHA256",
    "certSubjectDN",
    "certIssuerDN",
    "certSerial",
];
const FP: &str = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12"; // pragma: allowlist secret
const MAX_FIELD: usize = 256;

fn long_dn() -> String {
    format!("CN={}", "a".repeat(MAX_FIELD - 3))
}

fn mechanism(pins: u8) -> ClientCertAuth {
    match pins & 3 {
        0 => ClientCertAuth::new(),
        1 => ClientCertAuth::new().pin_fingerprints([colon_form(&FP.to_ascii_uppercase())]),
        2 => ClientCertAuth::new().pin_subject_dns(["CN=deployer,O=Acme"]),
        _ => ClientCertAuth::new().pin_subject_dns([long_dn()]),
    }
}

/// Whether a pin of `pins` holds for the values as sent.
fn pinned(pins: u8, fingerprint: &str, subject: Option<&str>) -> bool {
    match pins & 3 {
        0 => true,
        1 => fingerprint == FP,
        2 => subject == Some("CN=deployer,O=Acme"),
        _ => subject == Some(long_dn().as_str()),
    }
}

/// `AB:12:…`, the form `openssl x509 -fingerprint` prints.
fn colon_form(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// The model of a SHA-256 fingerprint: after trimming ASCII whitespace, 64 hex digits, or 95
/// characters where every third is `:` and the others hex digits; lowercased, colons removed.
fn fingerprint_model(sent: &str) -> Option<String> {
    let v = sent.trim_matches(|c: char| c.is_ascii_whitespace());
    let colons = v.len() == 95
        && v.bytes().enumerate().all(|(i, b)| if i % 3 == 2 { b == b':' } else { b.is_ascii_hexdigit() });
    let plain = v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit());
    (colons || plain).then(|| v.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase())
}

fn is_true(v: &str) -> bool {
    v == "1" || v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("success")
}

fn is_false(v: &str) -> bool {
    v == "0" || v.eq_ignore_ascii_case("false")
}

/// The seven fields as sent: `None` absent, `Some(None)` unusable (repeated, not text),
/// `Some(Some(v))` one value.
type Sent = [Option<Option<String>>; 7];

fn sent_from_headers(headers: &HeaderMap) -> Sent {
    std::array::from_fn(|i| {
        let mut all = headers.get_all(HEADER_NAMES[i]).iter();
        let first = all.next()?;
        if all.next().is_some() {
            return Some(None);
        }
        Some(first.to_str().ok().map(|v| v.trim().to_owned()))
    })
}

/// The model: a field's value if it was sent once as text.
fn one(sent: &Sent, i: usize) -> Option<&str> {
    sent[i].as_ref()?.as_deref()
}

/// Facts and sent values agree (the documented reading, fail closed).
fn check_facts(facts: &ClientCertFacts, sent: &Sent, repeated: bool) {
    if facts.verified == Some(CertVerification::Success) {
        let v = one(sent, 1).expect("Success without one verified field");
        assert!(is_true(v), "verified {v:?} read as Success");
    }
    match facts.revoked {
        Some(false) => {
            assert!(one(sent, 2).is_some_and(is_false), "revoked {:?} read as not revoked", sent[2])
        }
        Some(true) => assert!(sent[2].is_some()),
        None => {}
    }
    if facts.presented {
        assert!(sent[0].is_some() || repeated, "presented without a presented field");
    }
    if repeated {
        assert!(matches!(facts.verified, Some(CertVerification::Failed(_))), "a repeated field: {facts:?}");
    }
    let names = [(4, &facts.subject_dn), (5, &facts.issuer_dn), (6, &facts.serial)];
    for (i, value) in names {
        if let Some(value) = value {
            assert!(value.len() <= MAX_FIELD, "{} bytes kept", value.len());
            let sent = one(sent, i).expect("a value without one field");
            assert_eq!(value, sent, "field {} differs from what was sent", FIELD_NAMES[i]);
        }
    }
    if !repeated {
        let want = one(sent, 3).map(fingerprint_model);
        assert_eq!(facts.fingerprint_sha256, want.clone().flatten(), "fingerprint {:?}", sent[3]);
        assert_eq!(facts.fingerprint_malformed, matches!(want, Some(None)), "fingerprint {:?}", sent[3]);
    }
    if let Some(CertVerification::Failed(reason)) = &facts.verified {
        assert!(reason.len() <= MAX_FIELD);
    }
}

/// What `ClientCertAuth` must answer for facts read from `sent`.
fn check_attempt(attempt: &Attempt, facts: Option<&ClientCertFacts>, sent: &Sent, pins: u8) {
    let Some(facts) = facts else {
        return assert!(matches!(attempt, Attempt::NotPresent), "no facts, but {attempt:?}");
    };
    if !facts.presented {
        return assert!(matches!(attempt, Attempt::NotPresent), "not presented, but {attempt:?}");
    }
    let usable = facts.verified == Some(CertVerification::Success)
        && facts.revoked == Some(false)
        && facts.fingerprint_sha256.is_some()
        && !facts.fingerprint_malformed;
    match attempt {
        Attempt::Verified(Principal::ClientCert(p)) => {
            assert!(usable, "verified from unusable facts {facts:?}");
            // Judged on what was sent, not on what the facts kept.
            assert!(one(sent, 0).is_some_and(is_true) && one(sent, 1).is_some_and(is_true));
            assert!(one(sent, 2).is_some_and(is_false));
            let fp = fingerprint_model(one(sent, 3).expect("fingerprint"))
                .expect("a malformed fingerprint proved someone");
            assert!(
                p.fingerprint_sha256.len() == 64
                    && p.fingerprint_sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            );
            assert!(pinned(pins, &fp, one(sent, 4)), "pins {pins} hold for neither {fp:?} nor {:?}", sent[4]);
            assert_eq!(p.fingerprint_sha256, fp);
            // A name too long to keep whole is not shown cut.
            let subject = one(sent, 4).filter(|dn| dn.len() <= MAX_FIELD).unwrap_or_default();
            assert_eq!(p.subject_dn, subject);
        }
        Attempt::Verified(other) => panic!("ClientCertAuth proved {other:?}"),
        Attempt::NotPresent => panic!("a presented certificate is not mine: {facts:?}"),
        Attempt::Refused(_) => {
            if usable {
                let fp = facts.fingerprint_sha256.as_deref().unwrap_or_default();
                assert!(
                    !pinned(pins, fp, facts.subject_dn.as_deref()),
                    "refused a usable, pinned certificate"
                );
            }
        }
    }
}

fn attempt(mechanism: &ClientCertAuth, facts: &RequestFacts) -> Attempt {
    runtime().block_on(Mechanism::<ztgate::NoClaims>::attempt(mechanism, facts))
}

fuzz_target!(init: ztgate_fuzz::seeds::write_if_asked("client_cert"), |data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else { return };
    let trust = mode & 2 != 0;
    let pins = mode >> 2;
    let auth = mechanism(pins);
    let limits = RequestLimits { trust_client_cert_headers: trust, ..RequestLimits::default() };

    if mode & 1 == 0 {
        let mut headers = HeaderMap::new();
        while let Some((&name, tail)) = rest.split_first() {
            let len = usize::from(tail.first().copied().unwrap_or(0)) << 8 | usize::from(tail.get(1).copied().unwrap_or(0));
            let tail = tail.get(2..).unwrap_or_default();
            let (value, tail) = tail.split_at(len.min(tail.len()));
            rest = tail;
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(HeaderName::from_static(HEADER_NAMES[usize::from(name) % HEADER_NAMES.len()]), value);
            }
        }
        let sent = sent_from_headers(&headers);
        let facts = ClientCertFacts::from_cf_headers(&headers);
        assert_eq!(facts.is_some(), headers.keys().any(|k| k.as_str().starts_with("cf-cert-")));
        let repeated = HEADER_NAMES[..7].iter().any(|n| headers.get_all(*n).iter().nth(1).is_some());
        if let Some(facts) = &facts {
            check_facts(facts, &sent, repeated);
        }
        let Ok(request) = RequestFacts::from_parts(&Method::GET, "/admin", &headers, &limits) else { return };
        let outcome = attempt(&auth, &request);
        if trust {
            assert_eq!(request.client_cert(), facts.as_ref());
            check_attempt(&outcome, facts.as_ref(), &sent, pins);
        } else {
            // Untrusted hop: the headers are someone's claim, never facts.
            assert_eq!(request.client_cert(), None);
            assert!(matches!(outcome, Attempt::NotPresent), "cf-cert-* headers from an untrusted hop: {outcome:?}");
        }
    } else {
        let mut values: [Option<String>; 7] = Default::default();
        for value in &mut values {
            let Some((&present, tail)) = rest.split_first() else { break };
            let len = usize::from(tail.first().copied().unwrap_or(0)) << 8 | usize::from(tail.get(1).copied().unwrap_or(0));
            let tail = tail.get(2..).unwrap_or_default();
            let (bytes, tail) = tail.split_at(len.min(tail.len()));
            rest = tail;
            if present & 1 == 1 {
                *value = Some(String::from_utf8_lossy(bytes).into_owned());
            }
        }
        let facts = ClientCertFacts::from_tls_client_auth(|name| {
            let i = FIELD_NAMES.iter().position(|f| *f == name)?;
            values[i].as_deref()
        });
        let sent: Sent = std::array::from_fn(|i| values[i].clone().map(Some));
        check_facts(&facts, &sent, false);
        // The Workers adapter sets the facts whatever the header trust says.
        let Ok(request) = RequestFacts::from_parts(&Method::GET, "/admin", &HeaderMap::new(), &limits) else { return };
        let request = request.with_client_cert(Some(facts.clone()));
        check_attempt(&attempt(&auth, &request), Some(&facts), &sent, pins);
    }
});
