//! Proving identity without Tower: a [`Call`] through [`SelectGate::check_call`] (the one
//! pipeline), and [`Gate::recheck`] for connections that outlive their request.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Uri};
use ztgate::clock::FixedClock;
use ztgate::identity::hmac_token::{KeyRing, SignedTokenAuth, TokenSource};
use ztgate::identity::shared_state::{
    InMemoryRevocations, Revocation, RevocationKind, RevocationList, StateError,
};
use ztgate::identity::{ApiKeyAuth, ApiKeys, ClientCertAuth, Requirement};
use ztgate::request::{CertVerification, ClientCertFacts, RequestLimits};
use ztgate::{BoxFuture, Call, Gate, Principal, Rejection, RoutePolicies, SelectGate};

const KEY: &str = "deploy-bot:k3y-0f-at-least-32-bytes-long-for-the-bot"; // pragma: allowlist secret
const SECRET: &str = "k3y-0f-at-least-32-bytes-long-for-the-bot"; // pragma: allowlist secret
const NOW: u64 = 1_800_000_000;
const FINGERPRINT: &str = "aa11bb22cc33dd44ee55ff6600112233445566778899aabbccddeeff00112233"; // pragma: allowlist secret

fn api_keys() -> Requirement {
    Requirement::mechanism(ApiKeyAuth::new(Arc::new(ApiKeys::parse(KEY).unwrap())))
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

async fn check<G: SelectGate<Claims = ztgate::NoClaims>>(
    selector: &G,
    method: Method,
    uri: &'static str,
    headers: &HeaderMap,
) -> Result<ztgate::Verified<Principal>, Rejection> {
    let uri = Uri::from_static(uri);
    selector.check_call(Call::new(&method, &uri, headers)).await
}

#[tokio::test]
async fn a_call_is_checked_by_the_gate_its_method_and_path_select() {
    let policies = RoutePolicies::new()
        .route("POST", "/ztgate.admin.v1.Admin/DeleteUser", api_keys())
        .unwrap()
        .route("POST", "/ztgate.admin.v1.Admin/Health", Requirement::public())
        .unwrap();
    let with_key = headers(&[("x-api-key", SECRET)]);

    let who = check(&policies, Method::POST, "/ztgate.admin.v1.Admin/DeleteUser", &with_key).await.unwrap();
    assert_eq!(who.principal().id(), "api_key:deploy-bot");
    let none = check(&policies, Method::POST, "/ztgate.admin.v1.Admin/DeleteUser", &HeaderMap::new()).await;
    assert_eq!(none.unwrap_err().code(), "missing_credential");
    let public = check(&policies, Method::POST, "/ztgate.admin.v1.Admin/Health", &HeaderMap::new()).await;
    assert_eq!(public.unwrap().principal(), &Principal::Anonymous);
    // Deny by default: no rule for the method and path.
    let undeclared = check(&policies, Method::POST, "/ztgate.admin.v1.Admin/Other", &with_key).await;
    assert_eq!(undeclared.unwrap_err().code(), "no_policy");
    let wrong_method = check(&policies, Method::GET, "/ztgate.admin.v1.Admin/DeleteUser", &with_key).await;
    assert_eq!(wrong_method.unwrap_err().code(), "no_policy");
}

#[tokio::test]
async fn a_call_is_read_with_the_request_layers_limits_and_refusals() {
    let gate = Gate::new(api_keys());
    let wrong = headers(&[("x-api-key", "another-key-of-at-least-32-bytes-long-xx")]); // pragma: allowlist secret
    assert_eq!(check(&gate, Method::POST, "/x", &wrong).await.unwrap_err().code(), "invalid_credential");
    // Two different keys in two places: ambiguous, refused by the request layer.
    let twice =
        headers(&[("x-api-key", SECRET), ("authorization", "Bearer another-key-of-at-least-32-bytes-long")]);
    assert_eq!(check(&gate, Method::POST, "/x", &twice).await.unwrap_err().status(), 400);
    // An oversized credential never reaches the mechanism.
    let huge = "k".repeat(RequestLimits::default().max_token_bytes + 1);
    let oversized = headers(&[("x-api-key", &huge)]);
    assert_eq!(check(&gate, Method::POST, "/x", &oversized).await.unwrap_err().status(), 431);
}

#[tokio::test]
async fn the_future_borrows_nothing_of_the_call() {
    let gate = Gate::new(api_keys());
    let future = {
        let (method, uri, headers) = (Method::GET, Uri::from_static("/x"), headers(&[("x-api-key", SECRET)]));
        gate.check_call(Call::new(&method, &uri, &headers))
        // method, uri and headers are dropped here; the future lives on (and is 'static).
    };
    let handle = tokio::spawn(future);
    assert_eq!(handle.await.unwrap().unwrap().principal().id(), "api_key:deploy-bot");

    // Gate::check too: neither the gate nor the request outlives the block.
    let future = {
        let gate = Gate::new(api_keys());
        let req = http::Request::builder().uri("/x").header("x-api-key", SECRET).body(()).unwrap();
        gate.check(&req)
    };
    assert_eq!(tokio::spawn(future).await.unwrap().unwrap().principal().id(), "api_key:deploy-bot");
}

fn verified_cert() -> ClientCertFacts {
    ClientCertFacts::from_tls_client_auth(|field| match field {
        "certPresented" => Some("1"),
        "certVerified" => Some("SUCCESS"),
        "certRevoked" => Some("0"),
        "certFingerprintSHA256" => Some(FINGERPRINT),
        "certSubjectDN" => Some("CN=deploy"),
        "certIssuerDN" => Some("CN=ca"),
        _ => None,
    })
}

#[tokio::test]
async fn client_cert_facts_given_by_the_platform_replace_the_headers() {
    let gate = Gate::new(Requirement::mechanism(ClientCertAuth::new()));
    let (method, uri) = (Method::GET, Uri::from_static("/mtls"));
    // Forged cf-cert-* headers, on a gate that does not trust them: never read.
    let forged = headers(&[
        ("cf-cert-presented", "true"),
        ("cf-cert-verified", "SUCCESS"),
        ("cf-cert-revoked", "false"),
        ("cf-cert-fingerprint-sha256", FINGERPRINT),
    ]);
    let refused = gate.check_call(Call::new(&method, &uri, &forged)).await.unwrap_err();
    assert_eq!(refused.code(), "missing_credential");

    // The platform's own facts (a Worker's request.cf.tlsClientAuth, a TLS terminator).
    let facts = verified_cert();
    assert_eq!(facts.verified, Some(CertVerification::Success));
    let who =
        gate.check_call(Call::new(&method, &uri, &HeaderMap::new()).with_client_cert(Some(&facts))).await;
    assert_eq!(who.unwrap().principal().id(), format!("cert:{FINGERPRINT}"));

    // A gate that trusts the headers: the caller's explicit "no certificate" still wins.
    let trusting = Gate::with_limits(
        Requirement::mechanism(ClientCertAuth::new()),
        RequestLimits { trust_client_cert_headers: true, ..RequestLimits::default() },
    );
    assert!(trusting.check_call(Call::new(&method, &uri, &forged)).await.is_ok());
    let none = trusting.check_call(Call::new(&method, &uri, &forged).with_client_cert(None)).await;
    assert_eq!(none.unwrap_err().code(), "missing_credential");
}

/// A gate for signed tokens (purpose `ws`) read from `?token=`, on a fixed clock.
fn signed_gate(clock: &Arc<FixedClock>) -> (Gate, Arc<KeyRing>) {
    let ring = Arc::new(KeyRing::random().unwrap());
    let auth = SignedTokenAuth::new(ring.clone(), "ws", TokenSource::Query("token".into()), clock.clone());
    (Gate::new(Requirement::mechanism(auth)).with_clock(clock.clone()), ring)
}

async fn check_token(gate: &Gate, token: &str) -> Result<ztgate::Verified<Principal>, Rejection> {
    let uri: Uri = format!("/ws?token={token}").parse().unwrap();
    gate.check_call(Call::new(&Method::GET, &uri, &HeaderMap::new())).await
}

#[tokio::test]
async fn recheck_ends_a_proof_at_its_expiry_by_the_gates_clock() {
    let clock = Arc::new(FixedClock::at(NOW));
    let (gate, ring) = signed_gate(&clock);
    let token = ring.mint("ws", "alice@example.com", NOW, Duration::from_secs(60)).unwrap();
    let verified = check_token(&gate, &token).await.unwrap();
    assert_eq!(verified.principal().expires_at(), Some(NOW + 60));

    assert!(gate.recheck(&verified).await.is_ok());
    clock.set(NOW + 59);
    assert!(gate.recheck(&verified).await.is_ok());
    clock.set(NOW + 60);
    let ended = gate.recheck(&verified).await.unwrap_err();
    assert_eq!((ended.code(), ended.close_code()), ("token_expired", 4401));
}

#[tokio::test]
async fn recheck_ends_a_proof_whose_credential_was_revoked_since() {
    let clock = Arc::new(FixedClock::at(NOW));
    let (gate, ring) = signed_gate(&clock);
    let revocations = Arc::new(InMemoryRevocations::default());
    let gate = gate.with_revocations(revocations.clone());
    let token = ring.mint("ws", "alice@example.com", NOW, Duration::from_secs(600)).unwrap();
    let verified = check_token(&gate, &token).await.unwrap();
    assert!(gate.recheck(&verified).await.is_ok());

    let Principal::SignedToken(signed) = verified.principal() else { panic!("{verified:?}") };
    let id = signed.id.clone().expect("a v2 token has an id");
    revocations.revoke(&Revocation::new(RevocationKind::HmacToken, id).unwrap()).await.unwrap();
    let ended = gate.recheck(&verified).await.unwrap_err();
    assert_eq!((ended.code(), ended.close_code()), ("revoked", 4401));
    // And the same token is refused on a new request.
    assert_eq!(check_token(&gate, &token).await.unwrap_err().code(), "revoked");
}

/// A revocation list that cannot answer.
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

#[tokio::test]
async fn recheck_fails_closed_when_the_revocation_list_cannot_answer() {
    let clock = Arc::new(FixedClock::at(NOW));
    let (gate, ring) = signed_gate(&clock);
    let token = ring.mint("ws", "alice@example.com", NOW, Duration::from_secs(600)).unwrap();
    let verified = check_token(&gate, &token).await.unwrap();

    let down = gate.clone().with_revocations(Arc::new(Down));
    let ended = down.recheck(&verified).await.unwrap_err();
    assert_eq!((ended.code(), ended.close_code()), ("state_unavailable", 1013));
    // The operator's choice to let through is honoured here too.
    let open = down.allow_unchecked_while_revocations_unavailable();
    assert!(open.recheck(&verified).await.is_ok());
}

#[tokio::test]
async fn credentials_that_do_not_expire_are_ended_only_by_revocation() {
    let gate = Gate::new(api_keys()).with_clock(Arc::new(FixedClock::at(u64::MAX - 1)));
    let verified = check(&gate, Method::GET, "/x", &headers(&[("x-api-key", SECRET)])).await.unwrap();
    assert_eq!(verified.principal().expires_at(), None);
    assert!(gate.recheck(&verified).await.is_ok());
}

#[tokio::test]
async fn clean_headers_does_what_the_tower_layer_does_before_the_handler() {
    use ztgate::HeaderHygiene;
    let hygiene = HeaderHygiene::new()
        .strip_header(http::HeaderName::from_static("x-remote-user"))
        .forward_verified_identity();
    let gate = Gate::new(api_keys()).with_header_hygiene(hygiene);
    let mut sent = headers(&[
        ("x-api-key", SECRET),
        ("x-remote-user", "admin"),
        ("cf-access-authenticated-user-email", "admin@acme.com"),
        ("cf-cert-verified", "SUCCESS"),
        ("x-ztgate-principal", "user:admin@acme.com"),
        ("x-ztgate-anything", "forged"),
        ("accept", "application/json"),
    ]);
    let (method, uri) = (Method::POST, Uri::from_static("/upstream"));
    let verified = gate.check_call(Call::new(&method, &uri, &sent)).await.unwrap();

    gate.clean_headers(&mut sent, &verified);
    for forged in
        ["x-remote-user", "cf-access-authenticated-user-email", "cf-cert-verified", "x-ztgate-anything"]
    {
        assert!(sent.get(forged).is_none(), "{forged} was passed on");
    }
    assert_eq!(sent.get("x-ztgate-principal").unwrap(), "api_key:deploy-bot");
    assert_eq!(sent.get("x-ztgate-via").unwrap(), r#"["api_key"]"#);
    assert_eq!(sent.get("accept").unwrap(), "application/json", "other headers are kept");
}
