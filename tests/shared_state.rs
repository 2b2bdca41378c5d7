//! Shared state in the pipeline, in memory: failed-authentication budgets answered 429 before
//! any signature work, request budgets on public routes, revocations checked on every
//! verified request, and what happens when a store cannot answer.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{AUD, JwksServer, NOW, TEAM, clock};
use ztgate::dev::{DevKey, user_claims};
use ztgate::identity::shared_state::{
    Budget, InMemoryRateLimiter, InMemoryRevocations, RateLimit, RateLimiter, Revocation, RevocationKind,
    RevocationList, StateError,
};
use ztgate::identity::{AccessJwt, ApiKeyAuth, ApiKeys, Requirement, TokenCacheConfig};
use ztgate::native::HttpFetcher;
use ztgate::{AccessConfig, BoxFuture, Gate, Policy, Rejection, RoutePolicies};

const OPS_KEY: &str = "ops-key-0123456789abcdef01234567"; // pragma: allowlist secret
const WRONG_KEY: &str = "wrong-key-0123456789abcdef0123456"; // pragma: allowlist secret

fn key() -> &'static DevKey {
    static KEY: OnceLock<DevKey> = OnceLock::new();
    KEY.get_or_init(|| common::key("k1"))
}

fn api_keys() -> Requirement {
    Requirement::mechanism(ApiKeyAuth::new(Arc::new(ApiKeys::parse(&format!("ops:{OPS_KEY}")).unwrap())))
}

fn limiter(limit: u32) -> Arc<InMemoryRateLimiter> {
    Arc::new(InMemoryRateLimiter::new(Budget::new(limit, Duration::from_secs(60)).unwrap(), clock()))
}

fn request(ip: &str, headers: &[(&str, &str)]) -> http::Request<()> {
    let mut builder = http::Request::builder().uri("/admin/x").header("cf-connecting-ip", ip);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

async fn code(gate: &Gate, req: &http::Request<()>) -> &'static str {
    match gate.check(req).await {
        Ok(_) => "ok",
        Err(r) => r.code(),
    }
}

#[tokio::test]
async fn failed_logins_beyond_the_budget_are_429_with_retry_after() {
    let gate = Gate::new(api_keys()).with_rate_limit(RateLimit::failures(limiter(3)));
    for _ in 0..3 {
        assert_eq!(
            code(&gate, &request("192.0.2.1", &[("x-api-key", WRONG_KEY)])).await,
            "invalid_credential"
        );
    }
    let refusal = gate.check(&request("192.0.2.1", &[("x-api-key", WRONG_KEY)])).await.unwrap_err();
    assert_eq!(refusal.code(), "too_many_requests");
    assert_eq!(refusal.status(), 429);
    let response = refusal.to_response::<String>();
    assert_eq!(response.headers()["retry-after"], "20");
    // The client is blocked, even with the right key now: the budget is the client's.
    assert_eq!(code(&gate, &request("192.0.2.1", &[("x-api-key", OPS_KEY)])).await, "too_many_requests");
    // Another client has its own budget.
    assert_eq!(code(&gate, &request("192.0.2.2", &[("x-api-key", OPS_KEY)])).await, "ok");
}

#[tokio::test]
async fn successes_and_missing_credentials_spend_nothing() {
    let gate = Gate::new(api_keys()).with_rate_limit(RateLimit::failures(limiter(2)));
    for _ in 0..20 {
        assert_eq!(code(&gate, &request("192.0.2.1", &[("x-api-key", OPS_KEY)])).await, "ok");
        assert_eq!(code(&gate, &request("192.0.2.1", &[])).await, "missing_credential");
    }
    assert_eq!(code(&gate, &request("192.0.2.1", &[("x-api-key", WRONG_KEY)])).await, "invalid_credential");
    assert_eq!(code(&gate, &request("192.0.2.1", &[("x-api-key", WRONG_KEY)])).await, "invalid_credential");
    assert_eq!(code(&gate, &request("192.0.2.1", &[("x-api-key", WRONG_KEY)])).await, "too_many_requests");
}

#[tokio::test]
async fn one_credential_guessed_from_many_addresses_is_blocked_by_its_own_budget() {
    let gate = Gate::new(api_keys()).with_rate_limit(RateLimit::failures(limiter(3)));
    for i in 0..3 {
        let ip = format!("198.51.100.{i}");
        assert_eq!(code(&gate, &request(&ip, &[("x-api-key", WRONG_KEY)])).await, "invalid_credential");
    }
    assert_eq!(code(&gate, &request("198.51.100.9", &[("x-api-key", WRONG_KEY)])).await, "too_many_requests");
}

