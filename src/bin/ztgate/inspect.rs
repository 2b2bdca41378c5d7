//! `ztgate inspect`: a token's header and claims, decoded without trusting them, and (given the
//! application) each check the middleware makes, with what it would say.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use ztgate::AccessConfig;

use crate::{AppArgs, Failure, Report, TokenArg, check, input, time};

/// The largest token the middleware reads (the `Cf-Access-Jwt-Assertion` cap), in bytes.
const MAX_TOKEN_LEN: usize = 16 * 1024;

pub(crate) fn run(app: &AppArgs, token: &TokenArg) -> Result<Report, Failure> {
    let token = input::token(token)?;
    let (config, _) = app_config(app)?;
    let now = ztgate::clock::unix_now() as i64;
    let decoded = decode(&token)?;
    let checks = config.as_ref().map(|c| checks(c, &decoded, now)).unwrap_or_default();
    Ok(report(&decoded, &checks, config.is_some(), now))
}

/// The `AccessConfig` from `--team` and `--aud`, when both are given (one without the other is
/// a usage error: half a configuration would check half the rules), each taken from the
/// `--config` file's `[access]` section when not given; with the file's `certs_url`, if any.
pub(crate) fn app_config(app: &AppArgs) -> Result<(Option<AccessConfig>, Option<String>), Failure> {
    let Some(path) = &app.config else {
        let config = match (&app.team, app.aud.is_empty()) {
            (None, true) => None,
            (Some(team), false) => Some(AccessConfig::new(team.as_str(), &app.aud)?),
            (Some(_), true) => return Err(Failure("--team needs at least one --aud".into())),
            (None, false) => return Err(Failure("--aud needs --team".into())),
        };
        return Ok((config, None));
    };
    let access = check::load(path)?
        .access
        .ok_or_else(|| Failure(format!("{}: no [access] section", path.display())))?;
    let team = app.team.as_deref().unwrap_or(&access.team_domain);
    let auds = if app.aud.is_empty() { &access.audiences } else { &app.aud };
    let config = AccessConfig::new(team, auds).map_err(|e| Failure(format!("{}: {e}", path.display())))?;
    Ok((Some(config), access.certs_url))
}

/// A token split and decoded, nothing verified.
pub(crate) struct Decoded {
    header: Map<String, Value>,
    claims: Map<String, Value>,
}

pub(crate) fn decode(token: &str) -> Result<Decoded, Failure> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Failure(format!(
            "the token is longer than {MAX_TOKEN_LEN} bytes (the middleware refuses it)"
        )));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure("not a JWT: expected three dot-separated parts".into()));
    };
    let object = |part: &str, what: &str| -> Result<Map<String, Value>, Failure> {
        let bytes =
            URL_SAFE_NO_PAD.decode(part).map_err(|_| Failure(format!("the {what} is not base64url")))?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(Failure(format!("the {what} is not a JSON object"))),
        }
    };
    Ok(Decoded { header: object(header, "header")?, claims: object(claims, "claims")? })
}

/// One rule and how the token fares.
pub(crate) struct Check {
    name: &'static str,
    failure: Option<String>,
}

fn check(name: &'static str, failure: Option<String>) -> Check {
    Check { name, failure }
}

