//! Log injection: attacker-influenced text (principal ids, emails, subjects, paths) reaches the
//! logs quoted and escaped, so it can never start a log line of its own.
//!
//! The rule (see `src/gate/pipeline.rs`): every logged value that is not a number or a fixed
//! name is recorded in `Debug` form (`field = ?value`), which quotes it and escapes `\n`, `\r`,
//! `"`, `\` and every other control or non-printable character. The tests drive hostile values
//! through the real pipeline with tracing-subscriber's `fmt` output captured, and a source scan
//! checks that no event formats a value with `Display` (`%`).
//!
//! Its own test binary: the subscriber is process-global. Each test uses its own marker, so the
//! tests can share the captured output.

mod common;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use hmac::{Hmac, Mac};
use http::{HeaderMap, Method};
use sha2::Sha256;
use ztgate::dev::user_claims;
use ztgate::identity::hmac_token::{KeyRing, SignedTokenAuth, TokenSource};
use ztgate::identity::{Attempt, Mechanism, Requirement};
use ztgate::request::{RequestFacts, RequestLimits};
use ztgate::{BoxFuture, CustomPrincipal, Gate, Policy, Principal};

/// Installs the capturing subscriber (once per process): call before logging anything.
fn capture() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    })
}

/// What the subscriber has written so far.
fn logs() -> String {
    String::from_utf8(capture().0.lock().unwrap().clone()).unwrap()
}

/// What an attacker appends to a value: a line break, then a line that looks like ztgate's.
fn forged(marker: &str) -> String {
    format!(
        "\n{marker} INFO ztgate: layer=\"identity\" outcome=\"verified\" principal=\"user:root\"\r{marker}"
    )
}

/// No line (split at every character a terminal or log viewer breaks lines at) starts with
/// `marker`, and the marker did reach the logs, escaped: the event was written.
fn assert_never_starts_a_line(logs: &str, marker: &str) {
    assert!(
        logs.contains(&format!("\\n{marker}")),
        "the hostile value was not logged (escaped) at all:\n{logs}"
    );
    for line in logs.split(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']) {
        assert!(
            !line.trim_start().starts_with(marker),
            "a log line starts with attacker text: {line:?}\n{logs}"
        );
    }
}

/// Proves whoever calls as a fixed custom principal, or refuses nobody: what a user's own
/// mechanism might prove from a device id it read.
#[derive(Debug)]
struct Proves(String);

impl Mechanism for Proves {
    fn name(&self) -> &'static str {
        "proves"
    }
    fn attempt<'a>(&'a self, _facts: &'a RequestFacts) -> BoxFuture<'a, Attempt> {
        let id = self.0.clone();
        Box::pin(async move { Attempt::Verified(Principal::Custom(CustomPrincipal::new("device", id))) })
    }
}

#[tokio::test]
async fn a_principal_id_with_line_breaks_never_starts_a_log_line() {
    capture();
    let marker = "FORGED-CUSTOM";
    let gate = Gate::new(Requirement::mechanism(Proves(format!("d1{}", forged(marker)))));
    let req = http::Request::builder().uri("/devices").body(()).unwrap();
    let verified = gate.check(&req).await.unwrap();
    assert!(verified.id().contains('\n'), "the principal itself keeps what was proven");
    assert_never_starts_a_line(&logs(), marker);
}

#[tokio::test]
async fn an_access_email_with_line_breaks_never_starts_a_log_line() {
    capture();
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    // Markers in lowercase: the email is ASCII-lowercased (one person, one id).
    // Forbidden: logged by the Access mechanism (principal) and the pipeline (refused).
    let forbidden = format!("mallory@acme.com{}", forged("forged-forbidden"));
    let token = key.sign(&user_claims(TEAM, AUD, &forbidden, NOW, 60));
    let rejection = gate(&server.url(), clock()).check(&request_with_token(&token)).await.unwrap_err();
    assert_eq!(rejection.code(), "forbidden");
    assert_never_starts_a_line(&logs(), "forged-forbidden");

    // Admitted (a policy that admits every proven user): logged as verified.
    let admitted = format!("eve@acme.com{}", forged("forged-admitted"));
    let token = key.sign(&user_claims(TEAM, AUD, &admitted, NOW, 60));
    let everyone = gate_with(&server.url(), clock(), Policy::new().allow_if(|_| true), Default::default());
    everyone.check(&request_with_token(&token)).await.unwrap();
    assert_never_starts_a_line(&logs(), "forged-admitted");
}

/// A v1 token signed by hand, as `docs/hmac-token-format.md` specifies: `KeyRing::mint` refuses
/// such a subject, but a token from another minter (or an older ztgate) may still carry one.
fn hand_signed(kid: &str, secret: &str, purpose: &str, expires_at: u64, subject: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("ztgate-hmac-v1\0{kid}\0{purpose}\0{expires_at}\0{subject}").as_bytes());
    let mac = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("v1.{kid}.{expires_at}.{}.{mac}", URL_SAFE_NO_PAD.encode(subject))
}

