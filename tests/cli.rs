//! The `ztgate` binary, run as a user runs it: arguments, environment and stdin in; stdout,
//! stderr and the exit code out. Keys are made at test time and served by a JWKS server on
//! 127.0.0.1.

mod common;

use std::process::Output;

use common::*;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use ztgate::dev::{DevKey, jwks_json, service_claims, user_claims};
use ztgate::identity::hmac_token::KeyRing;
use ztgate::identity::webhook::WebhookVerifier;

const BIN: &str = env!("CARGO_BIN_EXE_ztgate");
/// 40 bytes: long enough for every scheme's minimum. Made up for this test.
const SECRET: &str = "test-only-secret-0123456789abcdefghijklm"; // pragma: allowlist secret

/// Runs the binary with `args`, environment `envs` (nothing else inherited that matters) and
/// `stdin`.
async fn run(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("ZTGATE_HMAC_KEYS")
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("the ztgate binary starts");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    child.wait_with_output().await.unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn now() -> u64 {
    ztgate::clock::unix_now()
}

fn user_token(key: &DevKey, aud: &str, ttl: u64) -> String {
    key.sign(&user_claims(TEAM, aud, "alice@example.com", now(), ttl))
}

/// An error is exactly one line on stderr, prefixed, with nothing on stdout.
fn assert_one_line_error(out: &Output) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.starts_with("ztgate: ") && err.ends_with('\n') && err.matches('\n').count() == 1, "{err:?}");
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn verify_admits_a_valid_token_read_from_stdin_and_names_the_principal() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let args = ["verify", "--team", TEAM, "--aud", AUD, "--certs-url", &server.url(), "-"];
    let out = run(&args, &[], &user_token(&key, AUD, 600)).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "valid: user:alice@example.com\n");
    assert_eq!(server.fetches(), 1);

    let mut json_args = args.to_vec();
    json_args.insert(0, "--json");
    let service = key.sign(&service_claims(TEAM, AUD, "abc.access", now(), 600));
    let out = run(&json_args, &[], &service).await;
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc, json!({"valid": true, "principal": "service:abc.access"}));
}

#[tokio::test]
async fn verify_refuses_a_token_signed_by_a_key_the_jwks_does_not_hold_with_exit_1() {
    let (published, attacker) = (key("k1"), key("k1"));
    let server = JwksServer::start(&[&published]).await;
    let args = [
        "--json",
        "verify",
        "--team",
        TEAM,
        "--aud",
        AUD,
        "--certs-url",
        &server.url(),
        "--token-env",
        "TOKEN",
    ];
    let forged = user_token(&attacker, AUD, 600);
    let out = run(&args, &[("TOKEN", &forged)], "").await;
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["code"], "invalid_token");
    assert_eq!(doc["reason"], "token signature is invalid");

    let wrong_aud = user_token(&published, "another-app", 600);
    let out = run(&args, &[("TOKEN", &wrong_aud)], "").await;
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["reason"], "token audience does not match this application");
}

#[tokio::test]
async fn verify_exits_2_with_the_cause_when_the_keys_cannot_be_fetched() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    server.set_mode(Mode::Status(500));
    let args = ["verify", "--team", TEAM, "--aud", AUD, "--certs-url", &server.url(), "-"];
    let out = run(&args, &[], &user_token(&key, AUD, 600)).await;
    assert_one_line_error(&out);
    assert!(stderr(&out).contains("HTTP 500"), "{}", stderr(&out));

    // Plain http to a host that is not loopback is refused before any connection.
    let args = ["verify", "--team", TEAM, "--aud", AUD, "--certs-url", "http://example.com/certs", "-"];
    let out = run(&args, &[], &user_token(&key, AUD, 600)).await;
    assert_one_line_error(&out);
    assert!(stderr(&out).contains("certs_url"), "{}", stderr(&out));
}

#[tokio::test]
async fn a_token_is_never_required_on_the_command_line_and_an_unset_variable_is_named() {
    let out = run(&["inspect", "--token-env", "NOT_SET_ANYWHERE"], &[], "").await;
    assert_one_line_error(&out);
    assert_eq!(stderr(&out), "ztgate: environment variable NOT_SET_ANYWHERE is not set\n");
    let out = run(&["inspect", "-"], &[], "   \n").await;
    assert_one_line_error(&out);
}

