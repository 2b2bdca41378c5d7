//! `Gate::recheck` re-admits a proof held by a long-lived connection against the gate the
//! route has *now*: a reloaded policy, an API key revoked or replaced under its name, a route
//! that no longer accepts the kind of credential, an older login than a new rule allows. Real
//! RS256 tokens signed at test time, verified through a JWKS server on 127.0.0.1.

mod common;

use std::sync::{Arc, OnceLock};

use common::{AUD, JwksServer, NOW, TEAM, clock, request_with_token};
use http::{HeaderMap, HeaderValue, Method, Uri};
use serde_json::json;
use ztgate::clock::FixedClock;
use ztgate::dev::{DevKey, user_claims};
use ztgate::identity::{AccessApplications, AccessJwt, ApiKeyAuth, ApiKeys, Requirement};
use ztgate::native::HttpFetcher;
use ztgate::{AccessConfig, Call, Gate, Policy, Principal, Rejection, SelectGate, Verified};

const ALICE: &str = "alice@acme.com";
const KEY: &str = "k3y-0f-at-least-32-bytes-long-for-the-bot"; // pragma: allowlist secret
const OTHER_KEY: &str = "an0ther-k3y-of-at-least-32-bytes-for-it"; // pragma: allowlist secret

fn key() -> &'static DevKey {
    static KEY: OnceLock<DevKey> = OnceLock::new();
    KEY.get_or_init(|| common::key("recheck"))
}

/// A user token of TEAM/AUD for `email`, whose login was `age` seconds before NOW.
fn token(email: &str, age: u64) -> String {
    key().sign(&user_claims(TEAM, AUD, email, NOW - age, age + 3600))
}

/// The Access mechanism for TEAM/AUD admitting `policy`, and the JWKS server behind it.
async fn access(policy: Policy) -> (Arc<AccessJwt>, JwksServer) {
    let jwks = JwksServer::start(&[key()]).await;
    let mechanism = Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
        .fetcher(Arc::new(HttpFetcher::new(&jwks.url()).unwrap()))
        .clock(clock())
        .policy(policy)
        .build_mechanism()
        .unwrap();
    (Arc::new(mechanism), jwks)
}

fn gate(requirement: Requirement, clock: &Arc<FixedClock>) -> Gate {
    Gate::new(requirement).with_clock(clock.clone())
}

async fn proven_user(gate: &Gate, token: &str) -> Verified<Principal> {
    gate.check(&request_with_token(token)).await.unwrap()
}

/// The user of `token`, proven by `mechanism` as it is.
async fn admitted(mechanism: &Arc<AccessJwt>, clock: &Arc<FixedClock>, token: &str) -> Verified<Principal> {
    proven_user(&gate(Requirement::mechanism(mechanism.clone()), clock), token).await
}

/// A gate with `mechanism` after a reload to `policy` (the same verifier and key cache).
fn reloaded(mechanism: &Arc<AccessJwt>, policy: Policy, clock: &Arc<FixedClock>) -> Gate {
    gate(Requirement::mechanism(mechanism.with_policy(policy)), clock)
}

async fn proven_key(gate: &Gate, key: &str) -> Verified<Principal> {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_str(key).unwrap());
    let uri = Uri::from_static("/admin/ws");
    gate.check_call(Call::new(&Method::GET, &uri, &headers)).await.unwrap()
}

/// The code and WebSocket close code of a recheck's refusal.
async fn ended(gate: &Gate, verified: &Verified<Principal>) -> (&'static str, u16) {
    let refused: Rejection = gate.recheck(verified).await.unwrap_err();
    (refused.code(), refused.close_code())
}

#[tokio::test]
async fn a_user_the_reloaded_policy_no_longer_lists_is_refused_403() {
    let clock = clock();
    let (mechanism, _jwks) = access(Policy::new().allow_emails([ALICE, "bob@acme.com"])).await;
    let before = gate(Requirement::mechanism(mechanism.clone()), &clock);
    let alice = proven_user(&before, &token(ALICE, 10)).await;
    assert!(before.recheck(&alice).await.is_ok());

    // The reload: a policy without alice.
    let after = reloaded(&mechanism, Policy::new().allow_emails(["bob@acme.com"]), &clock);
    assert_eq!(ended(&after, &alice).await, ("forbidden", 4403));
    // A reload that keeps her (by another rule) keeps her socket.
    let by_domain = reloaded(&mechanism, Policy::new().allow_email_domains(["acme.com"]), &clock);
    assert!(by_domain.recheck(&alice).await.is_ok());
    // The gate she was admitted by has not changed its mind.
    assert!(before.recheck(&alice).await.is_ok());
}

