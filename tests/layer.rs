//! The Tower layer and the axum extractor: identity runs first, storage only with proof.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::routing::get;
use common::*;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use ztgate::dev::user_claims;
use ztgate::{Principal, Verified};

#[tokio::test]
async fn layer_inserts_the_verified_principal_and_calls_the_inner_service() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let svc = ServiceBuilder::new().layer(gate(&server.url(), clock())).service(service_fn(
        move |req: http::Request<String>| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                let who = req.extensions().get::<Verified<Principal>>().expect("inserted by the layer");
                Ok::<_, Infallible>(http::Response::new(who.id()))
            }
        },
    ));
    let token = key.sign(&user_claims(TEAM, AUD, "alice@acme.com", NOW, 60));
    let response = svc.clone().oneshot(request_with_token(&token)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body(), "user:alice@acme.com");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn refused_requests_never_reach_the_inner_service() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let svc = ServiceBuilder::new().layer(gate(&server.url(), clock())).service(service_fn(
        move |_req: http::Request<String>| {
            seen.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(http::Response::new(String::from("storage touched"))) }
        },
    ));
    let no_token = http::Request::builder().uri("/admin").body(String::new()).unwrap();
    let forbidden = request_with_token(&key.sign(&user_claims(TEAM, AUD, "mallory@acme.com", NOW, 60)));
    let expired = request_with_token(&key.sign(&user_claims(TEAM, AUD, "alice@acme.com", NOW - 3600, 60)));
    let oversized = request_with_token(&"x".repeat(64 * 1024));
    for (req, status, code) in [
        (no_token, 401, "missing_credential"),
        (forbidden, 403, "forbidden"),
        (expired, 401, "token_expired"),
        (oversized, 431, "header_too_large"),
    ] {
        let response = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(response.status(), status);
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
        assert_eq!(body["code"], code);
        assert_eq!(response.headers().contains_key("www-authenticate"), status == 401);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// An inner service that only accepts `call` on the very instance `poll_ready` readied.
struct ReadyOnce {
    ready: bool,
}

impl Clone for ReadyOnce {
    fn clone(&self) -> Self {
        Self { ready: false } // a clone has not been polled
    }
}

impl Service<http::Request<String>> for ReadyOnce {
    type Response = http::Response<String>;
    type Error = &'static str;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: http::Request<String>) -> Self::Future {
        let was_ready = std::mem::replace(&mut self.ready, false);
        std::future::ready(if was_ready {
            Ok(http::Response::new("ok".into()))
        } else {
            Err("called without readiness")
        })
    }
}

#[tokio::test]
async fn layer_calls_the_instance_that_poll_ready_readied() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let mut svc =
        ServiceBuilder::new().layer(gate(&server.url(), clock())).service(ReadyOnce { ready: false });
    let token = key.sign(&user_claims(TEAM, AUD, "alice@acme.com", NOW, 60));
    for _ in 0..3 {
        let response = svc.ready().await.unwrap().call(request_with_token(&token)).await;
        assert_eq!(response.unwrap().body(), "ok");
    }
}

async fn whoami(who: Verified<Principal>) -> String {
    who.id()
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn extractor_fails_closed_when_the_layer_is_missing() {
    // A wiring mistake: the route takes Verified<Principal> but nobody installed the Gate.
    let base = serve(Router::new().route("/admin/whoami", get(whoami))).await;
    let response = reqwest::get(format!("{base}/admin/whoami")).await.unwrap();
    assert_eq!(response.status(), 500);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "identity_layer_missing");
}

