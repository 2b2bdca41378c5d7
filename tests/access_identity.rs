//! Cloudflare Access in depth, through real HTTP on loopback: the user's identity from a local
//! `get-identity` endpoint (groups, `amr`, device posture, WARP), the policy rules over it,
//! the age of the login, the token `type`, and several applications behind one gate.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{AUD, JwksServer, Mode, NOW, TEAM, clock, request_with_token};
use serde_json::{Value, json};
use ztgate::dev::{DevKey, user_claims};
use ztgate::identity::{AccessApplications, IdentityConfig, Requirement};
use ztgate::native::{HttpFetcher, HttpIdentityFetcher};
use ztgate::{AccessConfig, Gate, Policy, Principal, Rejection};

const IDENTITY_PATH: &str = "/cdn-cgi/access/get-identity";
const ALICE: &str = "alice@acme.com";
const BOB: &str = "bob@acme.com";

fn key() -> &'static DevKey {
    static KEY: OnceLock<DevKey> = OnceLock::new();
    KEY.get_or_init(|| common::key("team-a"))
}

fn other_key() -> &'static DevKey {
    static KEY: OnceLock<DevKey> = OnceLock::new();
    KEY.get_or_init(|| common::key("team-b"))
}

/// A user token of TEAM/AUD for `email`, login `nonce`, issued `age` seconds ago.
fn token(email: &str, nonce: &str, age: u64) -> String {
    let mut claims = user_claims(TEAM, AUD, email, NOW - age, age + 3600);
    claims["identity_nonce"] = json!(nonce);
    key().sign(&claims)
}

/// What `get-identity` answers for `email`.
fn identity(email: &str, groups: Value, amr: &[&str]) -> String {
    json!({
        "email": email, "groups": groups, "amr": amr, "idp": {"id": "idp-1", "type": "okta"},
        "devicePosture": {"rule-disk": {"success": true, "rule_name": "disk encrypted", "type": "disk_encryption"},
                          "rule-os": {"success": false, "rule_name": "os up to date", "type": "os_version"}},
        "is_warp": true, "is_gateway": false, "device_id": "dev-1",
        "ip": "192.0.2.1", "geo": {"country": "XX"}, "device_sessions": {}, "user_uuid": "u-1",
    })
    .to_string()
}

/// A JWKS server with the team's key, an identity server answering `body`, and a gate for
/// `policy` against both (identity fetches bounded by `timeout`).
async fn setup(policy: Policy, body: String, timeout: Duration) -> (Gate, JwksServer, JwksServer) {
    let jwks = JwksServer::start(&[key()]).await;
    let id = JwksServer::start_with_body(body).await;
    let identity_fetcher =
        HttpIdentityFetcher::with_limits(&id.url_for(IDENTITY_PATH), timeout, IdentityConfig::MAX_BYTES);
    let gate = Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
        .fetcher(Arc::new(HttpFetcher::new(&jwks.url()).unwrap()))
        .identity_fetcher(Arc::new(identity_fetcher.unwrap()))
        .clock(clock())
        .policy(policy)
        .build()
        .unwrap();
    (gate, jwks, id)
}

async fn check(gate: &Gate, token: &str) -> Result<Principal, Rejection> {
    gate.check(&request_with_token(token)).await.map(|v| v.into_inner())
}

async fn code(gate: &Gate, token: &str) -> &'static str {
    match check(gate, token).await {
        Ok(_) => "ok",
        Err(r) => r.code(),
    }
}

#[tokio::test]
async fn a_group_member_is_admitted_and_a_non_member_is_403() {
    let policy = Policy::new().allow_groups(["ops"]);
    let (gate, _jwks, id) =
        setup(policy, identity(ALICE, json!(["ops", "staff"]), &["pwd"]), Duration::from_secs(2)).await;
    let who = check(&gate, &token(ALICE, "n1", 10)).await.unwrap();
    let user = who.as_user().unwrap();
    assert!(user.in_group("ops"));
    assert_eq!(user.identity.as_ref().unwrap().idp.as_ref().unwrap().kind.as_deref(), Some("okta"));
    // The token went as the CF_Authorization cookie, as a browser sends it.
    assert!(id.last_request_head().contains(&format!("CF_Authorization={}", token(ALICE, "n1", 10))));

    id.set_body(identity(BOB, json!(["staff"]), &["pwd"]));
    let res = check(&gate, &token(BOB, "n2", 10)).await;
    assert_eq!(res.unwrap_err(), Rejection::Forbidden);
}

