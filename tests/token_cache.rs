//! The verified-token cache, through real parts: a JWKS server on 127.0.0.1, tokens signed at
//! test time, a clock moved by hand. What it may keep (the verification) and what it must
//! never keep (the authorization), and when a kept verification stops counting.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ztgate::Principal;
use ztgate::clock::FixedClock;
use ztgate::dev::{service_claims, user_claims};
use ztgate::identity::{
    AccessJwt, ApiKeyAuth, ApiKeys, JwksConfig, Requirement, TokenCacheConfig, TokenError,
};
use ztgate::native::HttpFetcher;
use ztgate::{AccessConfig, Gate, Policy, Rejection};

/// A gate over one Access mechanism, and the mechanism (to count its signature checks).
fn access(
    url: &str,
    clock: Arc<FixedClock>,
    policy: Policy,
    cache: TokenCacheConfig,
) -> (Gate, Arc<AccessJwt>) {
    let access = Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
        .fetcher(Arc::new(HttpFetcher::with_limits(url, Duration::from_secs(2), 1024 * 1024).unwrap()))
        .clock(clock)
        .jwks_config(JwksConfig::default())
        .token_cache(cache)
        .policy(policy)
        .build_mechanism()
        .unwrap();
    let access = Arc::new(access);
    (Gate::new(Requirement::mechanism(access.clone())), access)
}

fn alice(now: u64, ttl: u64) -> serde_json::Value {
    user_claims(TEAM, AUD, "alice@acme.com", now, ttl)
}

async fn check(gate: &Gate, token: &str) -> Result<String, Rejection> {
    gate.check(&request_with_token(token)).await.map(|v| v.principal().id())
}

fn checks(access: &AccessJwt) -> u64 {
    access.verifier().signatures_checked()
}

#[tokio::test]
async fn a_repeated_token_checks_its_signature_once() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let (gate, access) = access(&server.url(), clock(), policy(), TokenCacheConfig::default());
    let token = key.sign(&alice(NOW, 3600));
    for _ in 0..50 {
        assert_eq!(check(&gate, &token).await.unwrap(), "user:alice@acme.com");
    }
    assert_eq!(checks(&access), 1);
}

#[tokio::test]
async fn with_the_cache_off_every_request_checks_its_signature() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let (gate, access) = access(&server.url(), clock(), policy(), TokenCacheConfig::disabled());
    let token = key.sign(&alice(NOW, 3600));
    for _ in 0..50 {
        assert_eq!(check(&gate, &token).await.unwrap(), "user:alice@acme.com");
    }
    assert_eq!(checks(&access), 50);
    assert_eq!(access.verifier().cached_tokens(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cold_token_in_1000_concurrent_requests_is_verified_once() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let (gate, access) = access(&server.url(), clock(), policy(), TokenCacheConfig::default());
    let token = key.sign(&alice(NOW, 3600));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (gate, token) = (gate.clone(), token.clone());
            tokio::spawn(async move { check(&gate, &token).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "user:alice@acme.com");
    }
    assert_eq!(checks(&access), 1, "concurrent misses of one token share one verification");
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn the_policy_runs_on_every_request_even_for_a_cached_token() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let revoked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let deny = revoked.clone();
    let policy = Policy::new()
        .allow_if(move |p| matches!(p, Principal::User(_)) && !deny.lock().unwrap().contains(&p.id()));
    let (gate, access) = access(&server.url(), clock(), policy, TokenCacheConfig::default());
    let token = key.sign(&alice(NOW, 3600));
    assert_eq!(check(&gate, &token).await.unwrap(), "user:alice@acme.com");
    revoked.lock().unwrap().insert("user:alice@acme.com".into());
    // The verification is still cached; the authorization is not.
    assert_eq!(check(&gate, &token).await, Err(Rejection::Forbidden));
    assert_eq!(checks(&access), 1);
    revoked.lock().unwrap().clear();
    assert_eq!(check(&gate, &token).await.unwrap(), "user:alice@acme.com");
}

#[tokio::test]
async fn a_revoked_api_key_is_refused_on_the_next_request_next_to_a_cached_token() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let (_, access) = access(&server.url(), clock(), policy(), TokenCacheConfig::default());
    // Made at test time (std's randomly seeded hasher): no key value is committed.
    let random = || std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
    let secret = format!("deploy-{:016x}{:016x}", random(), random());
    let keys = Arc::new(ApiKeys::parse(&format!("deploy:{secret}")).unwrap());
    let gate = Gate::new(Requirement::any_of([
        Requirement::mechanism(access.clone()),
        Requirement::mechanism(ApiKeyAuth::new(keys.clone())),
    ]));
    let token = key.sign(&alice(NOW, 3600));
    let with_key =
        || http::Request::builder().uri("/admin/x").header("x-api-key", &secret).body(String::new()).unwrap();
    assert_eq!(check(&gate, &token).await.unwrap(), "user:alice@acme.com");
    assert_eq!(gate.check(&with_key()).await.unwrap().principal().id(), "api_key:deploy");
    assert!(keys.revoke("deploy"));
    assert!(matches!(gate.check(&with_key()).await, Err(Rejection::InvalidCredential { .. })));
    assert_eq!(check(&gate, &token).await.unwrap(), "user:alice@acme.com");
    assert_eq!(checks(&access), 1);
}

