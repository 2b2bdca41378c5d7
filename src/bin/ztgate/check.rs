//! `ztgate check-config`: a configuration file read exactly as `ztgate::config` reads it, the
//! effective settings printed (never a secret: written values show as `<redacted>`, digests as
//! their first 8 hex digits), and every check that needs no network. Secret references (env,
//! file) are read only with `--resolve-secrets`, and then only reported ok or failed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use ztgate::clock::SystemClock;
use ztgate::config::{ConfigFile, HmacKeysSection, KeySpec, Mechanisms, RequirementSpec, SecretRef};
use ztgate::identity::{ApiKeys, Requirement};
use ztgate::native::HttpFetcher;
use ztgate::secrets::{Secret, SecretSource};
use ztgate::{NoClaims, RoutePolicies};

use crate::{Failure, Report};

/// The mechanisms ztgate itself provides, which an application registers under these names.
const ZTGATE_MECHANISMS: [&str; 3] = ["access", "api_key", "client_cert"];

/// An application's `[server]` table, whatever it holds: the application types and checks it.
pub(crate) struct AnyServer;

impl<'de> Deserialize<'de> for AnyServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Self)
    }
}

/// A configuration file as the CLI reads it.
pub(crate) type File = ConfigFile<AnyServer>;

/// Reads and parses `path`; the error is `<path>: line L, column C: <message>`.
pub(crate) fn load(path: &Path) -> Result<File, Failure> {
    ConfigFile::read(path).map_err(|e| Failure(e.to_string()))
}

/// A value from the file for a terminal: control characters escaped.
fn shown(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect() } else { vec![c] }).collect()
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.iter().map(String::as_str).map(shown).collect::<Vec<_>>().join(", ")
    }
}

/// How a secret is given, without its value.
fn secret_ref(secret: &SecretRef) -> String {
    match secret {
        SecretRef::Env(var) => format!("env {var}"),
        SecretRef::File(path) => format!("file {}", path.display()),
        _ => "<redacted>".to_owned(),
    }
}

/// How an API key is given, without the key: a digest shows its first 8 hex digits only.
fn key_spec(spec: &KeySpec) -> (&'static str, String) {
    match spec {
        KeySpec::Sha256(hex) => {
            ("sha256", format!("sha256:{}", hex.trim().chars().take(8).collect::<String>()))
        }
        KeySpec::Env(var) => ("env", format!("env {var}")),
        KeySpec::File(path) => ("file", format!("file {}", path.display())),
        _ => ("value", "<redacted>".to_owned()),
    }
}