#[tokio::test]
async fn groups_as_objects_match_by_id_name_or_email() {
    let groups = json!([{"id": "0a1b", "name": "Ops Team", "email": "ops@acme.com"}]);
    for want in ["0a1b", "Ops Team", "ops@acme.com"] {
        let (gate, _jwks, _id) = setup(
            Policy::new().allow_groups([want]),
            identity(ALICE, groups.clone(), &["pwd"]),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(code(&gate, &token(ALICE, "n1", 10)).await, "ok", "{want}");
    }
    let (gate, _jwks, _id) = setup(
        Policy::new().allow_groups(["ops team"]),
        identity(ALICE, groups, &["pwd"]),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(code(&gate, &token(ALICE, "n1", 10)).await, "forbidden", "group names match exactly");
}

#[tokio::test]
async fn identity_endpoint_down_is_503_only_for_rules_that_need_it() {
    // Alice is listed by email: no identity needed. Bob could only get in through a group.
    let policy = Policy::new().allow_emails([ALICE]).allow_groups(["ops"]);
    let (gate, _jwks, id) =
        setup(policy, identity(BOB, json!(["ops"]), &["pwd"]), Duration::from_secs(2)).await;
    id.set_mode(Mode::Status(500));
    assert_eq!(code(&gate, &token(ALICE, "n1", 10)).await, "ok");
    assert_eq!(id.fetches(), 0, "an email on the list needed no identity");
    let refusal = check(&gate, &token(BOB, "n2", 10)).await.unwrap_err();
    assert_eq!(refusal.code(), "identity_unavailable");
    assert_eq!(refusal.status(), 503);
    // Failures are not cached: once the endpoint is back, Bob's next request passes.
    id.set_mode(Mode::Serve);
    assert_eq!(code(&gate, &token(BOB, "n2", 10)).await, "ok");
}

#[tokio::test]
async fn a_slow_identity_endpoint_is_cut_at_the_timeout() {
    let (gate, _jwks, id) = setup(
        Policy::new().allow_groups(["ops"]),
        identity(ALICE, json!(["ops"]), &["pwd"]),
        Duration::from_millis(300),
    )
    .await;
    id.set_mode(Mode::Stall(Duration::from_secs(30)));
    let started = Instant::now();
    assert_eq!(code(&gate, &token(ALICE, "n1", 10)).await, "identity_unavailable");
    assert!(started.elapsed() < Duration::from_secs(10), "not bounded: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_huge_garbage_or_foreign_identity_is_refused() {
    let (gate, _jwks, id) =
        setup(Policy::new().allow_groups(["ops"]), String::new(), Duration::from_secs(2)).await;
    let huge =
        json!({"email": ALICE, "groups": ["ops"], "pad": "x".repeat(IdentityConfig::MAX_BYTES)}).to_string();
    for (i, (body, mode)) in [
        (huge, Mode::Serve),
        ("{}".to_owned(), Mode::Garbage),
        (json!({"email": ALICE, "groups": "ops"}).to_string(), Mode::Serve),
        // The identity of someone else (a confused or hostile endpoint).
        (identity(BOB, json!(["ops"]), &["pwd"]), Mode::Serve),
    ]
    .into_iter()
    .enumerate()
    {
        id.set_body(body);
        id.set_mode(mode);
        assert_eq!(
            code(&gate, &token(ALICE, &format!("n{i}"), 10)).await,
            "identity_unavailable",
            "case {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fetch_per_login_for_a_hundred_requests_and_a_new_login_fetches_again() {
    let (gate, _jwks, id) = setup(
        Policy::new().allow_groups(["ops"]),
        identity(ALICE, json!(["ops"]), &["pwd"]),
        Duration::from_secs(2),
    )
    .await;
    let first = token(ALICE, "login-1", 10);
    // Concurrent: the first requests of a login share one fetch.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (gate, first) = (gate.clone(), first.clone());
        set.spawn(async move { check(&gate, &first).await });
    }
    while let Some(res) = set.join_next().await {
        assert!(res.unwrap().is_ok());
    }
    assert_eq!(id.fetches(), 1, "one identity fetch for one login");
    // A new login (new nonce) is a new identity: Access may have new groups for it.
    id.set_body(identity(ALICE, json!(["staff"]), &["pwd"]));
    assert_eq!(code(&gate, &token(ALICE, "login-2", 5)).await, "forbidden");
    assert_eq!(id.fetches(), 2);
}

#[tokio::test]
async fn a_login_without_a_hardware_key_is_403_on_a_route_that_requires_one() {
    let policy = Policy::new().allow_emails([ALICE]).require_auth_method(["hwk"]);
    let (gate, _jwks, id) =
        setup(policy, identity(ALICE, json!([]), &["pwd", "mfa"]), Duration::from_secs(2)).await;
    assert_eq!(code(&gate, &token(ALICE, "n1", 10)).await, "forbidden");
    id.set_body(identity(ALICE, json!([]), &["hwk"]));
    assert_eq!(code(&gate, &token(ALICE, "n2", 10)).await, "ok");
}

#[tokio::test]
async fn device_posture_and_warp_rules_read_the_identity() {
    let (gate, _jwks, _id) = setup(
        Policy::new().allow_emails([ALICE]).require_device_posture("rule-disk").require_warp(),
        identity(ALICE, json!([]), &["pwd"]),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(code(&gate, &token(ALICE, "n1", 10)).await, "ok");
    let (gate, _jwks, _id) = setup(
        Policy::new().allow_emails([ALICE]).require_device_posture("rule-os"),
        identity(ALICE, json!([]), &["pwd"]),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(code(&gate, &token(ALICE, "n1", 10)).await, "forbidden", "a failed posture check admitted");
    let (gate, _jwks, _id) = setup(
        Policy::new().allow_emails([ALICE]).require_device_posture("rule-absent"),
        identity(ALICE, json!([]), &["pwd"]),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        code(&gate, &token(ALICE, "n1", 10)).await,
        "forbidden",
        "a posture rule that never ran admitted"
    );
}

#[tokio::test]
async fn a_stale_login_is_401_so_the_browser_signs_in_again() {
    let policy = Policy::new().allow_emails([ALICE]).max_session_age(Duration::from_secs(3600));
    let (gate, _jwks, id) = setup(policy, identity(ALICE, json!([]), &["pwd"]), Duration::from_secs(2)).await;
    let refusal = check(&gate, &token(ALICE, "n1", 2 * 3600)).await.unwrap_err();
    assert_eq!(refusal, Rejection::SessionTooOld);
    assert_eq!(refusal.status(), 401);
    assert!(refusal.to_response::<String>().headers().contains_key("www-authenticate"));
    assert_eq!(code(&gate, &token(ALICE, "n2", 60)).await, "ok");
    assert_eq!(id.fetches(), 0, "the session age needs no identity");
}

#[tokio::test]
async fn an_organization_token_is_refused_on_an_application_route() {
    let (gate, _jwks, _id) =
        setup(Policy::new().allow_emails([ALICE]), String::new(), Duration::from_secs(2)).await;
    let mut claims = user_claims(TEAM, AUD, ALICE, NOW, 3600);
    claims["type"] = json!("org");
    let refusal = check(&gate, &key().sign(&claims)).await.unwrap_err();
    assert_eq!(refusal.code(), "invalid_token", "{refusal}");
    assert!(refusal.to_string().contains("type"), "{refusal}");
    // No `type` at all (older tokens) is still an application token.
    claims.as_object_mut().unwrap().remove("type");
    assert_eq!(code(&gate, &key().sign(&claims)).await, "ok");
}

// ---------------------------------------------------------------------------------------------
// Several applications

const TEAM_B: &str = "https://acme-partners.cloudflareaccess.com";
const AUD_B: &str = "aud-partners";

async fn two_teams() -> (Gate, JwksServer, JwksServer) {
    let jwks_a = JwksServer::start(&[key()]).await;
    let jwks_b = JwksServer::start(&[other_key()]).await;
    let app = |team: &str, aud: &str, url: String, who: &str| {
        Gate::builder(AccessConfig::new(team, [aud]).unwrap())
            .fetcher(Arc::new(HttpFetcher::new(&url).unwrap()))
            .clock(clock())
            .policy(Policy::new().allow_emails([who]))
            .build_mechanism()
            .unwrap()
    };
    let apps = AccessApplications::new([
        app(TEAM, AUD, jwks_a.url(), ALICE),
        app(TEAM_B, AUD_B, jwks_b.url(), "carol@partner.example"),
    ])
    .unwrap();
    (Gate::new(Requirement::mechanism(apps)), jwks_a, jwks_b)
}

#[tokio::test]
async fn each_team_token_is_admitted_by_its_own_keys_and_policy() {
    let (gate, jwks_a, jwks_b) = two_teams().await;
    assert_eq!(code(&gate, &key().sign(&user_claims(TEAM, AUD, ALICE, NOW, 600))).await, "ok");
    assert_eq!((jwks_a.fetches(), jwks_b.fetches()), (1, 0));
    let carol = other_key().sign(&user_claims(TEAM_B, AUD_B, "carol@partner.example", NOW, 600));
    assert_eq!(code(&gate, &carol).await, "ok");
    assert_eq!((jwks_a.fetches(), jwks_b.fetches()), (1, 1));
    // Each team's policy is its own: Alice is not admitted by team B's.
    let alice_b = other_key().sign(&user_claims(TEAM_B, AUD_B, ALICE, NOW, 600));
    assert_eq!(code(&gate, &alice_b).await, "forbidden");
}

#[tokio::test]
async fn a_team_a_token_signed_with_team_b_key_is_refused() {
    let (gate, _a, _b) = two_teams().await;
    let forged = other_key().sign(&user_claims(TEAM, AUD, ALICE, NOW, 600));
    assert_eq!(code(&gate, &forged).await, "invalid_token");
    // Team B's issuer with team A's audience: no application accepts that pair.
    let crossed = other_key().sign(&user_claims(TEAM_B, AUD, "carol@partner.example", NOW, 600));
    assert_eq!(code(&gate, &crossed).await, "invalid_token");
}

#[tokio::test]
async fn an_unknown_issuer_is_401_without_a_single_fetch() {
    let (gate, jwks_a, jwks_b) = two_teams().await;
    for iss in ["https://evil.cloudflareaccess.com", "", "https://acme-test.cloudflareaccess.com/"] {
        let token = key().sign(&user_claims(iss, AUD, ALICE, NOW, 600));
        assert_eq!(code(&gate, &token).await, "invalid_token", "{iss:?}");
    }
    assert_eq!((jwks_a.fetches(), jwks_b.fetches()), (0, 0));
}

#[tokio::test]
async fn one_team_two_audiences_share_one_key_cache() {
    let jwks = JwksServer::start(&[key()]).await;
    let base = Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
        .fetcher(Arc::new(HttpFetcher::new(&jwks.url()).unwrap()))
        .clock(clock())
        .policy(Policy::new().allow_emails([ALICE]))
        .build_mechanism()
        .unwrap();
    let reports = base.with_audiences(["aud-reports"], Policy::new().allow_emails([BOB])).unwrap();
    let admin = Gate::new(Requirement::mechanism(base));
    let report_gate = Gate::new(Requirement::mechanism(reports));
    assert_eq!(code(&admin, &key().sign(&user_claims(TEAM, AUD, ALICE, NOW, 600))).await, "ok");
    assert_eq!(code(&report_gate, &key().sign(&user_claims(TEAM, "aud-reports", BOB, NOW, 600))).await, "ok");
    assert_eq!(jwks.fetches(), 1, "the second audience fetched the JWKS again");
    // Each route's AUD is its own: the admin application's token is not a reports token.
    assert_eq!(
        code(&report_gate, &key().sign(&user_claims(TEAM, AUD, BOB, NOW, 600))).await,
        "invalid_token"
    );
    assert!(AccessApplications::new(Vec::<ztgate::identity::AccessJwt>::new()).is_err());
}

#[tokio::test]
async fn a_hand_built_mechanism_fetches_identities_only_once_given_a_fetcher() {
    use ztgate::identity::{AccessJwt, AccessVerifier, JwksCache, JwksConfig, TokenCacheConfig};
    let jwks = JwksServer::start(&[key()]).await;
    let id = JwksServer::start_with_body(identity(ALICE, json!(["ops"]), &["pwd"])).await;
    let verifier = || {
        let keys =
            JwksCache::new(Arc::new(HttpFetcher::new(&jwks.url()).unwrap()), clock(), JwksConfig::default());
        AccessVerifier::new(AccessConfig::new(TEAM, [AUD]).unwrap(), keys, clock())
            .with_token_cache(TokenCacheConfig::disabled())
    };
    let policy = || Policy::new().allow_groups(["ops"]);
    // No identity source: a group rule cannot be decided, and says so.
    let bare = Gate::new(Requirement::mechanism(AccessJwt::new(verifier(), policy())));
    assert_eq!(code(&bare, &token(ALICE, "n1", 10)).await, "identity_unavailable");
    let fetcher = HttpIdentityFetcher::new(&id.url_for(IDENTITY_PATH)).unwrap();
    let given =
        AccessJwt::new(verifier(), policy()).with_identity(Arc::new(fetcher), IdentityConfig::default());
    let gate = Gate::new(Requirement::mechanism(given));
    assert_eq!(code(&gate, &token(ALICE, "n1", 10)).await, "ok");
    assert_eq!(id.fetches(), 1);
}