#[tokio::test]
async fn inspect_names_each_check_a_token_would_fail() {
    let key = key("k1");
    let mut claims = user_claims(
        "https://other-team.cloudflareaccess.com",
        "another-app",
        "alice@example.com",
        now() - 7200,
        600,
    );
    claims["iss"] = json!("https://other-team.cloudflareaccess.com");
    let token = key.sign(&claims);
    let out = run(&["inspect", "--team", TEAM, "--aud", AUD, "-"], &[], &token).await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("not verified"), "{text}");
    for line in [
        "ok   alg",
        "ok   kid",
        "FAIL iss",
        "FAIL aud",
        "FAIL exp: expired 1h 50m ago",
        "ok   nbf",
        "ok   subject",
    ] {
        assert!(text.contains(line), "missing {line:?} in {text}");
    }
    assert!(text.contains("kind: user (alice@example.com)"), "{text}");
    assert!(text.contains("kid:  k1"), "{text}");

    let out = run(&["--json", "inspect", "--team", TEAM, "--aud", AUD, "-"], &[], &token).await;
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&str> =
        doc["failures"].as_array().unwrap().iter().map(|f| f["check"].as_str().unwrap()).collect();
    assert_eq!(failed, ["iss", "aud", "exp"]);
    assert_eq!(doc["verified"], false);

    // Without the application, nothing is judged: exit 0, and the claims are still shown.
    let good = user_token(&key, AUD, 600);
    let out = run(&["inspect", "-"], &[], &good).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("checks: pass --team and --aud"));
    let out = run(&["inspect", "--team", TEAM, "--aud", AUD, "-"], &[], &good).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(!stdout(&out).contains("FAIL"));
}

#[tokio::test]
async fn inspect_flags_alg_none_a_service_token_and_a_lifetime_beyond_the_maximum() {
    let key = key("k1");
    let service = key.sign(&service_claims(TEAM, AUD, "abc.access", now(), 40 * 86_400));
    let out = run(&["inspect", "--team", TEAM, "--aud", AUD, "-"], &[], &service).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("kind: service (abc.access)"), "{}", stdout(&out));
    assert!(stdout(&out).contains("FAIL lifetime: lives 40d, more than the maximum 31d"), "{}", stdout(&out));

    let header = json!({"alg": "none", "typ": "JWT"});
    let none = key.sign_with_header(&header, &user_claims(TEAM, AUD, "a@example.com", now(), 60));
    let out = run(&["inspect", "--team", TEAM, "--aud", AUD, "-"], &[], &none).await;
    assert!(stdout(&out).contains("FAIL alg: alg is Some(\"none\")"), "{}", stdout(&out));
    assert!(stdout(&out).contains("FAIL kid"), "{}", stdout(&out));
}

#[tokio::test]
async fn inspect_flags_an_organization_token() {
    let key = key("k1");
    let mut claims = user_claims(TEAM, AUD, "a@example.com", now(), 60);
    claims["type"] = json!("org");
    let out = run(&["inspect", "--team", TEAM, "--aud", AUD, "-"], &[], &key.sign(&claims)).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("FAIL type: type is \"org\""), "{}", stdout(&out));
    let out = run(
        &["inspect", "--team", TEAM, "--aud", AUD, "-"],
        &[],
        &key.sign(&user_claims(TEAM, AUD, "a@example.com", now(), 60)),
    )
    .await;
    assert!(stdout(&out).contains("ok   type"), "{}", stdout(&out));
}

#[tokio::test]
async fn inspect_escapes_control_characters_so_a_claim_cannot_rewrite_the_terminal() {
    let key = key("k1");
    let mut claims = user_claims(TEAM, AUD, "alice@example.com", now(), 60);
    claims["country"] = json!("XX\u{1b}[2J\nforged: line");
    let out = run(&["inspect", "-"], &[], &key.sign(&claims)).await;
    let text = stdout(&out);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(!text.lines().any(|l| l.starts_with("forged")), "{text:?}");
    assert!(text.contains("country: XX\\u{1b}[2J\\nforged: line"), "{text:?}");

    let out = run(&["inspect", "-"], &[], "not.a-token").await;
    assert_one_line_error(&out);
}

