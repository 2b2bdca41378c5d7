//! ztgate in front of a tonic (gRPC) service, through the gate's async check rather than its
//! Tower layer's HTTP answers: every call is proven by an interceptor (`auth.rs`) that asks
//! the gate the per-method policies select ([`RoutePolicies`]), puts the
//! [`Verified<Principal>`](ztgate::Verified) into the request extensions, and answers a refusal
//! as a gRPC status (`UNAUTHENTICATED`, `PERMISSION_DENIED`, ...) with the rejection's stable
//! code in its message.
//!
//! - `admin.proto`: the wire contract (`ztgate.admin.v1.Admin`: `WhoAmI`, `ListUsers`,
//!   `DeleteUser`), for grpcurl and clients in other languages;
//! - `proto.rs`: its messages, written by hand with prost's derive (no protoc, no build
//!   script), and a typed client;
//! - `auth.rs`: the interceptor, and the rejection → status table;
//! - `service.rs`: the service and its handlers, which take the proof from the extensions;
//! - `routes.rs`: who may call which method, and the server.
//!
//! This example runs offline, in dev mode only: it makes an RSA signing key at start-up, hands
//! its JWKS to the gate in memory ([`StaticFetcher`]), and prints tokens for an admin and an
//! operator with commands to try. The key lives only in this process.
//!
//! ```text
//! cargo run --example grpc_server                          # listens on 127.0.0.1:50051
//! ZTGATE_GRPC_PORT=9001 cargo run --example grpc_server    # another port (still loopback)
//! ZTGATE_API_KEYS=deploy:<16+ bytes> cargo run --example grpc_server   # API keys too
//! cargo run --example grpc_server -- call WhoAmI           # the client (ZTGATE_GRPC_TOKEN or
//!                                                          # ZTGATE_GRPC_API_KEY as credential)
//! ```
//!
//! For production, build the Access mechanism as the README builds the gate
//! (`Gate::builder(AccessConfig::new(team, [aud])).build_mechanism()` without `.fetcher(..)`,
//! so the keys come from the team's JWKS), serve TLS, and keep the rest.

mod auth;
mod proto;
mod routes;
mod service;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use ztgate::clock::unix_now;
use ztgate::dev::{DevKey, jwks_json, user_claims};
use ztgate::identity::{AccessJwt, ApiKeys, StaticFetcher};
use ztgate::{AccessConfig, ConfigError, Gate, Policy, RoutePolicies};

use crate::proto::{AdminClient, Credential, DeleteUserRequest, ListUsersRequest, WhoAmIRequest};
use crate::service::UserStore;

/// The dev issuer: the `iss` of the tokens this example mints. Never contacted: the keys come
/// from the [`StaticFetcher`].
const DEV_ISSUER: &str = "https://ztgate-dev.invalid";
/// The Access audience (AUD) tag the gate accepts.
const DEV_AUD: &str = "ztgate-grpc-dev";
/// May call every method.
const ADMIN: &str = "admin@localhost";
/// May call `WhoAmI` and `ListUsers`, not `DeleteUser`.
const OPERATOR: &str = "ops@localhost";
const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
/// The environment variable naming the port; the address is always loopback.
const PORT_VAR: &str = "ZTGATE_GRPC_PORT";
const DEFAULT_PORT: u16 = 50051;
/// `name:secret` API keys, comma-separated, accepted on `WhoAmI` and `ListUsers`.
const API_KEYS_VAR: &str = "ZTGATE_API_KEYS";
/// The client's credentials: an Access JWT, or an API key.
const TOKEN_VAR: &str = "ZTGATE_GRPC_TOKEN";
const API_KEY_VAR: &str = "ZTGATE_GRPC_API_KEY";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ran = match args.first().map(String::as_str) {
        None => run().await,
        Some("call") => call(&args[1..]).await,
        Some(_) => Err("usage: grpc_server [call WhoAmI | ListUsers | DeleteUser <email>]".to_owned()),
    };
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("grpc_server: {message}");
            ExitCode::FAILURE
        }
    }
}

fn port() -> Result<u16, String> {
    match std::env::var(PORT_VAR) {
        Ok(text) => {
            text.trim().parse::<u16>().map_err(|_| format!("{PORT_VAR}={text:?} is not a port number"))
        }
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_PORT),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{PORT_VAR} is not valid UTF-8")),
    }
}