#[tokio::test]
async fn a_cached_token_is_refused_right_after_exp_plus_leeway() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let clock = clock();
    // A max age past the token's life, so that its `exp` is what ends the entry.
    let cache = TokenCacheConfig::default().with_max_age(Duration::from_secs(600)).unwrap();
    let (gate, access) = access(&server.url(), clock.clone(), policy(), cache);
    // exp = NOW + 30; the default leeway is 60 s, so the last accepted second is NOW + 89.
    let token = key.sign(&alice(NOW, 30));
    check(&gate, &token).await.unwrap();
    clock.advance(Duration::from_secs(89));
    assert_eq!(check(&gate, &token).await.unwrap(), "user:alice@acme.com");
    assert_eq!(checks(&access), 1, "still cached at exp + leeway - 1");
    clock.advance(Duration::from_secs(1));
    assert_eq!(check(&gate, &token).await, Err(Rejection::InvalidToken(TokenError::Expired)));
    assert_eq!(check(&gate, &token).await, Err(Rejection::InvalidToken(TokenError::Expired)));
}

#[tokio::test]
async fn a_cached_verification_lasts_no_longer_than_the_max_age() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let clock = clock();
    let cache = TokenCacheConfig::default().with_max_age(Duration::from_secs(10)).unwrap();
    let (gate, access) = access(&server.url(), clock.clone(), policy(), cache);
    let token = key.sign(&alice(NOW, 3600));
    check(&gate, &token).await.unwrap();
    clock.advance(Duration::from_secs(9));
    check(&gate, &token).await.unwrap();
    assert_eq!(checks(&access), 1);
    clock.advance(Duration::from_secs(1));
    check(&gate, &token).await.unwrap();
    assert_eq!(checks(&access), 2, "verified again after the max age");
}

#[tokio::test]
async fn a_tampered_token_never_hits_the_original_entry() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let (gate, access) = access(&server.url(), clock(), policy(), TokenCacheConfig::default());
    let token = key.sign(&alice(NOW, 3600));
    check(&gate, &token).await.unwrap();
    let (head, sig) = token.rsplit_once('.').unwrap();
    // The signature's last two characters changed (to canonical base64url that decodes to
    // other bytes), and another signed payload put under the original signature.
    let flipped =
        format!("{head}.{}{}", &sig[..sig.len() - 2], if sig.ends_with("AA") { "BA" } else { "AA" });
    assert_eq!(check(&gate, &flipped).await, Err(Rejection::InvalidToken(TokenError::Signature)));
    let mallory = key.sign(&user_claims(TEAM, AUD, "mallory@acme.com", NOW, 3600));
    let (mallory_head, _) = mallory.rsplit_once('.').unwrap();
    let spliced = format!("{mallory_head}.{sig}");
    assert_eq!(check(&gate, &spliced).await, Err(Rejection::InvalidToken(TokenError::Signature)));
    assert_eq!(checks(&access), 3, "each tampered token was checked, none was answered from the cache");
    // Refusals are not cached: sent again, they are checked again.
    assert_eq!(check(&gate, &spliced).await, Err(Rejection::InvalidToken(TokenError::Signature)));
    assert_eq!(checks(&access), 4);
    assert_eq!(check(&gate, &token).await.unwrap(), "user:alice@acme.com");
    assert_eq!(checks(&access), 4);
}

#[tokio::test]
async fn a_key_replaced_under_the_same_kid_invalidates_its_cached_tokens() {
    let (old, new) = (key("k1"), key("k1"));
    let server = JwksServer::start(&[&old]).await;
    let clock = clock();
    let (gate, access) = access(&server.url(), clock.clone(), policy(), TokenCacheConfig::default());
    let token = old.sign(&alice(NOW, 3600));
    check(&gate, &token).await.unwrap();
    server.set_keys(&[&new]);
    clock.advance(Duration::from_secs(601));
    let keys = access.verifier().keys().clone();
    // Stale: this read is still served (from the cache) and starts the background refresh.
    check(&gate, &token).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while keys.is_refreshing() {
        assert!(tokio::time::Instant::now() < deadline, "the refresh never finished");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(server.fetches(), 2);
    // The kid is still there, but it names another key: the cached verification is void.
    assert_eq!(check(&gate, &token).await, Err(Rejection::InvalidToken(TokenError::Signature)));
    assert_eq!(check(&gate, &new.sign(&alice(NOW + 601, 3600))).await.unwrap(), "user:alice@acme.com");
}

#[tokio::test]
async fn cached_service_tokens_and_users_keep_their_own_principal() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let (gate, access) = access(&server.url(), clock(), policy(), TokenCacheConfig::default());
    let user = key.sign(&alice(NOW, 3600));
    let service = key.sign(&service_claims(TEAM, AUD, "ci.access", NOW, 3600));
    for _ in 0..3 {
        assert_eq!(check(&gate, &user).await.unwrap(), "user:alice@acme.com");
        assert_eq!(check(&gate, &service).await.unwrap(), "service:ci.access");
    }
    assert_eq!(checks(&access), 2);
}