fn checks(config: &AccessConfig, t: &Decoded, now: i64) -> Vec<Check> {
    let leeway = AccessConfig::DEFAULT_LEEWAY.as_secs() as i64;
    let time = |name: &str| t.claims.get(name).and_then(Value::as_i64);
    let mut out = Vec::new();
    let alg = t.header.get("alg").and_then(Value::as_str);
    out.push(check("alg", (alg != Some("RS256")).then(|| format!("alg is {alg:?}, only RS256 is accepted"))));
    out.push(check(
        "crit",
        t.header.contains_key("crit").then(|| "the header lists crit extensions".to_owned()),
    ));
    let kid = t.header.get("kid").and_then(Value::as_str).filter(|k| !k.is_empty());
    out.push(check("kid", kid.is_none().then(|| "no kid in the header".to_owned())));
    let iss = t.claims.get("iss").and_then(Value::as_str);
    out.push(check(
        "iss",
        (iss != Some(config.team_domain()))
            .then(|| format!("iss is {iss:?}, expected {:?}", config.team_domain())),
    ));
    let auds: Vec<&str> = match t.claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let aud_ok = auds.iter().any(|a| config.audiences().iter().any(|c| c == a));
    out.push(check("aud", (!aud_ok).then(|| format!("aud {auds:?} holds none of {:?}", config.audiences()))));
    let kind = t.claims.get("type");
    out.push(check(
        "type",
        kind.filter(|k| k.as_str() != Some("app"))
            .map(|k| format!("type is {k}, not \"app\" (an organization token?)")),
    ));
    let exp_failure = match time("exp") {
        None => Some("no numeric exp".to_owned()),
        Some(exp) if exp + leeway < now => {
            Some(format!("expired {} ago", time::span((now - exp).unsigned_abs())))
        }
        Some(_) => None,
    };
    out.push(check("exp", exp_failure));
    let nbf = time("nbf").filter(|nbf| *nbf > now + leeway);
    out.push(check(
        "nbf",
        nbf.map(|nbf| format!("not valid for {} more", time::span((nbf - now).unsigned_abs()))),
    ));
    let iat = time("iat").filter(|iat| *iat > now + leeway);
    out.push(check(
        "iat",
        iat.map(|iat| format!("issued {} in the future", time::span((iat - now).unsigned_abs()))),
    ));
    let max = config.max_lifetime().as_secs() as i64;
    let lifetime = match (time("iat"), time("exp")) {
        (Some(iat), Some(exp)) => Some(exp - iat),
        (None, Some(exp)) => Some(exp - now),
        _ => None,
    };
    let long = lifetime.filter(|l| *l > max + leeway);
    out.push(check(
        "lifetime",
        long.map(|l| {
            format!(
                "lives {}, more than the maximum {}",
                time::span(l.unsigned_abs()),
                time::span(max.unsigned_abs())
            )
        }),
    ));
    let who = t
        .claims
        .get("email")
        .and_then(Value::as_str)
        .or_else(|| t.claims.get("common_name").and_then(Value::as_str));
    out.push(check("subject", who.is_none().then(|| "neither email nor common_name".to_owned())));
    out
}

/// `user`, `service` (Access service token) or `unknown`, from the claims.
fn kind(claims: &Map<String, Value>) -> (&'static str, Option<&str>) {
    let text = |k: &str| claims.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    match (text("email"), text("common_name")) {
        (Some(email), _) => ("user", Some(email)),
        (None, Some(cn)) => ("service", Some(cn)),
        (None, None) => ("unknown", None),
    }
}

fn report(t: &Decoded, checks: &[Check], checked: bool, now: i64) -> Report {
    let mut text = String::new();
    let mut line = |s: String| {
        text.push_str(&s);
        text.push('\n');
    };
    line("not verified: decoded only, nothing here is trusted".into());
    let header_text = |k: &str| t.header.get(k).map(show).unwrap_or_else(|| "-".into());
    line(format!("alg:  {}", header_text("alg")));
    line(format!("kid:  {}", header_text("kid")));
    let (kind, who) = kind(&t.claims);
    line(format!("kind: {kind}{}", who.map(|w| format!(" ({w})")).unwrap_or_default()));
    for (name, value) in &t.claims {
        let shown = match (name.as_str(), value.as_i64()) {
            ("exp" | "nbf" | "iat", Some(at)) => time::describe(at, now),
            _ => show(value),
        };
        line(format!("{name}: {shown}"));
    }
    if checked {
        for c in checks {
            match &c.failure {
                None => line(format!("ok   {}", c.name)),
                Some(why) => line(format!("FAIL {}: {why}", c.name)),
            }
        }
    } else {
        line("checks: pass --team and --aud (or --config) to see which would fail".into());
    }
    let failures: Vec<Value> = checks
        .iter()
        .filter_map(|c| c.failure.as_ref().map(|why| json!({"check": c.name, "reason": why})))
        .collect();
    let ok = failures.is_empty();
    let json = json!({
        "verified": false,
        "header": t.header,
        "claims": t.claims,
        "kind": kind,
        "checked": checked,
        "failures": failures,
    });
    Report { text, json, ok }
}

/// A claim for a terminal: strings bare, everything else as JSON; control characters escaped
/// so a crafted claim cannot rewrite the screen.
fn show(value: &Value) -> String {
    let raw = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    raw.chars()
        .flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
        .collect()
}