#[tokio::test]
async fn a_blocked_client_costs_no_signature_check() {
    let jwks = JwksServer::start(&[key()]).await;
    let access = Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
        .fetcher(Arc::new(HttpFetcher::new(&jwks.url()).unwrap()))
        .clock(clock())
        .token_cache(TokenCacheConfig::disabled())
        .policy(Policy::new().allow_emails(["alice@acme.com"]))
        .build_mechanism()
        .unwrap();
    let access = Arc::new(access);
    let gate = Gate::new(Requirement::mechanism(SharedAccess(access.clone())))
        .with_rate_limit(RateLimit::failures(limiter(2)));
    // Signed by another key with the same kid: the signature check runs and fails.
    let forged = common::key("k1").sign(&user_claims(TEAM, AUD, "alice@acme.com", NOW, 600));
    let header = [("cf-access-jwt-assertion", forged.as_str())];
    assert_eq!(code(&gate, &request("192.0.2.7", &header)).await, "invalid_token");
    assert_eq!(code(&gate, &request("192.0.2.7", &header)).await, "invalid_token");
    let checked = access.verifier().signatures_checked();
    assert_eq!(checked, 2);
    for _ in 0..50 {
        assert_eq!(code(&gate, &request("192.0.2.7", &header)).await, "too_many_requests");
    }
    assert_eq!(access.verifier().signatures_checked(), checked, "a blocked request checked a signature");
}

/// The Access mechanism behind an `Arc`, so the test can read its counters.
#[derive(Debug)]
struct SharedAccess(Arc<AccessJwt>);

impl ztgate::identity::Mechanism for SharedAccess {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn attempt<'a>(
        &'a self,
        facts: &'a ztgate::request::RequestFacts,
    ) -> BoxFuture<'a, ztgate::identity::Attempt> {
        self.0.attempt(facts)
    }
}

#[tokio::test]
async fn a_public_form_has_a_request_budget_of_its_own() {
    let form_limit = RateLimit::requests(limiter(2), "subscribe");
    let table = RoutePolicies::new()
        .with_rate_limit(RateLimit::failures(limiter(100)))
        .route_with_rate_limit("POST", "/api/subscribe", Requirement::public(), form_limit)
        .unwrap()
        .route("GET", "/healthz", Requirement::public())
        .unwrap();
    let post =
        |ip: &str| http::Request::post("/api/subscribe").header("cf-connecting-ip", ip).body(()).unwrap();
    let gate_for = |req: &http::Request<()>| {
        use ztgate::SelectGate;
        table.select(req.method(), req.uri().path()).unwrap()
    };
    let first = post("203.0.113.5");
    let gate = gate_for(&first);
    assert_eq!(code(&gate, &first).await, "ok");
    assert_eq!(code(&gate, &post("203.0.113.5")).await, "ok");
    assert_eq!(code(&gate, &post("203.0.113.5")).await, "too_many_requests");
    assert_eq!(code(&gate, &post("203.0.113.6")).await, "ok", "another client has its own budget");
    // The health check is public and spends nothing: requests are not failures.
    let health = http::Request::get("/healthz").header("cf-connecting-ip", "203.0.113.5").body(()).unwrap();
    for _ in 0..10 {
        assert_eq!(code(&gate_for(&health), &health).await, "ok");
    }
}

#[tokio::test]
async fn a_revoked_api_key_is_refused_on_the_next_request() {
    let list = Arc::new(InMemoryRevocations::default());
    let gate = Gate::new(api_keys()).with_revocations(list.clone());
    let req = request("192.0.2.1", &[("x-api-key", OPS_KEY)]);
    assert_eq!(code(&gate, &req).await, "ok");
    list.revoke(&Revocation::new(RevocationKind::ApiKey, "ops").unwrap()).await.unwrap();
    let refusal = gate.check(&req).await.unwrap_err();
    assert_eq!(refusal, Rejection::Revoked { mechanism: "api_key" });
    assert_eq!(refusal.status(), 401);
}

