//! gRPC: the interceptor of `examples/grpc_server` (ztgate's async check in front of a tonic
//! service) through real HTTP/2 on 127.0.0.1, with a tonic client and Access tokens signed at
//! test time by keys made at test time.
//!
//! The example's own modules are compiled in here, so what is tested is what the example runs.
//! Cases of the threat model: no or bad credentials are `UNAUTHENTICATED`, a proven caller the
//! method's policy does not admit is `PERMISSION_DENIED`, a method nobody declared is closed,
//! a handler without the interceptor refuses, and no status carries the credential.

#[path = "../examples/grpc_server/auth.rs"]
mod auth;
#[path = "../examples/grpc_server/proto.rs"]
mod proto;
#[path = "../examples/grpc_server/routes.rs"]
mod routes;
#[path = "../examples/grpc_server/service.rs"]
mod service;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Server as TonicServer;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Status};
use ztgate::clock::{SystemClock, unix_now};
use ztgate::dev::{DevKey, jwks_json, user_claims};
use ztgate::identity::shared_state::{Budget, InMemoryRateLimiter, RateLimit};
use ztgate::identity::{AccessJwt, ApiKeys, StaticFetcher, TokenError};
use ztgate::request::RequestError;
use ztgate::{AccessConfig, Gate, Policy, Rejection, RoutePolicies};

use crate::proto::{
    AdminClient, Credential, DeleteUserRequest, ListUsersRequest, METHODS, WhoAmIReply, WhoAmIRequest,
};
use crate::service::{Admin, UserStore};

const ISSUER: &str = "https://ztgate-grpc-test.invalid";
const AUD: &str = "ztgate-grpc-test";
const ADMIN: &str = "admin@localhost";
const OPERATOR: &str = "ops@localhost";
const FORMER: &str = "former@localhost";
/// A made-up API key named `deploy`.
const API_KEYS: &str = "deploy:0123456789abcdef0123456789abcdef"; // pragma: allowlist secret
const API_KEY: &str = "0123456789abcdef0123456789abcdef"; // pragma: allowlist secret

/// A server on 127.0.0.1:0; it stops when dropped.
struct Running {
    addr: SocketAddr,
    store: Arc<UserStore>,
    _stop: oneshot::Sender<()>,
}

impl Running {
    async fn client(&self) -> AdminClient {
        AdminClient::connect(format!("http://{}", self.addr)).await.unwrap()
    }
}

/// The issuer's key, made once for all the tests (RSA key generation is the slow part).
fn key() -> &'static DevKey {
    static KEY: LazyLock<DevKey> = LazyLock::new(|| DevKey::generate("k1").unwrap());
    &KEY
}

/// Another key under the same `kid`: what a forger would sign with.
fn impostor() -> &'static DevKey {
    static KEY: LazyLock<DevKey> = LazyLock::new(|| DevKey::generate("k1").unwrap());
    &KEY
}

fn store() -> Arc<UserStore> {
    Arc::new(UserStore::new([(ADMIN, "admin"), (OPERATOR, "operator"), (FORMER, "operator")]))
}

/// The Access mechanism, verifying against `key`'s JWKS (or the JWKS at `certs_url`).
fn access(key: &DevKey, certs_url: Option<String>) -> AccessJwt {
    let builder = Gate::builder(AccessConfig::new(ISSUER, [AUD]).unwrap()).policy(Policy::new());
    let builder = match certs_url {
        Some(url) => builder.certs_url(url),
        None => builder.fetcher(Arc::new(StaticFetcher::new(jwks_json(&[key])))),
    };
    builder.build_mechanism().unwrap()
}

/// The example's table for `key`'s tokens, on `base`.
fn policies(key: &DevKey, base: RoutePolicies) -> RoutePolicies {
    let keys = Arc::new(ApiKeys::parse(API_KEYS).unwrap());
    routes::policies(base, &access(key, None), &[ADMIN], &[OPERATOR], keys).unwrap()
}

/// The example's server (interceptor, service, limits) under `policies`.
async fn start_with(policies: RoutePolicies) -> Running {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = store();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = store.clone();
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        routes::serve(listener, policies, served, shutdown).await.unwrap();
    });
    Running { addr, store, _stop: stop }
}

