//! ztgate's Access verifier built with each RS256 backend (jsonwebtoken by default, jwt-simple
//! with `--features jwt_simple`) must give the same verdict on the same token: accepted with the
//! same principal, or refused with the same `TokenError`.
//!
//! The backend is a cargo feature of ztgate, so one binary holds one backend: the comparison runs
//! across two builds of this target, over a corpus (`.ci/fuzz.sh` does both steps):
//!
//! 1. record: the default build, with `ZTGATE_VERDICTS_RECORD=<file>`, run once over a corpus
//!    (`-runs=0`), writes its key set and, for every token an input stands for (the `access_jwt`
//!    convention: the raw or signed token, and its mutation), the token and its verdict;
//! 2. check: the `jwt_simple` build, with `ZTGATE_VERDICTS_CHECK=<file>`, reads that file,
//!    verifies every token against the recorded key set itself and compares. It exits non-zero on
//!    any disagreement, printing the first ones.
//!
//! A difference is allowed only where `docs/hardening.md` documents one, and only failing
//! closed: jwt-simple refuses the signature (`Signature`) of a token whose header it does not
//! parse, whose `typ` is not `JWT` or `*+JWT`, that has a `salt`, or whose signature encoding its
//! own decoder refuses, where the default backend verified the signature. Each allowed difference
//! is counted by reason. The key set holds two 2048-bit keys with e = 65537, which both backends
//! build, so the key-size differences do not arise.
//!
//! Without either variable this is a plain fuzz target: every token through this build's
//! verifier, no panic.
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use ztgate::identity::AccessVerifier;
use ztgate_fuzz::*;

/// The RS256 backend of this build.
const BACKEND: &str = if cfg!(feature = "jwt_simple") { "jwt_simple" } else { "jsonwebtoken" };
/// First line of a verdict file.
const MAGIC: &str = "ztgate-verdicts v1";
/// Disagreements printed in full.
const SHOWN: usize = 10;

fn record_file() -> &'static Option<Mutex<std::fs::File>> {
    static FILE: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::var_os("ZTGATE_VERDICTS_RECORD")?;
        let mut file = std::fs::File::create(&path).expect("verdict file");
        writeln!(file, "{MAGIC} {BACKEND}").expect("verdict file");
        writeln!(file, "jwks {}", URL_SAFE_NO_PAD.encode(&keys().jwks)).expect("verdict file");
        Some(Mutex::new(file))
    })
}

fn init() {
    ztgate_fuzz::seeds::write_if_asked("verifier_backends");
    if let Some(path) = std::env::var_os("ZTGATE_VERDICTS_CHECK") {
        let text = std::fs::read_to_string(&path).expect("verdict file");
        std::process::exit(check(&text));
    }
    // Opened (and its key set written) before the first input runs.
    let _ = record_file();
}

fuzz_target!(init: init(), |data: &[u8]| {
    let Some(tokens) = access_tokens(data) else { return };
    for token in std::iter::once(tokens.token).chain(tokens.mutated) {
        let verdict = verdict(verifier(), &token);
        if let Some(file) = record_file() {
            let line = format!("{} {verdict}\n", URL_SAFE_NO_PAD.encode(&token));
            // Unbuffered: libFuzzer ends the process with `exit`, which flushes nothing of ours.
            file.lock().unwrap().write_all(line.as_bytes()).expect("verdict file");
        }
    }
});

/// The verdict as one line of text: `ok <principal>` or `err <TokenError>` (`Debug`, which
/// escapes line breaks).
fn verdict(verifier: &AccessVerifier, token: &str) -> String {
    match runtime().block_on(verifier.verify(token)) {
        Ok(principal) => format!("ok {principal:?}"),
        Err(e) => format!("err {e:?}"),
    }
}

/// Whether a verdict means the signature verified (accepted, or refused for its claims).
fn passed_signature(verdict: &str) -> bool {
    verdict.starts_with("ok ")
        || [
            "Issuer",
            "Audience",
            "TokenType",
            "MissingExpiry",
            "Expired",
            "NotYetValid",
            "IssuedInFuture",
            "LifetimeTooLong",
        ]
        .iter()
        .any(|e| verdict.strip_prefix("err ") == Some(e))
        || verdict.starts_with("err Claims(")
}