async fn run() -> Result<(), String> {
    // ztgate's decisions (`verified`, `refused`, `no_policy`), one line each; `RUST_LOG` overrides.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port()?));
    let listener = TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;

    let api_keys = match std::env::var(API_KEYS_VAR) {
        Ok(spec) => ApiKeys::parse(&spec).map_err(|e| format!("{API_KEYS_VAR}: {e}"))?,
        Err(_) => {
            eprintln!("grpc_server: {API_KEYS_VAR} is unset: API keys are refused");
            ApiKeys::new()
        }
    };
    let key = DevKey::generate("grpc-dev").map_err(|e| e.to_string())?;
    let access = dev_access(&key).map_err(|e| e.to_string())?;
    let policies = routes::policies(RoutePolicies::new(), &access, &[ADMIN], &[OPERATOR], Arc::new(api_keys))
        .map_err(|e| e.to_string())?;
    let store = Arc::new(dev_store());

    eprintln!("grpc_server: dev mode: tokens are signed by a key made at start-up, for local use only");
    // Dev-only tokens for a dev-only key, as the hyper example prints.
    let mint =
        |email| key.sign(&user_claims(DEV_ISSUER, DEV_AUD, email, unix_now(), DEV_TOKEN_TTL.as_secs()));
    println!("listening on http://{addr} (gRPC over HTTP/2 without TLS: loopback only)");
    println!("dev mode: try");
    println!("  export ADMIN_TOKEN='{}' OPS_TOKEN='{}'", mint(ADMIN), mint(OPERATOR));
    let client = if addr.port() == DEFAULT_PORT {
        "cargo run --example grpc_server -- call".to_owned()
    } else {
        format!("{PORT_VAR}={} cargo run --example grpc_server -- call", addr.port())
    };
    println!("  {TOKEN_VAR}=$ADMIN_TOKEN {client} WhoAmI");
    println!("  {TOKEN_VAR}=$OPS_TOKEN {client} DeleteUser former@localhost    # PERMISSION_DENIED");
    println!("  {TOKEN_VAR}=$ADMIN_TOKEN {client} DeleteUser former@localhost  # OK");
    println!("  {client} WhoAmI                                # UNAUTHENTICATED");
    println!("or with grpcurl (it reads admin.proto, no protoc):");
    println!(
        "  grpcurl -plaintext -import-path examples/grpc_server -proto admin.proto \
         -H \"cf-access-jwt-assertion: $ADMIN_TOKEN\" {addr} ztgate.admin.v1.Admin/ListUsers"
    );

    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    routes::serve(listener, policies, store, shutdown).await.map_err(|e| e.to_string())
}

/// The Access mechanism of dev mode: tokens for [`DEV_AUD`] from [`DEV_ISSUER`], verified
/// against `key`'s JWKS held in memory. Its policy admits nobody: each route sets its own.
fn dev_access(key: &DevKey) -> Result<AccessJwt, ConfigError> {
    Gate::builder(AccessConfig::new(DEV_ISSUER, [DEV_AUD])?)
        .fetcher(Arc::new(StaticFetcher::new(jwks_json(&[key]))))
        .policy(Policy::new())
        .build_mechanism()
}

fn dev_store() -> UserStore {
    UserStore::new([(ADMIN, "admin"), (OPERATOR, "operator"), ("former@localhost", "operator")])
}

/// The client: `call WhoAmI`, `call ListUsers`, `call DeleteUser <email>` against the server
/// on [`PORT_VAR`], with the credential from [`TOKEN_VAR`] or [`API_KEY_VAR`] (the
/// environment, so it is not in the process list).
async fn call(args: &[String]) -> Result<(), String> {
    let credential = match (std::env::var(TOKEN_VAR), std::env::var(API_KEY_VAR)) {
        (Ok(token), _) => Credential::AccessJwt(token.trim().to_owned()),
        (_, Ok(key)) => Credential::ApiKey(key.trim().to_owned()),
        _ => Credential::None,
    };
    let mut client = AdminClient::connect(format!("http://{}:{}", Ipv4Addr::LOCALHOST, port()?))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let bad = |e| format!("the credential cannot be sent as metadata: {e}");
    let reply = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["WhoAmI"] => client
            .who_am_i(credential.attach(WhoAmIRequest {}).map_err(bad)?)
            .await
            .map(|r| format!("{:?}", r.get_ref())),
        ["ListUsers"] => client
            .list_users(credential.attach(ListUsersRequest {}).map_err(bad)?)
            .await
            .map(|r| format!("{:?}", r.get_ref())),
        ["DeleteUser", email] => {
            let request = credential.attach(DeleteUserRequest { email: (*email).to_owned() }).map_err(bad)?;
            client.delete_user(request).await.map(|r| format!("{:?}", r.get_ref()))
        }
        _ => return Err("usage: grpc_server call WhoAmI | ListUsers | DeleteUser <email>".to_owned()),
    };
    match reply {
        Ok(reply) => {
            println!("OK {reply}");
            Ok(())
        }
        Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
    }
}
