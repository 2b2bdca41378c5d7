//! `ztgate`: the operator's tool. Decode a Cloudflare Access token and say which checks it
//! would fail, verify one exactly as the middleware does, review a JWKS, mint an HMAC link,
//! sign a webhook the way a sender would, check a configuration file.
//!
//! Tokens and secrets are read from stdin (`-`) or an environment variable (`--token-env`,
//! `--secret-env`, `--keys-env`), so they need never appear on a command line (shell history,
//! `ps`). Every error is one line on stderr. Exit codes: 0 success or valid, 1 refused (or a
//! check failed), 2 usage, input or network error. `--json` prints one JSON document on stdout.
//!
//! `check-config FILE` prints a `ztgate::config` file's effective settings (secrets redacted),
//! its warnings and every check that needs no network (`--resolve-secrets` reads references).
//! `--config FILE` gives `inspect` and `verify` the file's `[access]` application (flags
//! override it) and `mint-link` its `[hmac_keys]` ring.
//!
//! ```text
//! ztgate inspect --team https://acme.cloudflareaccess.com --aud TAG - < token.txt
//! ztgate verify --team https://acme.cloudflareaccess.com --aud TAG --token-env CF_TOKEN
//! ztgate jwks https://acme.cloudflareaccess.com/cdn-cgi/access/certs
//! ZTGATE_HMAC_KEYS=... ztgate mint-link --purpose unsubscribe --subject alice@example.com --ttl 7d
//! ztgate sign-webhook --scheme github --secret-env HOOK_SECRET - < body.json
//! ztgate check-config --resolve-secrets ztgate.toml
//! ztgate verify --config ztgate.toml --token-env CF_TOKEN
//! ```
#![forbid(unsafe_code)]

mod check;
mod input;
mod inspect;
mod jwks;
mod sign;
mod time;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// What a command hands back: the text for a person, the JSON for a script, and whether it
/// succeeded (exit 0) or refused (exit 1).
pub(crate) struct Report {
    text: String,
    json: serde_json::Value,
    ok: bool,
}

/// A command that could not run (usage, input, network): exit 2, one line on stderr.
pub(crate) struct Failure(pub(crate) String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

#[derive(Parser)]
#[command(
    name = "ztgate",
    version,
    about = "Inspect and verify Cloudflare Access tokens, review JWKS, mint HMAC links, sign webhooks, check configuration files"
)]
struct Cli {
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// Where a token comes from.
#[derive(clap::Args)]
pub(crate) struct TokenArg {
    /// The token, or `-` to read it from stdin (preferred: keeps it out of shell history).
    #[arg(value_name = "TOKEN|-", required_unless_present = "token_env")]
    token: Option<String>,
    /// Read the token from this environment variable instead.
    #[arg(long, value_name = "VAR", conflicts_with = "token")]
    token_env: Option<String>,
}

/// Which Access application a token is for.
#[derive(clap::Args)]
pub(crate) struct AppArgs {
    /// The team domain (the issuer), e.g. `https://acme.cloudflareaccess.com`.
    #[arg(long, value_name = "URL")]
    team: Option<String>,
    /// An Application Audience (AUD) tag to accept; repeat for several.
    #[arg(long, value_name = "TAG")]
    aud: Vec<String>,
    /// Take the team, audiences (and, for verify, the certs URL) from this configuration
    /// file's [access] section; --team, --aud and --certs-url override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Decode a token without trusting it; with --team/--aud (or --config), say which checks would fail.
    Inspect {
        #[command(flatten)]
        app: AppArgs,
        #[command(flatten)]
        token: TokenArg,
    },
    /// Fetch the JWKS and verify a token as the middleware does (exit 0 valid, 1 refused).
    Verify {
        #[command(flatten)]
        app: AppArgs,
        /// Where the keys are (default `{team}/cdn-cgi/access/certs`); `http://` on loopback only.
        #[arg(long, value_name = "URL")]
        certs_url: Option<String>,
        #[command(flatten)]
        token: TokenArg,
    },
    /// List a JWKS's keys and whether ztgate accepts each (URL or file).
    Jwks {
        /// `https://...` (or `http://` on loopback) to fetch, or a file path.
        #[arg(value_name = "URL|FILE")]
        source: String,
    },
    /// Mint an HMAC-signed token (an unsubscribe or magic link) from the key ring.
    MintLink {
        /// What the token is for; the verifier must name the same purpose.
        #[arg(long)]
        purpose: String,
        /// Who or what the token is about.
        #[arg(long)]
        subject: String,
        /// Lifetime: a number with s, m, h or d, e.g. `7d`.
        #[arg(long, value_parser = time::parse_duration)]
        ttl: std::time::Duration,
        /// The environment variable holding the key ring (`kid:secret,...`, signing key first).
        #[arg(long, value_name = "VAR", default_value = "ZTGATE_HMAC_KEYS")]
        keys_env: String,
        /// Read the key ring from this configuration file's [hmac_keys] secret instead.
        #[arg(long, value_name = "FILE", conflicts_with = "keys_env")]
        config: Option<PathBuf>,
    },
    /// Print the headers a webhook sender would send for BODY, to test receivers.
    SignWebhook {
        /// The provider's format.
        #[arg(long, value_enum)]
        scheme: Scheme,
        /// The environment variable holding the signing secret.
        #[arg(long, value_name = "VAR")]
        secret_env: String,
        /// The message id (Svix); random when omitted.
        #[arg(long)]
        id: Option<String>,
        /// Unix seconds to sign with (Svix, Stripe); now when omitted.
        #[arg(long)]
        timestamp: Option<u64>,
        /// The body, or `-` to read it from stdin.
        #[arg(value_name = "BODY|-")]
        body: String,
    },
    /// Read a configuration file, print its effective settings (secrets redacted) and warnings,
    /// and check what needs no network (exit 0 valid, 1 a check failed, 2 unreadable).
    CheckConfig {
        /// The TOML file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Also read each secret reference (env, file) and check it; values are never printed.
        #[arg(long)]
        resolve_secrets: bool,
    },
}

/// Webhook formats `sign-webhook` writes.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Scheme {
    /// Svix / Standard Webhooks (`svix-id`, `svix-timestamp`, `svix-signature`).
    Svix,
    /// GitHub (`X-Hub-Signature-256`).
    Github,
    /// Stripe (`Stripe-Signature`).
    Stripe,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are not errors; clap prints them as it likes.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Inspect { app, token } => inspect::run(&app, &token),
        Command::Verify { app, certs_url, token } => verify::run(&app, certs_url.as_deref(), &token),
        Command::Jwks { source } => jwks::run(&source),
        Command::MintLink { purpose, subject, ttl, keys_env, config } => {
            let keys = match &config {
                Some(path) => sign::Keys::Config(path),
                None => sign::Keys::Env(&keys_env),
            };
            sign::mint_link(&purpose, &subject, ttl, keys)
        }
        Command::SignWebhook { scheme, secret_env, id, timestamp, body } => {
            sign::sign_webhook(scheme, &secret_env, id, timestamp, &body)
        }
        Command::CheckConfig { file, resolve_secrets } => check::run(&file, resolve_secrets),
    };
    match result {
        Ok(report) => {
            if cli.json {
                println!("{}", report.json);
            } else {
                print!("{}", report.text);
            }
            if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(Failure(why)) => {
            eprintln!("ztgate: {}", one_line(&why));
            ExitCode::from(2)
        }
    }
}

/// `why` on one line: control characters (a newline from an error chain) become spaces.
pub(crate) fn one_line(why: &str) -> String {
    why.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}
