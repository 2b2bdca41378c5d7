//! ztgate in front of a plain hyper server: no axum, only hyper, hyper-util and tower.
//!
//! The [`Gate`] is a Tower [`Layer`](tower::Layer): wrapped around a `tower::service_fn`
//! handler it makes an [`IdentityService`](ztgate::IdentityService) that verifies the caller
//! before the handler runs, puts the [`Verified<Principal>`] into the request extensions, and
//! answers refusals itself (JSON 401/403/503). hyper's HTTP/1.1 connection builder then serves
//! that Tower service through a small adapter (`hyper::service::service_fn` + `oneshot`).
//!
//! This example runs offline, in dev mode only: it makes an RSA signing key at start-up, hands
//! its JWKS to the gate through a [`StaticFetcher`] (nothing is fetched over the network), and
//! prints a `curl` line with a token for `dev@localhost` signed by that key. The key lives only
//! in this process; a restart makes a new one and every printed token dies with the old one.
//!
//! ```text
//! cargo run --example hyper_server                          # listens on 127.0.0.1:8081
//! ZTGATE_HYPER_PORT=9000 cargo run --example hyper_server   # another port (still loopback)
//! ```
//!
//! For production, build the gate as in the README (`Gate::builder(AccessConfig::new(team,
//! [aud]))` without `.fetcher(..)`, so the keys come from the team's JWKS) and keep the rest.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt as _};
use ztgate::clock::unix_now;
use ztgate::dev::{DevKey, jwks_json, user_claims};
use ztgate::identity::StaticFetcher;
use ztgate::{AccessConfig, ConfigError, Gate, Policy, Principal, Rejection, Verified};