#[tokio::test]
async fn a_revoked_access_login_and_a_revoked_second_credential_are_refused() {
    let jwks = JwksServer::start(&[key()]).await;
    let access = || {
        Requirement::mechanism(
            Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
                .fetcher(Arc::new(HttpFetcher::new(&jwks.url()).unwrap()))
                .clock(clock())
                .policy(Policy::new().allow_emails(["alice@acme.com", "bob@acme.com"]))
                .build_mechanism()
                .unwrap(),
        )
    };
    let list = Arc::new(InMemoryRevocations::default());
    let gate = Gate::new(access()).with_revocations(list.clone());
    let mut alice = user_claims(TEAM, AUD, "alice@acme.com", NOW, 600);
    alice["identity_nonce"] = serde_json::json!("login-alice-1");
    let alice = key().sign(&alice);
    let bob = key().sign(&user_claims(TEAM, AUD, "bob@acme.com", NOW, 600));
    let req = |token: &str| request("192.0.2.1", &[("cf-access-jwt-assertion", token)]);
    // One login of Alice, by its nonce: the cached verification does not get around it.
    assert_eq!(code(&gate, &req(&alice)).await, "ok");
    list.revoke(&Revocation::new(RevocationKind::AccessSub, "login-alice-1").unwrap()).await.unwrap();
    assert_eq!(code(&gate, &req(&alice)).await, "revoked");
    // Every login of Bob, by his sub.
    assert_eq!(code(&gate, &req(&bob)).await, "ok");
    list.revoke(&Revocation::new(RevocationKind::AccessSub, "sub-bob@acme.com").unwrap()).await.unwrap();
    assert_eq!(code(&gate, &req(&bob)).await, "revoked");

    // Access and an API key: revoking the key refuses the pair.
    let carol = key().sign(&user_claims(TEAM, AUD, "alice@acme.com", NOW, 600));
    let both = Gate::new(Requirement::all_of([access(), api_keys()])).with_revocations(list.clone());
    let pair = request("192.0.2.1", &[("cf-access-jwt-assertion", &carol), ("x-api-key", OPS_KEY)]);
    assert_eq!(code(&both, &pair).await, "ok");
    list.revoke(&Revocation::new(RevocationKind::ApiKey, "ops").unwrap()).await.unwrap();
    assert_eq!(both.check(&pair).await.unwrap_err(), Rejection::Revoked { mechanism: "api_key" });
}

/// A store that is down.
#[derive(Debug)]
struct Down;

impl RevocationList for Down {
    fn any_revoked<'a>(&'a self, _: &'a [Revocation]) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async { Err(StateError::Unavailable("connection refused".into())) })
    }
    fn revoke<'a>(&'a self, _: &'a Revocation) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async { Err(StateError::Unavailable("connection refused".into())) })
    }
    fn list(&self) -> BoxFuture<'_, Result<Vec<Revocation>, StateError>> {
        Box::pin(async { Err(StateError::Unavailable("connection refused".into())) })
    }
}

impl RateLimiter for Down {
    fn check<'a>(&'a self, _: &'a [String]) -> BoxFuture<'a, Result<Option<Duration>, StateError>> {
        Box::pin(async { Err(StateError::Unavailable("connection refused".into())) })
    }
    fn spend<'a>(&'a self, _: &'a [String]) -> BoxFuture<'a, Result<Option<Duration>, StateError>> {
        Box::pin(async { Err(StateError::Unavailable("connection refused".into())) })
    }
}

#[tokio::test]
async fn a_revocation_list_that_cannot_answer_refuses_and_a_rate_limiter_lets_through_unless_told() {
    let req = request("192.0.2.1", &[("x-api-key", OPS_KEY)]);
    let revocations_down = Gate::new(api_keys()).with_revocations(Arc::new(Down));
    let refusal = revocations_down.check(&req).await.unwrap_err();
    assert_eq!(refusal.code(), "state_unavailable");
    assert_eq!(refusal.status(), 503);
    // ... unless the operator chose, by its long name, to let them through unchecked.
    let unchecked = Gate::new(api_keys())
        .with_revocations(Arc::new(Down))
        .allow_unchecked_while_revocations_unavailable();
    assert_eq!(code(&unchecked, &req).await, "ok");
    let table = RoutePolicies::new()
        .with_revocations(Arc::new(Down))
        .allow_unchecked_while_revocations_unavailable()
        .route("*", "/admin/{*rest}", api_keys())
        .unwrap();
    let gate = {
        use ztgate::SelectGate;
        table.select(req.method(), req.uri().path()).unwrap()
    };
    assert_eq!(code(&gate, &req).await, "ok");
    // A limiter that cannot answer lets requests through by default...
    let open = Gate::new(api_keys()).with_rate_limit(RateLimit::failures(Arc::new(Down)));
    assert_eq!(code(&open, &req).await, "ok");
    // ... and refuses them when the operator says so.
    let closed = Gate::new(api_keys()).with_rate_limit(RateLimit::failures(Arc::new(Down)).fail_closed());
    assert_eq!(code(&closed, &req).await, "state_unavailable");
}