#[tokio::test]
async fn a_login_older_than_a_new_session_limit_is_refused_401() {
    let clock = clock();
    let (mechanism, _jwks) = access(Policy::new().allow_emails([ALICE])).await;
    let alice = admitted(&mechanism, &clock, &token(ALICE, 600)).await;

    let strict = Policy::new().allow_emails([ALICE]).max_session_age(std::time::Duration::from_secs(300));
    let after = reloaded(&mechanism, strict, &clock);
    assert_eq!(ended(&after, &alice).await, ("session_too_old", 4401));
    // A login within the limit is kept.
    let fresh = admitted(&mechanism, &clock, &token(ALICE, 60)).await;
    assert!(after.recheck(&fresh).await.is_ok());
}

#[tokio::test]
async fn a_new_rule_over_the_identity_the_principal_does_not_carry_is_refused() {
    // Admitted by email: no identity was fetched, and a recheck has no token to fetch it with.
    let clock = clock();
    let (mechanism, _jwks) = access(Policy::new().allow_emails([ALICE])).await;
    let alice = admitted(&mechanism, &clock, &token(ALICE, 10)).await;
    assert!(alice.principal().as_user().unwrap().identity.is_none());
    let by_group = reloaded(&mechanism, Policy::new().allow_groups(["ops"]), &clock);
    assert_eq!(ended(&by_group, &alice).await, ("forbidden", 4403));
}

#[tokio::test]
async fn the_route_no_longer_accepting_the_kind_of_credential_is_refused_403() {
    let clock = clock();
    let (mechanism, _jwks) = access(Policy::new().allow_emails([ALICE])).await;
    let keys = Arc::new(ApiKeys::parse(&format!("bot:{KEY}")).unwrap());
    let either = gate(
        Requirement::any_of([
            Requirement::mechanism(mechanism.clone()),
            Requirement::mechanism(ApiKeyAuth::new(keys.clone())),
        ]),
        &clock,
    );
    let alice = proven_user(&either, &token(ALICE, 10)).await;
    let bot = proven_key(&either, KEY).await;
    assert!(either.recheck(&alice).await.is_ok());
    assert!(either.recheck(&bot).await.is_ok());

    let keys_only = gate(Requirement::mechanism(ApiKeyAuth::new(keys.clone())), &clock);
    assert_eq!(ended(&keys_only, &alice).await, ("forbidden", 4403));
    assert!(keys_only.recheck(&bot).await.is_ok());
    let access_only = gate(Requirement::mechanism(mechanism), &clock);
    assert_eq!(ended(&access_only, &bot).await, ("forbidden", 4403));

    // A public route's anonymous proof holds only while the route is public.
    let public = gate(Requirement::public(), &clock);
    let anonymous = public.check(&http::Request::new(())).await.unwrap();
    assert!(public.recheck(&anonymous).await.is_ok());
    assert_eq!(ended(&keys_only, &anonymous).await, ("forbidden", 4403));
}

#[tokio::test]
async fn an_api_key_revoked_or_replaced_under_its_name_is_refused_401() {
    let clock = clock();
    let keys = Arc::new(ApiKeys::parse(&format!("bot:{KEY},ops:{OTHER_KEY}")).unwrap());
    let gate_now = gate(Requirement::mechanism(ApiKeyAuth::new(keys.clone())), &clock);
    let bot = proven_key(&gate_now, KEY).await;
    let ops = proven_key(&gate_now, OTHER_KEY).await;

    // A reload that builds the same keys again keeps the socket.
    let rebuilt = Arc::new(ApiKeys::parse(&format!("bot:{KEY}")).unwrap());
    let after_reload = gate(Requirement::mechanism(ApiKeyAuth::new(rebuilt.clone())), &clock);
    assert!(after_reload.recheck(&bot).await.is_ok());
    // The same name with another key (a rotation): the old key's socket ends.
    rebuilt.insert("bot", OTHER_KEY.into()).unwrap();
    assert_eq!(ended(&after_reload, &bot).await, ("invalid_credential", 4401));

    // Revoked in place (the shared set): ends at the next check.
    assert!(gate_now.recheck(&ops).await.is_ok());
    assert!(keys.revoke("ops"));
    assert_eq!(ended(&gate_now, &ops).await, ("invalid_credential", 4401));
    assert!(gate_now.recheck(&bot).await.is_ok(), "another key's socket is untouched");

    // A route narrowed to other names: proven, no longer allowed.
    let narrowed = gate(Requirement::mechanism(ApiKeyAuth::new(keys).only(["deploy"])), &clock);
    assert_eq!(ended(&narrowed, &bot).await, ("forbidden", 4403));
}