/// Why jwt-simple may refuse a token's signature that the default backend verifies (the
/// documented differences), or `None` when it may not.
fn outside_jwt_simple_domain(token: &str) -> Option<&'static str> {
    use jwt_simple::reexports::ct_codecs::{Base64UrlSafeNoPadding, Decoder as _};
    let Ok(metadata) = jwt_simple::token::Token::decode_metadata(token) else {
        return Some("header jwt-simple does not parse (member types, size)");
    };
    if metadata.signature_type().is_some_and(|t| {
        let t = t.to_uppercase();
        t != "JWT" && !t.ends_with("+JWT")
    }) {
        return Some("typ other than JWT or *+JWT");
    }
    let header = token.split('.').next().unwrap_or_default();
    let has_salt = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&h).ok())
        .is_none_or(|h| h.contains_key("salt"));
    if has_salt {
        return Some("salt in the header");
    }
    let signature = token.rsplit('.').next().unwrap_or_default();
    if Base64UrlSafeNoPadding::decode_to_vec(signature, None).is_err() {
        return Some("signature encoding jwt-simple's decoder refuses");
    }
    None
}

/// Compares this build's verdicts with a recorded file; the process exit code.
fn check(text: &str) -> i32 {
    let mut lines = text.lines();
    let recorded_by = match lines.next().and_then(|l| l.strip_prefix(MAGIC)) {
        Some(backend) => backend.trim().to_owned(),
        None => {
            eprintln!("verifier_backends: not a verdict file");
            return 2;
        }
    };
    if recorded_by == BACKEND {
        eprintln!(
            "verifier_backends: the file was recorded by this backend ({BACKEND}); check with the other build"
        );
        return 2;
    }
    let jwks = lines
        .next()
        .and_then(|l| l.strip_prefix("jwks "))
        .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let Some(jwks) = jwks else {
        eprintln!("verifier_backends: no key set in the verdict file");
        return 2;
    };
    let verifier = verifier_for(&jwks);
    let (mut compared, mut accepted, mut past_signature) = (0usize, 0usize, 0usize);
    let mut allowed: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut disagreements: Vec<String> = Vec::new();
    let mut inconsistent: Vec<String> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for line in lines {
        let Some((token_b64, theirs)) = line.split_once(' ') else {
            eprintln!("verifier_backends: malformed line {line:?}");
            return 2;
        };
        let token = match URL_SAFE_NO_PAD.decode(token_b64).ok().and_then(|t| String::from_utf8(t).ok()) {
            Some(token) => token,
            None => {
                eprintln!("verifier_backends: malformed token in line {line:?}");
                return 2;
            }
        };
        // The same token twice (corpora overlap) must have been judged the same way.
        if let Some(before) = seen.get(&token) {
            if before != theirs {
                inconsistent.push(format!("{recorded_by} judged {token:?} twice: {before} / {theirs}"));
            }
            continue;
        }
        seen.insert(token.clone(), theirs.to_owned());
        let ours = verdict(&verifier, &token);
        compared += 1;
        if ours == theirs {
            accepted += usize::from(ours.starts_with("ok "));
            past_signature += usize::from(passed_signature(&ours));
            continue;
        }
        let (default, simple) =
            if BACKEND == "jwt_simple" { (theirs, ours.as_str()) } else { (ours.as_str(), theirs) };
        if simple == "err Signature" && passed_signature(default) {
            if let Some(reason) = outside_jwt_simple_domain(&token) {
                *allowed.entry(reason).or_default() += 1;
                continue;
            }
        }
        disagreements.push(format!("{token:?}\n    jsonwebtoken: {default}\n    jwt_simple:   {simple}"));
    }
    let allowed_total: usize = allowed.values().sum();
    println!(
        "verifier_backends: {compared} tokens compared ({recorded_by} recorded, {BACKEND} checked): \
         {} equal ({accepted} accepted by both, {past_signature} past the signature), \
         {allowed_total} documented differences, {} disagreements",
        compared - allowed_total - disagreements.len(),
        disagreements.len()
    );
    for (reason, n) in &allowed {
        println!("    documented difference ({n}): jwt_simple refuses the signature: {reason}");
    }
    if compared == 0 {
        eprintln!("verifier_backends: the verdict file holds no token");
        return 1;
    }
    if disagreements.is_empty() && inconsistent.is_empty() {
        return 0;
    }
    for d in disagreements.iter().take(SHOWN) {
        eprintln!("verifier_backends: DISAGREEMENT {d}");
    }
    for d in inconsistent.iter().take(SHOWN) {
        eprintln!("verifier_backends: NOT DETERMINISTIC {d}");
    }
    1
}