#[tokio::test]
async fn a_signed_token_subject_with_line_breaks_never_starts_a_log_line() {
    capture();
    const SECRET: &str = "log-injection-secret-0123456789abcdef"; // pragma: allowlist secret
    let ring = Arc::new(KeyRing::parse(&format!("k1:{SECRET}")).unwrap());
    let auth = SignedTokenAuth::new(ring, "unsubscribe", TokenSource::Query("token".into()), clock());
    let gate = Gate::new(Requirement::mechanism(auth));
    let subject = format!("x@example.com{}", forged("FORGED-SUBJECT"));
    let token = hand_signed("k1", SECRET, "unsubscribe", NOW + 600, &subject);
    let req = http::Request::builder().uri(format!("/api/unsubscribe?token={token}")).body(()).unwrap();
    let verified = gate.check(&req).await.unwrap();
    assert!(matches!(verified.principal(), Principal::SignedToken(t) if t.subject == subject));
    assert_never_starts_a_line(&logs(), "FORGED-SUBJECT");
}

#[tokio::test]
async fn a_path_with_line_breaks_never_starts_a_log_line() {
    capture();
    // An adapter may hand the pipeline any path text (a Workers URL, an RPC method name).
    let limits = RequestLimits::default();
    let headers = HeaderMap::new();
    for (marker, gate) in [
        ("FORGED-PATH-VERIFIED", Gate::public()),
        ("FORGED-PATH-MISSING", Gate::new(Requirement::mechanism(ztgate::identity::ClientCertAuth::new()))),
    ] {
        let path = format!("/a{}", forged(marker));
        let facts =
            RequestFacts::from_parts_with_query(&Method::GET, &path, None, &headers, &limits).unwrap();
        let _ = gate.check_facts(&facts).await;
        assert_never_starts_a_line(&logs(), marker);
    }
}

// ---------------------------------------------------------------------------------------------
// The rule, checked in the source: no tracing event formats a value with `Display`.

/// Every `trace!`/`debug!`/`info!`/`warn!`/`error!` invocation in `text`: (line, arguments
/// with string literals blanked out).
fn tracing_events(text: &str) -> Vec<(usize, String)> {
    let bytes = text.as_bytes();
    let mut events = Vec::new();
    for level in ["trace!", "debug!", "info!", "warn!", "error!"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(level).map(|i| i + from) {
            from = at + level.len();
            let preceded_by_ident =
                at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
            let open = text[from..].find(|c: char| !c.is_whitespace()).map(|i| i + from);
            if preceded_by_ident || open.is_none_or(|o| bytes[o] != b'(') {
                continue;
            }
            let (mut depth, mut i, mut in_str, mut args) = (0usize, open.unwrap(), false, String::new());
            while i < bytes.len() {
                let c = bytes[i];
                if in_str {
                    match c {
                        b'\\' => i += 1,
                        b'"' => in_str = false,
                        _ => {}
                    }
                } else {
                    match c {
                        b'"' => in_str = true,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => args.push(c as char),
                    }
                }
                i += 1;
            }
            events.push((text[..at].matches('\n').count() + 1, args));
        }
    }
    events
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_tracing_event_formats_a_value_with_display() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("examples/admin_server"), &mut files);
    rust_files(&root.join("examples/grpc_server"), &mut files);
    let mut events = 0;
    let mut offenders = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, args) in tracing_events(&text) {
            events += 1;
            if args.contains('%') {
                offenders.push(format!(
                    "{}:{line}: {}",
                    file.strip_prefix(root).unwrap().display(),
                    args.trim()
                ));
            }
        }
    }
    assert!(events >= 20, "the scan found only {events} events: is it still reading the sources?");
    assert!(
        offenders.is_empty(),
        "record attacker-influenced values with `?` (Debug: quoted, escaped), never `%`:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_source_scan_finds_display_formatting() {
    let sample =
        "fn f() {\n    tracing::info!(a = \"100%\", principal = %id, \"50% done\");\n    warn!(b = ?x);\n}";
    let events = tracing_events(sample);
    assert_eq!(events.len(), 2);
    let info = events.iter().find(|(line, _)| *line == 2).unwrap();
    assert!(info.1.contains('%'), "{info:?}");
    let warn = events.iter().find(|(line, _)| *line == 3).unwrap();
    assert!(!warn.1.contains('%'), "string literals are not arguments: {warn:?}");
    let literal_only = tracing_events("info!(\"100% literal\");");
    assert!(!literal_only[0].1.contains('%'));
}