/// Whether reading `secret` needs the environment or the file system.
fn is_reference(secret: &SecretRef) -> bool {
    matches!(secret, SecretRef::Env(_) | SecretRef::File(_))
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// Every mechanism name a requirement mentions (`public` included), without recursion.
fn names(spec: &RequirementSpec, out: &mut Vec<String>) {
    let mut stack = vec![spec];
    while let Some(spec) = stack.pop() {
        match spec {
            RequirementSpec::Named(name) if !out.contains(name) => out.push(name.clone()),
            RequirementSpec::AnyOf(v) | RequirementSpec::AllOf(v) => stack.extend(v.iter().rev()),
            // A form this tool does not know: the library's own resolution reports it.
            _ => {}
        }
    }
}

/// What the checks found.
#[derive(Default)]
struct Findings {
    errors: Vec<String>,
    /// `(what, Ok | Err(why))` per secret read, with `--resolve-secrets`.
    secrets: Vec<(String, Result<(), String>)>,
}

impl Findings {
    fn error(&mut self, why: impl std::fmt::Display) {
        self.errors.push(crate::one_line(&why.to_string()));
    }

    fn secret(&mut self, what: String, outcome: Result<(), String>) {
        if let Err(why) = &outcome {
            self.error(format!("{what}: {why}"));
        }
        self.secrets.push((what, outcome.map_err(|why| crate::one_line(&why))));
    }
}

pub(crate) fn run(path: &Path, resolve: bool) -> Result<Report, Failure> {
    let file = load(path)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut found = Findings::default();
    let mut text = String::new();
    let mut line = |s: String| {
        text.push_str(&s);
        text.push('\n');
    };
    line(format!("file: {}", shown(&path.display().to_string())));

    // [access]
    let access_json = match &file.access {
        None => {
            line("access: not configured".into());
            Value::Null
        }
        Some(access) => {
            let config = access.config().map_err(|e| found.error(format!("access: {e}"))).ok();
            let default_url = config.as_ref().map(|c| c.default_certs_url());
            let certs_url = access.certs_url.clone().or_else(|| default_url.clone());
            if let Some(url) = &certs_url
                && let Err(e) = HttpFetcher::new(url)
            {
                found.error(format!("access: {e}"));
            }
            let cache = access.token_cache_config().map_err(|e| found.error(format!("access: {e}"))).ok();
            line("access:".into());
            line(format!("  team_domain: {}", shown(&access.team_domain)));
            line(format!("  audiences: {}", list(&access.audiences)));
            let url_text = match (&access.certs_url, &certs_url) {
                (Some(url), _) => shown(url),
                (None, Some(url)) => format!("{} (default)", shown(url)),
                (None, None) => "-".to_owned(),
            };
            line(format!("  certs_url: {url_text}"));
            let cache_text = match &cache {
                Some(c) if c.is_enabled() => {
                    format!("on, a verified token answered for up to {}", secs(c.max_age()))
                }
                Some(_) => "off".to_owned(),
                None => "invalid".to_owned(),
            };
            line(format!("  token_cache: {cache_text}"));
            line(format!("  allow_emails: {}", list(&access.allow_emails)));
            line(format!("  allow_email_domains: {}", list(&access.allow_email_domains)));
            line(format!("  allow_service_tokens: {}", list(&access.allow_service_tokens)));
            line(format!("  allow_groups: {}", list(&access.allow_groups)));
            line(format!("  require_auth_method: {}", list(&access.require_auth_method)));
            let session = access.max_session_age.map_or_else(|| "-".to_owned(), secs);
            line(format!("  max_session_age: {session}"));
            let identity_url = access.identity_url.clone().unwrap_or_else(|| {
                format!("{}/cdn-cgi/access/get-identity (default)", access.team_domain.trim_end_matches('/'))
            });
            line(format!("  identity_url: {}", shown(&identity_url)));
            json!({
                "team_domain": access.team_domain,
                "audiences": access.audiences,
                "certs_url": certs_url,
                "certs_url_is_default": access.certs_url.is_none(),
                "token_cache": cache.as_ref().map(|c| json!({
                    "enabled": c.is_enabled(),
                    "max_age_secs": c.is_enabled().then(|| c.max_age().as_secs()),
                })),
                "allow_emails": access.allow_emails,
                "allow_email_domains": access.allow_email_domains,
                "allow_service_tokens": access.allow_service_tokens,
                "allow_groups": access.allow_groups,
                "require_auth_method": access.require_auth_method,
                "max_session_age_secs": access.max_session_age.map(|d| d.as_secs()),
                "identity_url": access.identity_url,
            })
        }
    };

    // [api_keys]: digests and written keys are checked now; references only when resolving.
    let keys = ApiKeys::new();
    let errors_before_keys = found.errors.len();
    let mut keys_json = Vec::new();
    if file.api_keys.is_empty() {
        line("api_keys: none".into());
    } else {
        line("api_keys:".into());
    }
    for (name, spec) in &file.api_keys {
        let (kind, given) = key_spec(spec);
        line(format!("  {}: {}", shown(name), shown(&given)));
        keys_json.push(json!({"name": name, "kind": kind, "source": given}));
        let checked = match spec {
            KeySpec::Sha256(hex) => keys.insert_digest(name, hex).map_err(|e| e.to_string()),
            KeySpec::Value(v) => keys.insert(name, Secret::from(v.as_str())).map_err(|e| e.to_string()),
            KeySpec::Env(var) if resolve => resolve_key(&runtime, &keys, name, SecretRef::Env(var.clone())),
            KeySpec::File(p) if resolve => resolve_key(&runtime, &keys, name, SecretRef::File(p.clone())),
            _ => continue,
        };
        match spec {
            KeySpec::Env(_) | KeySpec::File(_) => found.secret(format!("api_keys.{name}"), checked),
            _ => {
                if let Err(why) = checked {
                    found.error(format!("api_keys.{name}: {why}"));
                }
            }
        }
    }
    // The library's own read of every key, as the application makes it (a cross-check: each
    // key was read above, so this adds only what concerns several at once).
    if resolve
        && found.errors.len() == errors_before_keys
        && let Err(e) = runtime.block_on(file.api_keys())
    {
        found.error(e);
    }

    // [hmac_keys]
    let hmac_json = match &file.hmac_keys {
        None => {
            line("hmac_keys: not configured".into());
            Value::Null
        }
        Some(hmac) => {
            let ttl = hmac.ttl.unwrap_or(HmacKeysSection::DEFAULT_TTL);
            let source = secret_ref(&hmac.secret);
            line(format!("hmac_keys: ring from {}, read again every {}", shown(&source), secs(ttl)));
            if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(3600) {
                found.error("hmac_keys.ttl must be from 1s to 1h");
            } else if resolve || !is_reference(&hmac.secret) {
                let outcome = runtime
                    .block_on(hmac.key_ring(Arc::new(SystemClock)))
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                found.secret("hmac_keys.secret".into(), outcome);
            }
            json!({"secret": source, "ttl_secs": ttl.as_secs()})
        }
    };

    // [webhook]
    let webhook_json = match &file.webhook {
        None => {
            line("webhook: not configured".into());
            Value::Null
        }
        Some(hook) => {
            let scheme = format!("{:?}", hook.scheme).to_lowercase();
            let source = secret_ref(&hook.secret);
            line(format!("webhook: {scheme}, secret from {}", shown(&source)));
            if resolve || !is_reference(&hook.secret) {
                let outcome = runtime.block_on(hook.verifier()).map(|_| ()).map_err(|e| e.to_string());
                found.secret("webhook.secret".into(), outcome);
            }
            json!({"scheme": scheme, "secret": source})
        }
    };

    // [request]
    let trust = file.request.trust_cert_headers;
    line(format!(
        "trust_cert_headers: {trust}{}",
        if trust { " (cf-cert-* headers believed: only behind Cloudflare alone)" } else { "" }
    ));
    if file.server.is_some() {
        line("server: application settings, not checked by ztgate".into());
    }

    // [[routes]]: every name resolved to a placeholder, each pattern and method checked.
    let mut used = Vec::new();
    for route in &file.routes {
        names(&route.require, &mut used);
    }
    let application: Vec<String> =
        used.iter().filter(|n| *n != "public" && !ZTGATE_MECHANISMS.contains(&n.as_str())).cloned().collect();
    let mechanisms = used
        .iter()
        .filter(|n| *n != "public")
        .fold(Mechanisms::<NoClaims>::new(), |m, name| m.with(name.clone(), Requirement::public()));
    let mut routes_json = Vec::new();
    if file.routes.is_empty() {
        line("routes: none in the file".into());
    } else {
        line("routes (first match wins):".into());
    }
    let mut routes_ok = true;
    for (i, route) in file.routes.iter().enumerate() {
        let require = route.require.to_string();
        line(format!("  {} {} -> {}", shown(&route.method), shown(&route.path), shown(&require)));
        routes_json.push(json!({"method": route.method, "path": route.path, "require": require}));
        let at = format!("routes[{i}] ({} {})", route.method, route.path);
        // A name's error already says which route; a pattern's or method's does not.
        let checked = match mechanisms.resolve(&route.require, &at) {
            Err(e) => Err(e.to_string()),
            Ok(requirement) => RoutePolicies::<NoClaims>::with_limits(file.request.limits())
                .route(&route.method, &route.path, requirement)
                .map(|_| ())
                .map_err(|e| format!("{at}: {e}")),
        };
        if let Err(e) = checked {
            routes_ok = false;
            found.error(e);
        }
    }
    if routes_ok && let Err(e) = file.route_policies(&mechanisms) {
        found.error(e);
    }
    if !application.is_empty() {
        line(format!("application mechanisms (assumed, not checked by ztgate): {}", list(&application)));
    }

    // Warnings: the library's, and routes naming a mechanism the file does not configure.
    let mut warnings = file.warnings();
    if used.iter().any(|n| n == "access") && file.access.is_none() {
        warnings.push("routes require \"access\" but the file has no [access] section".into());
    }
    if used.iter().any(|n| n == "api_key") && file.api_keys.is_empty() {
        warnings.push("routes require \"api_key\" but the file has no [api_keys]".into());
    }
    let warnings: Vec<String> = warnings.iter().map(|w| crate::one_line(w)).collect();

    if resolve {
        line("secrets:".into());
        for (what, outcome) in &found.secrets {
            match outcome {
                Ok(()) => line(format!("  {}: ok", shown(what))),
                Err(why) => line(format!("  {}: error: {}", shown(what), shown(why))),
            }
        }
        if found.secrets.is_empty() {
            line("  none to read".into());
        }
    } else if has_references(&file) {
        line("secrets: references not read (pass --resolve-secrets to read and check them)".into());
    }
    for w in &warnings {
        line(format!("warning: {}", shown(w)));
    }
    for e in &found.errors {
        line(format!("error: {}", shown(e)));
    }
    let valid = found.errors.is_empty();
    line(if valid { "valid".into() } else { format!("invalid: {} error(s)", found.errors.len()) });

    let secrets_json: Vec<Value> = found
        .secrets
        .iter()
        .map(|(what, outcome)| json!({"name": what, "ok": outcome.is_ok(), "error": outcome.as_ref().err()}))
        .collect();
    let json = json!({
        "file": path.display().to_string(),
        "valid": valid,
        "errors": found.errors,
        "warnings": warnings,
        "access": access_json,
        "api_keys": keys_json,
        "hmac_keys": hmac_json,
        "webhook": webhook_json,
        "trust_cert_headers": trust,
        "server": file.server.is_some(),
        "routes": routes_json,
        "application_mechanisms": application,
        "secrets_resolved": resolve,
        "secrets": secrets_json,
    });
    Ok(Report { text, json, ok: valid })
}

/// Reads one API key reference and adds the key to `keys` (length and duplicate checks).
fn resolve_key(
    runtime: &tokio::runtime::Runtime,
    keys: &ApiKeys,
    name: &str,
    source: SecretRef,
) -> Result<(), String> {
    let key = runtime.block_on(source.get()).map_err(|e| e.to_string())?;
    keys.insert(name, key).map_err(|e| e.to_string())
}

/// Whether any secret is given by reference (env or file).
fn has_references(file: &File) -> bool {
    file.api_keys.values().any(|k| matches!(k, KeySpec::Env(_) | KeySpec::File(_)))
        || file.hmac_keys.as_ref().is_some_and(|h| is_reference(&h.secret))
        || file.webhook.as_ref().is_some_and(|w| is_reference(&w.secret))
}