/// The dev issuer: the `iss` of the tokens this example mints. Never contacted: the keys come
/// from the [`StaticFetcher`].
const DEV_ISSUER: &str = "https://ztgate-dev.invalid";
/// The Access audience (AUD) tag the gate accepts.
const DEV_AUD: &str = "ztgate-hyper-dev";
/// The one user the policy lets in.
const DEV_EMAIL: &str = "dev@localhost";
const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
/// The environment variable naming the port; the address is always loopback.
const PORT_VAR: &str = "ZTGATE_HYPER_PORT";
const DEFAULT_PORT: u16 = 8081;
/// A request head must be whole this long after the connection starts waiting for it.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hyper_server: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let port = match std::env::var(PORT_VAR) {
        Ok(text) => {
            text.trim().parse::<u16>().map_err(|_| format!("{PORT_VAR}={text:?} is not a port number"))?
        }
        Err(std::env::VarError::NotPresent) => DEFAULT_PORT,
        Err(std::env::VarError::NotUnicode(_)) => return Err(format!("{PORT_VAR} is not valid UTF-8")),
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;

    let key = DevKey::generate("hyper-dev").map_err(|e| e.to_string())?;
    let gate = dev_gate(&key).map_err(|e| e.to_string())?;

    eprintln!("hyper_server: dev mode: tokens are signed by a key made at start-up, for local use only");
    // A dev-only token for a dev-only key, as the admin server prints in its dev mode.
    let token = key.sign(&user_claims(DEV_ISSUER, DEV_AUD, DEV_EMAIL, unix_now(), DEV_TOKEN_TTL.as_secs()));
    println!("dev mode: try\n  curl -H 'Cf-Access-Jwt-Assertion: {token}' http://{addr}/whoami");
    println!("listening on http://{addr}");

    tokio::select! {
        served = serve(listener, gate) => served.map_err(|e| e.to_string()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// The gate of dev mode: Access verification against `key`'s JWKS (held in memory), for
/// [`DEV_AUD`] tokens from [`DEV_ISSUER`], admitting [`DEV_EMAIL`] only.
fn dev_gate(key: &DevKey) -> Result<Gate, ConfigError> {
    Gate::builder(AccessConfig::new(DEV_ISSUER, [DEV_AUD])?)
        .fetcher(Arc::new(StaticFetcher::new(jwks_json(&[key]))))
        .policy(Policy::new().allow_emails([DEV_EMAIL]))
        .build()
}

/// Serves `gate` in front of [`whoami`] on every connection `listener` accepts, until the
/// listener fails for good.
async fn serve(listener: TcpListener, gate: Gate) -> std::io::Result<()> {
    // The gate is the Tower layer: identity first, the handler only with a verified caller.
    let app = ServiceBuilder::new().layer(gate).service_fn(whoami);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            // A connection reset before it was accepted: nothing to answer.
            Err(e) if is_per_connection(&e) => continue,
            // Out of file descriptors and the like: wait for some to be released.
            Err(e) if e.raw_os_error().is_some() => {
                eprintln!("hyper_server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let app = app.clone();
        tokio::spawn(async move {
            // hyper calls a `hyper::service::Service`; each request goes through a fresh clone
            // of the Tower service (`oneshot` waits until it is ready, then calls it).
            let service = hyper::service::service_fn(move |req: Request<Incoming>| app.clone().oneshot(req));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            // A client that goes away mid-request ends its connection, not the server; hyper's
            // error says nothing about the caller's credentials, but there is no one to tell.
            let _ = connection.await;
        });
    }
}

fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
}

/// The handler: answers with the verified caller's id (`user:dev@localhost`).
///
/// It runs only behind the gate, which inserts the [`Verified<Principal>`] before calling it.
/// Without one (the layer left out by mistake) it refuses with 500 `identity_layer_missing`,
/// as the axum extractor does, rather than serve an unproven caller.
async fn whoami(req: Request<Incoming>) -> Result<Response<String>, Infallible> {
    let Some(who) = req.extensions().get::<Verified<Principal>>() else {
        return Ok(Rejection::LayerMissing.to_response());
    };
    let mut response = Response::new(format!("{}\n", who.id()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on 127.0.0.1:0 behind the dev gate of `key`; its address.
    async fn start(key: &DevKey) -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = dev_gate(key).unwrap();
        tokio::spawn(async move { serve(listener, gate).await });
        addr
    }

    /// Loopback only, whatever proxy the environment names.
    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    async fn get(addr: SocketAddr, token: Option<&str>) -> (u16, Option<HeaderValue>, String) {
        let mut req = client().get(format!("http://{addr}/whoami"));
        if let Some(token) = token {
            req = req.header("Cf-Access-Jwt-Assertion", token);
        }
        let res = req.send().await.unwrap();
        let challenge = res.headers().get(header::WWW_AUTHENTICATE).cloned();
        (res.status().as_u16(), challenge, res.text().await.unwrap())
    }

    fn code(body: &str) -> String {
        let json: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
        json["code"].as_str().unwrap_or_default().to_owned()
    }

    fn token(key: &DevKey, aud: &str, email: &str) -> String {
        key.sign(&user_claims(DEV_ISSUER, aud, email, unix_now(), 300))
    }

    #[tokio::test]
    async fn no_credential_is_401_with_a_challenge() {
        let key = DevKey::generate("test").unwrap();
        let addr = start(&key).await;
        let (status, challenge, body) = get(addr, None).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(code(&body), "missing_credential");
        assert!(challenge.is_some(), "a 401 says how to authenticate");
    }

    #[tokio::test]
    async fn a_valid_dev_token_reaches_the_handler_which_answers_the_callers_id() {
        let key = DevKey::generate("test").unwrap();
        let addr = start(&key).await;
        let (status, _, body) = get(addr, Some(&token(&key, DEV_AUD, DEV_EMAIL))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, "user:dev@localhost\n");
    }

    #[tokio::test]
    async fn a_token_for_another_audience_is_401() {
        let key = DevKey::generate("test").unwrap();
        let addr = start(&key).await;
        let (status, challenge, body) = get(addr, Some(&token(&key, "another-app", DEV_EMAIL))).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(code(&body), "invalid_token");
        assert!(challenge.is_some());
    }

    #[tokio::test]
    async fn a_proven_user_the_policy_does_not_name_is_403() {
        let key = DevKey::generate("test").unwrap();
        let addr = start(&key).await;
        let (status, _, body) = get(addr, Some(&token(&key, DEV_AUD, "mallory@localhost"))).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(code(&body), "forbidden");
    }

    #[tokio::test]
    async fn a_token_signed_by_another_key_under_the_same_kid_is_401() {
        let key = DevKey::generate("test").unwrap();
        let impostor = DevKey::generate("test").unwrap();
        let addr = start(&key).await;
        let (status, _, body) = get(addr, Some(&token(&impostor, DEV_AUD, DEV_EMAIL))).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(code(&body), "invalid_token");
    }
}