async fn start(key: &DevKey) -> Running {
    start_with(policies(key, RoutePolicies::new())).await
}

fn token(key: &DevKey, email: &str) -> String {
    key.sign(&user_claims(ISSUER, AUD, email, unix_now(), 300))
}

fn jwt(token: &str) -> Credential {
    Credential::AccessJwt(token.to_owned())
}

async fn who_am_i(running: &Running, credential: Credential) -> Result<WhoAmIReply, Status> {
    let request = credential.attach(WhoAmIRequest {}).unwrap();
    running.client().await.who_am_i(request).await.map(tonic::Response::into_inner)
}

async fn delete(running: &Running, credential: Credential, email: &str) -> Result<String, Status> {
    let request = credential.attach(DeleteUserRequest { email: email.to_owned() }).unwrap();
    running.client().await.delete_user(request).await.map(|r| r.into_inner().deleted_by)
}

/// `result` is a refusal with `code` whose message starts with the rejection's stable `machine`
/// code, and neither its message nor its metadata holds `secret`.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    machine: &str,
    secret: &str,
) -> Status {
    let status = result.expect_err("the call must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().starts_with(&format!("{machine}: ")), "{:?}", status.message());
    assert_no_secret(&status, secret);
    status
}

#[track_caller]
fn assert_no_secret(status: &Status, secret: &str) {
    if secret.is_empty() {
        return;
    }
    assert!(!status.message().contains(secret), "the status message repeats the credential");
    for entry in status.metadata().clone().into_headers().values() {
        assert!(
            !String::from_utf8_lossy(entry.as_bytes()).contains(secret),
            "the metadata repeats the credential"
        );
    }
}

#[tokio::test]
async fn no_metadata_is_unauthenticated_with_a_challenge() {
    let key = key();
    let running = start(key).await;
    let status = assert_refused(
        who_am_i(&running, Credential::None).await,
        Code::Unauthenticated,
        "missing_credential",
        "",
    );
    assert!(status.metadata().get("www-authenticate").is_some(), "a 401 says how to authenticate");
}

#[tokio::test]
async fn garbage_token_is_unauthenticated() {
    let key = key();
    let running = start(key).await;
    let garbage = "not-a-jwt-but-a-secret-looking-value"; // pragma: allowlist secret
    assert_refused(who_am_i(&running, jwt(garbage)).await, Code::Unauthenticated, "invalid_token", garbage);
}

#[tokio::test]
async fn token_signed_by_another_key_under_the_same_kid_is_unauthenticated() {
    let key = key();
    let impostor = impostor();
    let running = start(key).await;
    let forged = token(impostor, ADMIN);
    assert_refused(who_am_i(&running, jwt(&forged)).await, Code::Unauthenticated, "invalid_token", &forged);
}

#[tokio::test]
async fn expired_token_is_unauthenticated() {
    let key = key();
    let running = start(key).await;
    let expired = key.sign(&user_claims(ISSUER, AUD, ADMIN, unix_now() - 7200, 3600));
    assert_refused(who_am_i(&running, jwt(&expired)).await, Code::Unauthenticated, "token_expired", &expired);
}

#[tokio::test]
async fn token_for_another_audience_is_unauthenticated() {
    let key = key();
    let running = start(key).await;
    let other = key.sign(&user_claims(ISSUER, "another-app", ADMIN, unix_now(), 300));
    assert_refused(who_am_i(&running, jwt(&other)).await, Code::Unauthenticated, "invalid_token", &other);
}

#[tokio::test]
async fn proven_user_not_on_the_list_is_permission_denied() {
    let key = key();
    let running = start(key).await;
    let mallory = token(key, "mallory@localhost");
    assert_refused(who_am_i(&running, jwt(&mallory)).await, Code::PermissionDenied, "forbidden", &mallory);
}

#[tokio::test]
async fn allowed_user_is_answered_and_the_reply_carries_the_principal_id() {
    let key = key();
    let running = start(key).await;
    let reply = who_am_i(&running, jwt(&token(key, ADMIN))).await.unwrap();
    assert_eq!(reply.principal_id, "user:admin@localhost");
    assert_eq!(reply.kind, "user");
    assert_eq!(reply.proved_by, ["access_jwt"]);
    let reply = who_am_i(&running, jwt(&token(key, OPERATOR))).await.unwrap();
    assert_eq!(reply.principal_id, "user:ops@localhost");
}

#[tokio::test]
async fn operator_may_list_users_but_deleting_one_is_permission_denied_and_deletes_nothing() {
    let key = key();
    let running = start(key).await;
    let ops = token(key, OPERATOR);
    let request = jwt(&ops).attach(ListUsersRequest {}).unwrap();
    let listed = running.client().await.list_users(request).await.unwrap().into_inner();
    assert_eq!(listed.users.len(), 3);

    assert_refused(delete(&running, jwt(&ops), FORMER).await, Code::PermissionDenied, "forbidden", &ops);
    assert!(running.store.deletions().is_empty());
    let request = jwt(&ops).attach(ListUsersRequest {}).unwrap();
    let listed = running.client().await.list_users(request).await.unwrap().into_inner();
    assert!(listed.users.iter().any(|u| u.email == FORMER), "{listed:?}");
}

#[tokio::test]
async fn admin_deletes_a_user_and_the_store_records_who() {
    let key = key();
    let running = start(key).await;
    let deleted_by = delete(&running, jwt(&token(key, ADMIN)), FORMER).await.unwrap();
    assert_eq!(deleted_by, "user:admin@localhost");
    assert_eq!(running.store.deletions(), [(FORMER.to_owned(), "user:admin@localhost".to_owned())]);
    let again = delete(&running, jwt(&token(key, ADMIN)), FORMER).await;
    assert_eq!(again.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn api_key_as_bearer_or_x_api_key_reads_but_cannot_delete() {
    let key = key();
    let running = start(key).await;
    let reply = who_am_i(&running, Credential::ApiKey(API_KEY.to_owned())).await.unwrap();
    assert_eq!(
        (reply.principal_id.as_str(), reply.proved_by.as_slice()),
        ("api_key:deploy", &["api_key".to_owned()][..])
    );

    let mut request = Request::new(WhoAmIRequest {});
    request.metadata_mut().insert("x-api-key", API_KEY.parse().unwrap());
    let reply = running.client().await.who_am_i(request).await.unwrap().into_inner();
    assert_eq!(reply.principal_id, "api_key:deploy");

    // DeleteUser takes an Access login only: a key is no credential there.
    let refused = delete(&running, Credential::ApiKey(API_KEY.to_owned()), FORMER).await;
    assert_refused(refused, Code::Unauthenticated, "missing_credential", API_KEY);
    assert!(running.store.deletions().is_empty());
}

#[tokio::test]
async fn wrong_api_key_is_unauthenticated() {
    let key = key();
    let running = start(key).await;
    let wrong = "0123456789abcdef0123456789abcdee"; // pragma: allowlist secret
    let refused = who_am_i(&running, Credential::ApiKey(wrong.to_owned())).await;
    assert_refused(refused, Code::Unauthenticated, "invalid_credential", wrong);
}

#[tokio::test]
async fn unknown_method_of_the_service_asks_for_identity_before_answering_unimplemented() {
    let key = key();
    let running = start(key).await;
    let path = "/ztgate.admin.v1.Admin/DropAllUsers";
    let anonymous =
        running.client().await.unary::<_, WhoAmIReply>(Request::new(WhoAmIRequest {}), path).await;
    assert_refused(anonymous, Code::Unauthenticated, "missing_credential", "");
    let request = jwt(&token(key, ADMIN)).attach(WhoAmIRequest {}).unwrap();
    let proven = running.client().await.unary::<_, WhoAmIReply>(request, path).await;
    assert_eq!(proven.unwrap_err().code(), Code::Unimplemented);
}

#[tokio::test]
async fn a_service_nobody_declared_is_permission_denied_even_for_an_admin() {
    let key = key();
    let running = start(key).await;
    let admin = token(key, ADMIN);
    let request = jwt(&admin).attach(WhoAmIRequest {}).unwrap();
    let refused =
        running.client().await.unary::<_, WhoAmIReply>(request, "/grpc.health.v1.Health/Check").await;
    assert_refused(refused, Code::PermissionDenied, "no_policy", &admin);
}

#[tokio::test]
async fn oversized_token_is_resource_exhausted_before_any_verification() {
    let key = key();
    let running = start(key).await;
    // Over ztgate's 16 KiB credential limit, under the server's 64 KiB header block.
    let huge = "a".repeat(20 * 1024);
    assert_refused(who_am_i(&running, jwt(&huge)).await, Code::ResourceExhausted, "header_too_large", &huge);
}

#[tokio::test]
async fn repeated_failures_are_resource_exhausted_with_retry_after() {
    let key = key();
    let budget = Budget::new(2, Duration::from_secs(60)).unwrap();
    let limiter = Arc::new(InMemoryRateLimiter::new(budget, Arc::new(SystemClock)));
    let running =
        start_with(policies(key, RoutePolicies::new().with_rate_limit(RateLimit::failures(limiter)))).await;
    let forged = token(impostor(), ADMIN);
    assert_refused(who_am_i(&running, jwt(&forged)).await, Code::Unauthenticated, "invalid_token", &forged);
    let mut last = None;
    for _ in 0..4 {
        let result = who_am_i(&running, jwt(&forged)).await;
        if result.as_ref().is_err_and(|s| s.code() == Code::ResourceExhausted) {
            last = Some(result);
            break;
        }
    }
    let status = assert_refused(
        last.expect("the budget ran out"),
        Code::ResourceExhausted,
        "too_many_requests",
        &forged,
    );
    assert!(status.metadata().get("retry-after").is_some(), "{status:?}");
}

#[tokio::test]
async fn keys_unreachable_is_unavailable_with_retry_after() {
    let key = key();
    // A loopback port nobody listens on: the JWKS fetch is refused at once.
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap().local_addr().unwrap();
    let access = access(key, Some(format!("http://{closed}/cdn-cgi/access/certs")));
    let keys = Arc::new(ApiKeys::new());
    let table = routes::policies(RoutePolicies::new(), &access, &[ADMIN], &[], keys).unwrap();
    let running = start_with(table).await;
    let admin = token(key, ADMIN);
    let status =
        assert_refused(who_am_i(&running, jwt(&admin)).await, Code::Unavailable, "keys_unavailable", &admin);
    assert!(status.metadata().get("retry-after").is_some(), "{status:?}");
}

#[tokio::test]
async fn without_the_interceptor_every_handler_refuses_and_the_store_is_untouched() {
    let key = key();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = store();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = store.clone();
    tokio::spawn(async move {
        // The service alone: the layer left out by mistake.
        TonicServer::builder()
            .add_service(Admin::new(served))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    let running = Running { addr, store, _stop: stop };
    let admin = token(key, ADMIN);
    assert_refused(
        who_am_i(&running, jwt(&admin)).await,
        Code::Unauthenticated,
        "identity_layer_missing",
        &admin,
    );
    let request = jwt(&admin).attach(ListUsersRequest {}).unwrap();
    let listed = running.client().await.list_users(request).await;
    assert_refused(listed, Code::Unauthenticated, "identity_layer_missing", &admin);
    let deleted = delete(&running, jwt(&admin), FORMER).await;
    assert_refused(deleted, Code::Unauthenticated, "identity_layer_missing", &admin);
    assert!(running.store.deletions().is_empty());
}

#[tokio::test]
async fn no_refusal_repeats_the_token_in_its_status() {
    let key = key();
    let running = start(key).await;
    let impostor = impostor();
    let cases = [
        token(impostor, ADMIN),
        key.sign(&user_claims(ISSUER, AUD, ADMIN, unix_now() - 7200, 3600)),
        key.sign(&user_claims(ISSUER, "another-app", ADMIN, unix_now(), 300)),
        token(key, "mallory@localhost"),
        format!("{}.tampered", token(key, ADMIN)),
    ];
    for bad in &cases {
        let status = who_am_i(&running, jwt(bad)).await.expect_err("refused");
        assert_no_secret(&status, bad);
        // Nor any of its segments (the signature alone is as telling).
        for segment in bad.split('.').filter(|s| s.len() >= 16) {
            assert_no_secret(&status, segment);
        }
    }
    let ops = token(key, OPERATOR);
    let status = delete(&running, jwt(&ops), FORMER).await.expect_err("refused");
    for segment in ops.split('.') {
        assert_no_secret(&status, segment);
    }
}

#[test]
fn every_rejection_has_its_grpc_code_and_its_machine_code_in_the_message() {
    let after = Duration::from_secs(7);
    let cases = [
        (Rejection::MissingCredential, Code::Unauthenticated),
        (Rejection::InvalidToken(TokenError::Signature), Code::Unauthenticated),
        (Rejection::InvalidToken(TokenError::Expired), Code::Unauthenticated),
        (Rejection::InvalidCredential { mechanism: "api_key", reason: "unknown key" }, Code::Unauthenticated),
        (Rejection::Revoked { mechanism: "api_key" }, Code::Unauthenticated),
        (Rejection::SessionTooOld, Code::Unauthenticated),
        (Rejection::Forbidden, Code::PermissionDenied),
        (Rejection::NoPolicy, Code::PermissionDenied),
        (Rejection::TooManyRequests { retry_after: after }, Code::ResourceExhausted),
        (Rejection::PayloadTooLarge { limit: 9 }, Code::ResourceExhausted),
        (
            Rejection::Request(RequestError::HeaderTooLarge { header: "Cookie", limit: 1 }),
            Code::ResourceExhausted,
        ),
        (Rejection::Request(RequestError::NotText { header: "X-Api-Key" }), Code::InvalidArgument),
        (Rejection::Request(RequestError::AmbiguousCredential { name: "Cookie" }), Code::InvalidArgument),
        (Rejection::KeysUnavailable { retry_after: after }, Code::Unavailable),
        (Rejection::IdentityUnavailable { retry_after: after }, Code::Unavailable),
        (Rejection::StateUnavailable { what: "replay store" }, Code::Unavailable),
        (Rejection::NotConfigured { what: "webhook secret" }, Code::Unavailable),
        (Rejection::Replayed, Code::AlreadyExists),
        (Rejection::LayerMissing, Code::Internal),
    ];
    for (rejection, code) in cases {
        let status = auth::status_of(&rejection);
        assert_eq!(status.code(), code, "{rejection:?}");
        assert_eq!(status.message(), format!("{}: {rejection}", rejection.code()));
        let retries = status.metadata().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        let expected = ["keys_unavailable", "identity_unavailable", "too_many_requests"]
            .contains(&rejection.code())
            .then(|| "7".to_owned());
        assert_eq!(retries, expected, "{rejection:?}");
    }
}

#[test]
fn admin_proto_declares_exactly_the_methods_the_service_serves() {
    let proto = include_str!("../examples/grpc_server/admin.proto");
    let declared: Vec<(String, String, String)> = proto
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("rpc ")?;
            let (name, rest) = rest.split_once('(')?;
            let (request, rest) = rest.split_once(") returns (")?;
            let (reply, _) = rest.split_once(')')?;
            Some((name.to_owned(), request.to_owned(), reply.to_owned()))
        })
        .collect();
    let served: Vec<(String, String, String)> =
        METHODS.iter().map(|(n, q, r)| ((*n).to_owned(), (*q).to_owned(), (*r).to_owned())).collect();
    assert_eq!(declared, served);
    assert!(proto.contains(&format!("package {};", proto::SERVICE.rsplit_once('.').unwrap().0)));
    assert!(proto.contains(&format!("service {} {{", proto::SERVICE.rsplit_once('.').unwrap().1)));
    for (name, _, _) in &served {
        assert!(
            [proto::WHO_AM_I, proto::LIST_USERS, proto::DELETE_USER]
                .contains(&format!("/{}/{name}", proto::SERVICE).as_str())
        );
    }
}