#[tokio::test]
async fn jwks_lists_every_key_with_the_filters_verdict_and_the_cache_lifetime() {
    let (good, other) = (key("good"), key("dup"));
    let mut doc: Value = serde_json::from_str(&jwks_json(&[&good, &other, &other])).unwrap();
    let mut rs512 = good.public_jwk();
    rs512["kid"] = json!("rs512");
    rs512["alg"] = json!("RS512");
    let mut enc = good.public_jwk();
    enc["kid"] = json!("enc");
    enc["use"] = json!("enc");
    let ec = json!({"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"});
    doc["keys"].as_array_mut().unwrap().extend([rs512, enc, ec]);
    let server = JwksServer::start_with_body(doc.to_string()).await;
    server.set_cache_control(Some("public, max-age=600"));

    let out = run(&["--json", "jwks", &server.url()], &[], "").await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let verdicts: Vec<(String, bool, Value)> = report["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (k["kid"].as_str().unwrap().to_owned(), k["accepted"].as_bool().unwrap(), k["reason"].clone())
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("good".to_owned(), true, Value::Null),
            ("dup".to_owned(), false, json!("kid appears more than once")),
            ("dup".to_owned(), false, json!("kid appears more than once")),
            ("rs512".to_owned(), false, json!("alg is not RS256")),
            ("enc".to_owned(), false, json!("use is not sig")),
            ("ec".to_owned(), false, json!("kty is not RSA")),
        ]
    );
    assert_eq!(report["keys"][0]["bits"], 2048);
    assert_eq!(report["max_age_secs"], 600);

    // The same document from a file, as text.
    let dir = std::env::temp_dir().join(format!("ztgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = run(&["jwks", file.to_str().unwrap()], &[], "").await;
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("1 of 6 keys accepted"), "{}", stdout(&out));
    // No usable key: the middleware would refuse every token, so the tool exits 1.
    std::fs::write(&file, json!({"keys": [doc["keys"][5]]}).to_string()).unwrap();
    let out = run(&["jwks", file.to_str().unwrap()], &[], "").await;
    assert_eq!(out.status.code(), Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn mint_link_tokens_verify_with_the_same_key_ring_and_bad_rings_never_echo_secrets() {
    let ring = format!("2026-12:{SECRET}");
    let args = ["mint-link", "--purpose", "unsubscribe", "--subject", "alice@example.com", "--ttl", "7d"];
    let out = run(&args, &[("ZTGATE_HMAC_KEYS", &ring)], "").await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let token = stdout(&out).trim().to_owned();
    let verified = KeyRing::parse(&ring).unwrap().verify(&token, "unsubscribe", now()).unwrap();
    assert_eq!(verified.subject, "alice@example.com");
    assert!(KeyRing::parse(&ring).unwrap().verify(&token, "login", now()).is_err());
    assert!(KeyRing::parse(&ring).unwrap().verify(&token, "unsubscribe", now() + 7 * 86_400 + 61).is_err());

    let short = "2026-12:tooshort-secret-value";
    let out = run(&args, &[("ZTGATE_HMAC_KEYS", short)], "").await;
    assert_one_line_error(&out);
    assert!(!stderr(&out).contains("tooshort"), "{}", stderr(&out));

    let out = run(
        &["mint-link", "--purpose", "p", "--subject", "s", "--ttl", "7w"],
        &[("ZTGATE_HMAC_KEYS", &ring)],
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
}

/// The headers printed by `sign-webhook`, as a `HeaderMap`.
fn headers_of(out: &Output) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for line in stdout(out).lines() {
        let (name, value) = line.split_once(": ").unwrap();
        map.insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    map
}

#[tokio::test]
async fn sign_webhook_headers_pass_the_receivers_verifier_for_every_scheme() {
    use base64::Engine;
    let svix_secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(SECRET));
    let stripe_secret = format!("whsec_{SECRET}");
    let body = r#"{"event":"ping"}"#;
    let cases = [
        ("svix", svix_secret.clone(), WebhookVerifier::svix(svix_secret.as_str()).unwrap()),
        ("github", SECRET.to_owned(), WebhookVerifier::github(SECRET).unwrap()),
        ("stripe", stripe_secret.clone(), WebhookVerifier::stripe(stripe_secret.as_str()).unwrap()),
    ];
    for (scheme, secret, verifier) in cases {
        let out = run(
            &["sign-webhook", "--scheme", scheme, "--secret-env", "HOOK", "-"],
            &[("HOOK", &secret)],
            body,
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{scheme}: {}", stderr(&out));
        assert!(!stdout(&out).contains(&secret), "{scheme}: the secret is printed");
        let headers = headers_of(&out);
        verifier
            .verify_without_replay_guard(&headers, body.as_bytes(), now())
            .unwrap_or_else(|e| panic!("{scheme}: {e}"));
        assert!(
            verifier.verify_without_replay_guard(&headers, b"{\"event\":\"pong\"}", now()).is_err(),
            "{scheme}"
        );
    }
    let out =
        run(&["sign-webhook", "--scheme", "svix", "--secret-env", "HOOK", "{}"], &[("HOOK", SECRET)], "")
            .await;
    assert_one_line_error(&out);
}

/// A directory of the test's own under the system temp dir, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ztgate-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes `text` to `file` in the directory; its path as a string.
    fn write(&self, file: &str, text: &str) -> String {
        let path = self.0.join(file);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The hex SHA-256 of `key`, as `printf %s "$KEY" | sha256sum` prints it.
fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// An API key given by digest in the configuration files below. Made up for this test.
const DIGEST_KEY: &str = "digest-only-key-0123456789abcdefghij"; // pragma: allowlist secret

/// A file with every section: Access at `certs_url`, a key by digest, one by variable and one
/// written in the file (SECRET, which must never be printed), the ring and the webhook secret
/// by variable, an application's `[server]` table, and three routes.
fn full_config(certs_url: &str) -> String {
    let digest = sha256_hex(DIGEST_KEY);
    format!(
        r#"
[access]
team_domain = "{TEAM}"
audiences = ["{AUD}"]
certs_url = "{certs_url}"
allow_emails = ["alice@example.com"]
allow_email_domains = ["ops.example.com"]

[api_keys]
ops = {{ sha256 = "{digest}" }}
deploy = {{ env = "ZTGATE_TEST_DEPLOY_KEY" }}
legacy = {{ value = "{SECRET}" }}

[hmac_keys]
secret = {{ env = "ZTGATE_TEST_RING" }}
ttl = "5m"

[webhook]
scheme = "github"
secret = {{ env = "ZTGATE_TEST_HOOK" }}

[server]
listen = "127.0.0.1:8080"
database = {{ path = "/var/lib/admin/notes.db" }}

[[routes]]
method = "GET"
path = "/healthz"
require = "public"

[[routes]]
method = "POST"
path = "/admin/notes"
require = {{ all_of = ["access", "api_key"] }}

[[routes]]
path = "/admin/{{*rest}}"
require = {{ any_of = ["access", "signed_link"] }}
"#
    )
}

#[tokio::test]
async fn check_config_prints_the_effective_configuration_in_order_and_never_a_written_secret() {
    let dir = TempDir::new("check-valid");
    let path = dir.write("ztgate.toml", &full_config("http://127.0.0.1:9/certs"));
    let out = run(&["check-config", &path], &[], "").await;
    assert_eq!(out.status.code(), Some(0), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    for secret in [SECRET, &sha256_hex(DIGEST_KEY)] {
        assert!(!text.contains(secret) && !stderr(&out).contains(secret), "{text}");
    }
    for expected in [
        format!("  team_domain: {TEAM}"),
        format!("  audiences: {AUD}"),
        "  certs_url: http://127.0.0.1:9/certs".to_owned(),
        "  token_cache: on, a verified token answered for up to 60s".to_owned(),
        "  allow_emails: alice@example.com".to_owned(),
        "  allow_email_domains: ops.example.com".to_owned(),
        "  deploy: env ZTGATE_TEST_DEPLOY_KEY".to_owned(),
        "  legacy: <redacted>".to_owned(),
        format!("  ops: sha256:{}", &sha256_hex(DIGEST_KEY)[..8]),
        "hmac_keys: ring from env ZTGATE_TEST_RING, read again every 300s".to_owned(),
        "webhook: github, secret from env ZTGATE_TEST_HOOK".to_owned(),
        "trust_cert_headers: false".to_owned(),
        "server: application settings, not checked by ztgate".to_owned(),
        "application mechanisms (assumed, not checked by ztgate): signed_link".to_owned(),
        "warning: api_keys.legacy: the key is written in the file".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in {text}");
    }
    let routes: Vec<&str> = text.lines().filter(|l| l.contains(" -> ")).collect();
    assert_eq!(
        routes,
        [
            "  GET /healthz -> public",
            "  POST /admin/notes -> all_of(access, api_key)",
            "  * /admin/{*rest} -> any_of(access, signed_link)",
        ]
    );
    assert!(text.ends_with("valid\n"), "{text}");
    assert!(!text.contains("error:"), "{text}");

    // References are read only when asked, and then reported without their values.
    let ring = format!("2026-12:{SECRET}");
    let deploy = "deploy-key-from-the-environment-0123"; // pragma: allowlist secret
    let envs =
        [("ZTGATE_TEST_DEPLOY_KEY", deploy), ("ZTGATE_TEST_RING", &ring), ("ZTGATE_TEST_HOOK", SECRET)];
    let out = run(&["check-config", "--resolve-secrets", &path], &envs, "").await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    for line in ["  api_keys.deploy: ok", "  hmac_keys.secret: ok", "  webhook.secret: ok"] {
        assert!(text.contains(line), "missing {line:?} in {text}");
    }
    assert!(!text.contains(SECRET) && !text.contains(deploy), "{text}");

    let out = run(&["check-config", "--resolve-secrets", &path], &envs[..1], "").await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("error: hmac_keys.secret: ") && text.contains("ZTGATE_TEST_RING"), "{text}");
    assert!(text.contains("error: webhook.secret: "), "{text}");
    assert!(!text.contains(deploy), "{text}");
}

#[tokio::test]
async fn check_config_refuses_a_misspelt_key_naming_it_and_its_line_with_exit_2() {
    let dir = TempDir::new("check-typo");
    let text = format!(
        "[access]\nteam_domain = \"{TEAM}\"\naudiences = [\"{AUD}\"]\nallow_email = [\"alice@example.com\"]\n"
    );
    let path = dir.write("typo.toml", &text);
    let out = run(&["check-config", &path], &[], "").await;
    assert_one_line_error(&out);
    let err = stderr(&out);
    assert!(err.starts_with(&format!("ztgate: {path}: line 4, column 1: ")), "{err}");
    assert!(err.contains("allow_email"), "{err}");

    // The line of a misspelt secret is not quoted, so the secret is not either.
    let path = dir.write("secret.toml", &format!("[api_keys]\nops = {{ valeu = \"{SECRET}\" }}\n"));
    let out = run(&["--json", "check-config", &path], &[], "").await;
    assert_one_line_error(&out);
    assert!(stderr(&out).contains("line 2") && stderr(&out).contains("valeu"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(SECRET), "{}", stderr(&out));

    let out = run(&["check-config", &dir.0.join("missing.toml").to_string_lossy()], &[], "").await;
    assert_one_line_error(&out);
}

#[tokio::test]
async fn check_config_exits_1_for_a_route_the_router_refuses_and_says_which() {
    let dir = TempDir::new("check-route");
    let text = "[[routes]]\npath = \"/healthz\"\nrequire = \"public\"\n\n[[routes]]\nmethod = \"GET\"\npath = \"/a/{*rest}/b\"\nrequire = \"access\"\n";
    let path = dir.write("routes.toml", text);
    let out = run(&["check-config", &path], &[], "").await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    let text = stdout(&out);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(
        errors[0].contains("routes[1] (GET /a/{*rest}/b)") && errors[0].contains("must be last"),
        "{text}"
    );
    assert!(
        text.contains("warning: routes require \"access\" but the file has no [access] section"),
        "{text}"
    );
}

#[tokio::test]
async fn check_config_json_carries_validity_errors_warnings_routes_and_keys() {
    let dir = TempDir::new("check-json");
    let path = dir.write("ztgate.toml", &full_config("http://127.0.0.1:9/certs"));
    let out = run(&["--json", "check-config", &path], &[], "").await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let raw = stdout(&out);
    assert!(!raw.contains(SECRET) && raw.ends_with('\n') && raw.matches('\n').count() == 1, "{raw}");
    let doc: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["errors"], json!([]));
    assert_eq!(doc["warnings"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(
        doc["routes"][1],
        json!({"method": "POST", "path": "/admin/notes", "require": "all_of(access, api_key)"})
    );
    assert_eq!(doc["routes"].as_array().unwrap().len(), 3);
    assert_eq!(
        doc["api_keys"],
        json!([
            {"name": "deploy", "kind": "env", "source": "env ZTGATE_TEST_DEPLOY_KEY"},
            {"name": "legacy", "kind": "value", "source": "<redacted>"},
            {"name": "ops", "kind": "sha256", "source": format!("sha256:{}", &sha256_hex(DIGEST_KEY)[..8])},
        ])
    );
    assert_eq!(doc["access"]["team_domain"], TEAM);
    assert_eq!(doc["access"]["token_cache"], json!({"enabled": true, "max_age_secs": 60}));
    assert_eq!(doc["hmac_keys"], json!({"secret": "env ZTGATE_TEST_RING", "ttl_secs": 300})); // pragma: allowlist secret
    assert_eq!(doc["webhook"], json!({"scheme": "github", "secret": "env ZTGATE_TEST_HOOK"})); // pragma: allowlist secret
    assert_eq!(doc["application_mechanisms"], json!(["signed_link"]));
    assert_eq!(doc["server"], true);
    assert_eq!(doc["secrets_resolved"], false);

    // A failed check: valid false, each failure in `errors`, exit 1.
    let bad = full_config("http://example.com/certs").replace("ttl = \"5m\"", "ttl = \"2h\"");
    let path = dir.write("bad.toml", &bad);
    let out = run(&["--json", "check-config", &path], &[], "").await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["valid"], false);
    let errors: Vec<&str> = doc["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("access: ") && errors[0].contains("certs_url"), "{errors:?}");
    assert!(errors[1].contains("hmac_keys.ttl"), "{errors:?}");
}

#[tokio::test]
async fn verify_and_inspect_take_the_application_from_a_config_file_and_flags_override_it() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let dir = TempDir::new("verify-config");
    let path = dir.write("ztgate.toml", &full_config(&server.url()));
    let token = user_token(&key, AUD, 600);
    let out = run(&["verify", "--config", &path, "-"], &[], &token).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "valid: user:alice@example.com\n");
    assert_eq!(server.fetches(), 1);

    let out = run(&["--json", "verify", "--config", &path, "--aud", "another-app", "-"], &[], &token).await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["reason"], "token audience does not match this application");

    let out = run(&["inspect", "--config", &path, "-"], &[], &token).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("ok   aud") && !stdout(&out).contains("FAIL"), "{}", stdout(&out));

    // A file without [access] cannot say which application.
    let path = dir.write("no-access.toml", "[[routes]]\npath = \"/\"\nrequire = \"public\"\n");
    let out = run(&["verify", "--config", &path, "-"], &[], &token).await;
    assert_one_line_error(&out);
    assert!(stderr(&out).contains("no [access] section"), "{}", stderr(&out));
}

#[tokio::test]
async fn mint_link_reads_the_key_ring_a_config_file_names() {
    let dir = TempDir::new("mint-config");
    let ring = format!("2026-12:{SECRET}");
    let ring_file = dir.write("ring", &ring);
    let by_env = dir.write("env.toml", &full_config("http://127.0.0.1:9/certs"));
    let by_file = dir.write("file.toml", &format!("[hmac_keys]\nsecret = {{ file = \"{ring_file}\" }}\n"));
    let args = |config: &str| {
        [
            "mint-link",
            "--config",
            config,
            "--purpose",
            "unsubscribe",
            "--subject",
            "alice@example.com",
            "--ttl",
            "1h",
        ]
        .map(str::to_owned)
    };
    for (config, envs) in [(&by_env, vec![("ZTGATE_TEST_RING", ring.as_str())]), (&by_file, vec![])] {
        let args = args(config);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args, &envs, "").await;
        assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
        let token = stdout(&out).trim().to_owned();
        let verified = KeyRing::parse(&ring).unwrap().verify(&token, "unsubscribe", now()).unwrap();
        assert_eq!(verified.subject, "alice@example.com");
    }

    // The variable the file names is unset: one line naming it, never the ring.
    let args = args(&by_env);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args, &[("ZTGATE_HMAC_KEYS", &ring)], "").await;
    assert_one_line_error(&out);
    assert!(stderr(&out).contains("ZTGATE_TEST_RING") && !stderr(&out).contains(SECRET), "{}", stderr(&out));
}