#[tokio::test]
async fn axum_router_over_real_http_admits_and_refuses() {
    let key = key("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let app = Router::new().route("/admin/whoami", get(whoami)).layer(gate(&jwks.url(), clock()));
    let base = serve(app).await;
    let client = reqwest::Client::new();
    let token = key.sign(&user_claims(TEAM, AUD, "alice@acme.com", NOW, 60));
    let ok = client
        .get(format!("{base}/admin/whoami"))
        .header("cf-access-jwt-assertion", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "user:alice@acme.com");
    // A 64 KB header through a real HTTP stack is a clean 4xx and the server keeps serving.
    let huge = client
        .get(format!("{base}/admin/whoami"))
        .header("cf-access-jwt-assertion", "a".repeat(64 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 431);
    let again =
        client.get(format!("{base}/admin/whoami")).header("cookie", format!("CF_Authorization={token}"));
    assert_eq!(again.send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn route_policies_deny_routes_nobody_declared() {
    use ztgate::RoutePolicies;
    use ztgate::identity::{ApiKeyAuth, ApiKeys, Requirement};
    let keys = Arc::new(ApiKeys::parse("ops:0123456789abcdef0123456789").unwrap());
    let policies = RoutePolicies::new()
        .route("GET", "/healthz", Requirement::public())
        .unwrap()
        .route("GET", "/ops/{*rest}", Requirement::mechanism(ApiKeyAuth::new(keys)))
        .unwrap();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/ops/stats", get(whoami))
        .route("/forgotten", get(|| async { "this handler has no policy" }))
        .layer(policies);
    let base = serve(app).await;
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    let forgotten = client.get(format!("{base}/forgotten")).send().await.unwrap();
    assert_eq!(forgotten.status(), 403);
    let body: serde_json::Value = forgotten.json().await.unwrap();
    assert_eq!(body["code"], "no_policy");
    let stats = client.get(format!("{base}/ops/stats")).header("x-api-key", "0123456789abcdef0123456789");
    let stats = stats.send().await.unwrap();
    assert_eq!(stats.status(), 200);
    assert_eq!(stats.text().await.unwrap(), "api_key:ops");
    assert_eq!(client.get(format!("{base}/ops/stats")).send().await.unwrap().status(), 401);
    // Method matters: POST on a GET-only declaration is undeclared.
    assert_eq!(client.post(format!("{base}/healthz")).send().await.unwrap().status(), 403);
}

/// A shared cache keeping an authenticated response: a CDN or corporate proxy that stores the
/// answer to one caller (a freshly minted link token, someone's notes) and serves it to the
/// next. Every response to a verified request is `private, no-store` unless its handler said
/// otherwise; refusals are `no-store`.
#[tokio::test]
async fn verified_responses_are_private_no_store_so_no_shared_cache_keeps_them() {
    use ztgate::{CachePolicy, Gate};
    let key = key("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let token = key.sign(&user_claims(TEAM, AUD, "alice@acme.com", NOW, 60));
    let call = |gate: Gate, handler_sets: Option<&'static str>, token: Option<String>| async move {
        let svc = ServiceBuilder::new().layer(gate).service(service_fn(
            move |_req: http::Request<String>| async move {
                let mut response = http::Response::new(String::from("for alice only"));
                if let Some(value) = handler_sets {
                    response.headers_mut().insert("cache-control", http::HeaderValue::from_static(value));
                }
                Ok::<_, Infallible>(response)
            },
        ));
        let req = match token {
            Some(t) => request_with_token(&t),
            None => http::Request::builder().uri("/admin").body(String::new()).unwrap(),
        };
        let response = svc.oneshot(req).await.unwrap();
        let values: Vec<String> = response
            .headers()
            .get_all("cache-control")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        (response.status().as_u16(), values)
    };
    let access = || gate(&jwks.url(), clock());
    let t = || Some(token.clone());

    // The default: added when the handler set nothing, the handler's own kept otherwise.
    assert_eq!(access().cache_policy(), CachePolicy::PrivateNoStore);
    assert_eq!(call(access(), None, t()).await, (200, vec!["private, no-store".to_owned()]));
    assert_eq!(
        call(access(), Some("private, max-age=60"), t()).await,
        (200, vec!["private, max-age=60".to_owned()])
    );
    // Forced: replaces what the handler set.
    let forced = || access().with_cache_policy(CachePolicy::ForcePrivateNoStore);
    assert_eq!(
        call(forced(), Some("public, max-age=3600"), t()).await,
        (200, vec!["private, no-store".to_owned()])
    );
    assert_eq!(call(forced(), None, t()).await, (200, vec!["private, no-store".to_owned()]));
    // Off, for routes that manage caching themselves.
    let off = || access().with_cache_policy(CachePolicy::Unchanged);
    assert_eq!(call(off(), None, t()).await, (200, vec![]));
    assert_eq!(
        call(off(), Some("public, max-age=3600"), t()).await,
        (200, vec!["public, max-age=3600".to_owned()])
    );
    // Public routes are verified too (as anonymous).
    assert_eq!(call(Gate::public(), None, None).await, (200, vec!["private, no-store".to_owned()]));
    // Refusals never reach the handler and are `no-store` whatever the policy says.
    for gate in [access(), off()] {
        assert_eq!(call(gate, Some("public, max-age=3600"), None).await, (401, vec!["no-store".to_owned()]));
    }
}

#[tokio::test]
async fn route_policies_mark_verified_responses_private_no_store_over_real_http() {
    use ztgate::RoutePolicies;
    use ztgate::identity::{ApiKeyAuth, ApiKeys, Requirement};
    let keys = Arc::new(ApiKeys::parse("ops:0123456789abcdef0123456789").unwrap());
    let policies = RoutePolicies::new()
        .route("GET", "/ops/{*rest}", Requirement::mechanism(ApiKeyAuth::new(keys)))
        .unwrap();
    let app = Router::new()
        .route("/ops/stats", get(whoami))
        .route("/ops/report", get(|| async { ([("cache-control", "private, max-age=30")], "report") }))
        .layer(policies);
    let base = serve(app).await;
    let client = reqwest::Client::new();
    let get =
        |path: &str| client.get(format!("{base}{path}")).header("x-api-key", "0123456789abcdef0123456789"); // pragma: allowlist secret
    let cache_control =
        |r: &reqwest::Response| r.headers().get("cache-control").map(|v| v.to_str().unwrap().to_owned());
    let stats = get("/ops/stats").send().await.unwrap();
    assert_eq!((stats.status().as_u16(), cache_control(&stats).as_deref()), (200, Some("private, no-store")));
    let report = get("/ops/report").send().await.unwrap();
    assert_eq!(cache_control(&report).as_deref(), Some("private, max-age=30"), "the handler's own wins");
    let refused = client.get(format!("{base}/ops/stats")).send().await.unwrap();
    assert_eq!((refused.status().as_u16(), cache_control(&refused).as_deref()), (401, Some("no-store")));
}