#[tokio::test]
async fn several_access_applications_refuse_only_once_none_admits() {
    let clock = clock();
    let (mechanism, _jwks) = access(Policy::new().allow_emails([ALICE])).await;
    let alice = admitted(&mechanism, &clock, &token(ALICE, 10)).await;
    let app = |aud: &str, policy: Policy| mechanism.with_audiences([aud], policy).unwrap();
    let nobody = Policy::new().allow_emails(["nobody@acme.com"]);

    let one_admits = AccessApplications::new([
        app(AUD, nobody.clone()),
        app("aud-other", Policy::new().allow_emails([ALICE])),
    ]);
    assert!(gate(Requirement::mechanism(one_admits.unwrap()), &clock).recheck(&alice).await.is_ok());
    let none_admits = AccessApplications::new([app(AUD, nobody.clone()), app("aud-other", nobody)]);
    assert_eq!(
        ended(&gate(Requirement::mechanism(none_admits.unwrap()), &clock), &alice).await,
        ("forbidden", 4403)
    );
}

#[tokio::test]
async fn expiry_is_checked_before_admission() {
    let clock = clock();
    let (mechanism, _jwks) = access(Policy::new().allow_emails([ALICE])).await;
    let token = key().sign(&{
        let mut claims = user_claims(TEAM, AUD, ALICE, NOW - 10, 70);
        claims["sub"] = json!("sub-short");
        claims
    });
    let alice = admitted(&mechanism, &clock, &token).await;
    let after = reloaded(&mechanism, Policy::new(), &clock);
    clock.set(NOW + 60);
    assert_eq!(ended(&after, &alice).await, ("token_expired", 4401));
}

#[tokio::test]
async fn a_signed_token_whose_key_left_the_ring_or_whose_purpose_changed_is_refused() {
    use ztgate::identity::hmac_token::{KeyRing, SignedTokenAuth, TokenSource};
    let clock = clock();
    let keys = "k2:second-ring-key-of-at-least-32-bytes-xx,k1:first-ring-key-of-at-least-32-bytes-xxx"; // pragma: allowlist secret
    let ring = Arc::new(KeyRing::parse(keys).unwrap());
    let auth = |ring: &Arc<KeyRing>, purpose: &str| {
        let source = TokenSource::Query("token".into());
        Requirement::mechanism(SignedTokenAuth::new(ring.clone(), purpose, source, clock.clone()))
    };
    let before = gate(auth(&ring, "ws"), &clock);
    let token = ring.mint("ws", "alice@acme.com", NOW, std::time::Duration::from_secs(600)).unwrap();
    let uri: Uri = format!("/ws?token={token}").parse().unwrap();
    let signed = before.check_call(Call::new(&Method::GET, &uri, &HeaderMap::new())).await.unwrap();
    let Principal::SignedToken(principal) = signed.principal() else { panic!("{signed:?}") };
    assert_eq!(principal.kid, "k2", "the first key signs");

    // The same keys again (a reload), or a ring that still holds k2 beside a new key: kept.
    assert!(
        gate(auth(&Arc::new(KeyRing::parse(keys).unwrap()), "ws"), &clock).recheck(&signed).await.is_ok()
    );
    let rotated = Arc::new(
        KeyRing::parse(
            "k3:third-ring-key-of-at-least-32-bytes-xxx,k2:second-ring-key-of-at-least-32-bytes-xx",
        )
        .unwrap(),
    ); // pragma: allowlist secret
    assert!(gate(auth(&rotated, "ws"), &clock).recheck(&signed).await.is_ok());
    // k2 removed: the tokens it signed end.
    let without = Arc::new(KeyRing::parse("k1:first-ring-key-of-at-least-32-bytes-xxx").unwrap()); // pragma: allowlist secret
    assert_eq!(ended(&gate(auth(&without, "ws"), &clock), &signed).await, ("invalid_credential", 4401));
    // The route now wants tokens of another purpose.
    assert_eq!(ended(&gate(auth(&ring, "download"), &clock), &signed).await, ("forbidden", 4403));
}
