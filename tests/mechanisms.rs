//! API keys, mTLS flags, public routes, any-of/all-of composition and secret sources.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use ztgate::clock::FixedClock;
use ztgate::dev::user_claims;
use ztgate::identity::{AccessJwt, ApiKeyAuth, ApiKeys, ClientCertAuth, Requirement};
use ztgate::request::RequestLimits;
use ztgate::secrets::{
    CachedSecret, EnvSecret, PerRequest, Secret, SecretFuture, SecretSource, StaticSecret,
};
use ztgate::{AccessConfig, Gate, Principal, Rejection};

const DEPLOY_KEY: &str = "deploy-0123456789abcdef0123456789";
const BACKUP_KEY: &str = "backup-fedcba9876543210fedcba9876";

fn keys() -> Arc<ApiKeys> {
    Arc::new(ApiKeys::parse(&format!("deploy:{DEPLOY_KEY},backup:{BACKUP_KEY}")).unwrap())
}

fn req(headers: &[(&str, &str)]) -> http::Request<String> {
    let mut b = http::Request::builder().uri("/ops/stats");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(String::new()).unwrap()
}

async fn check(gate: &Gate, headers: &[(&str, &str)]) -> Result<Principal, Rejection> {
    gate.check(&req(headers)).await.map(|v| v.into_inner())
}

fn api_key_gate(keys: Arc<ApiKeys>) -> Gate {
    Gate::new(Requirement::mechanism(ApiKeyAuth::new(keys)))
}

#[tokio::test]
async fn api_key_from_header_or_bearer_proves_its_name() {
    let gate = api_key_gate(keys());
    let by_header = check(&gate, &[("x-api-key", DEPLOY_KEY)]).await.unwrap();
    assert_eq!(by_header.id(), "api_key:deploy");
    let by_bearer = check(&gate, &[("authorization", &format!("Bearer {BACKUP_KEY}"))]).await.unwrap();
    assert_eq!(by_bearer.id(), "api_key:backup");
    let lower = check(&gate, &[("authorization", &format!("bearer {BACKUP_KEY}"))]).await.unwrap();
    assert_eq!(lower.id(), "api_key:backup");
}

#[tokio::test]
async fn api_key_with_an_extra_character_or_only_a_prefix_is_refused() {
    let gate = api_key_gate(keys());
    for bad in [format!("{DEPLOY_KEY}x"), DEPLOY_KEY[..DEPLOY_KEY.len() - 1].to_owned(), "deploy".to_owned()]
    {
        let err = check(&gate, &[("x-api-key", &bad)]).await.unwrap_err();
        assert_eq!(err.code(), "invalid_credential", "{bad}");
        assert_eq!(err.to_response::<String>().status(), 401);
        assert!(err.to_response::<String>().headers().contains_key("www-authenticate"));
    }
    assert_eq!(check(&gate, &[]).await.unwrap_err(), Rejection::MissingCredential);
}

#[tokio::test]
async fn conflicting_api_key_headers_are_ambiguous() {
    let gate = api_key_gate(keys());
    let err = check(&gate, &[("x-api-key", DEPLOY_KEY), ("authorization", &format!("Bearer {BACKUP_KEY}"))])
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ambiguous_credential");
}

#[tokio::test]
async fn revoked_api_key_is_refused_at_once() {
    let keys = keys();
    let gate = api_key_gate(keys.clone());
    assert!(check(&gate, &[("x-api-key", DEPLOY_KEY)]).await.is_ok());
    assert!(keys.revoke("deploy"));
    assert_eq!(check(&gate, &[("x-api-key", DEPLOY_KEY)]).await.unwrap_err().code(), "invalid_credential");
    assert!(check(&gate, &[("x-api-key", BACKUP_KEY)]).await.is_ok());
}

#[tokio::test]
async fn api_key_restricted_route_refuses_other_valid_keys_with_403() {
    let gate = Gate::new(Requirement::mechanism(ApiKeyAuth::new(keys()).only(["backup"])));
    assert_eq!(check(&gate, &[("x-api-key", DEPLOY_KEY)]).await.unwrap_err(), Rejection::Forbidden);
    assert!(check(&gate, &[("x-api-key", BACKUP_KEY)]).await.is_ok());
}

fn trusted_limits() -> RequestLimits {
    RequestLimits { trust_client_cert_headers: true, ..RequestLimits::default() }
}

const FP: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"; // pragma: allowlist secret

fn cert_headers<'a>(verified: &'a str, revoked: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("cf-cert-presented", "true"),
        ("cf-cert-verified", verified),
        ("cf-cert-revoked", revoked),
        ("cf-cert-fingerprint-sha256", FP),
        ("cf-cert-subject-dn", "CN=backup-agent,O=Acme"),
        ("cf-cert-issuer-dn", "CN=Acme Client CA"),
    ]
}

#[tokio::test]
async fn verified_unrevoked_client_cert_is_admitted() {
    let gate = Gate::with_limits(Requirement::mechanism(ClientCertAuth::new()), trusted_limits());
    for (verified, revoked) in [("true", "false"), ("SUCCESS", "0"), ("1", "false")] {
        let p = check(&gate, &cert_headers(verified, revoked)).await.unwrap();
        assert_eq!(p.id(), format!("cert:{FP}"));
    }
}

#[tokio::test]
async fn revoked_unverified_or_unknown_client_certs_are_refused() {
    let gate = Gate::with_limits(Requirement::mechanism(ClientCertAuth::new()), trusted_limits());
    for (verified, revoked) in [
        ("true", "true"),
        ("false", "false"),
        ("FAILED:unable to get local issuer certificate", "false"),
        ("yes", "false"),
        ("true", "unknown"),
    ] {
        let err = check(&gate, &cert_headers(verified, revoked)).await.unwrap_err();
        assert_eq!(err.code(), "invalid_credential", "{verified}/{revoked}");
    }
}

#[tokio::test]
async fn spoofed_cert_headers_on_an_untrusted_hop_prove_nothing() {
    let gate = Gate::new(Requirement::mechanism(ClientCertAuth::new()));
    let err = check(&gate, &cert_headers("SUCCESS", "0")).await.unwrap_err();
    assert_eq!(err, Rejection::MissingCredential);
}

#[tokio::test]
async fn client_cert_pins_by_fingerprint_or_subject() {
    let other = ClientCertAuth::new().pin_fingerprints(["00".repeat(32)]);
    let gate = Gate::with_limits(Requirement::mechanism(other), trusted_limits());
    assert_eq!(check(&gate, &cert_headers("SUCCESS", "0")).await.unwrap_err(), Rejection::Forbidden);
    let by_fp = ClientCertAuth::new().pin_fingerprints([FP.to_uppercase()]);
    let gate = Gate::with_limits(Requirement::mechanism(by_fp), trusted_limits());
    assert!(check(&gate, &cert_headers("SUCCESS", "0")).await.is_ok());
    let by_dn = ClientCertAuth::new().pin_subject_dns(["CN=backup-agent,O=Acme"]);
    let gate = Gate::with_limits(Requirement::mechanism(by_dn), trusted_limits());
    assert!(check(&gate, &cert_headers("SUCCESS", "0")).await.is_ok());
}

#[tokio::test]
async fn public_is_explicit_and_proves_anonymous() {
    let verified = Gate::public().check(&req(&[])).await.unwrap();
    assert_eq!(verified.principal(), &Principal::Anonymous);
    assert!(verified.proved_by("public"));
}

async fn access_mechanism(url: &str, clock: Arc<FixedClock>) -> AccessJwt {
    Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
        .certs_url(url)
        .clock(clock)
        .policy(policy())
        .build_mechanism()
        .unwrap()
}

#[tokio::test]
async fn any_of_lets_the_present_credential_decide_and_never_falls_through() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let gate = Gate::new(Requirement::any_of([
        Requirement::mechanism(access_mechanism(&server.url(), clock()).await),
        Requirement::mechanism(ApiKeyAuth::new(keys())),
    ]));
    let token = key.sign(&user_claims(TEAM, AUD, "alice@acme.com", NOW, 60));
    assert_eq!(
        check(&gate, &[("cf-access-jwt-assertion", &token)]).await.unwrap().id(),
        "user:alice@acme.com"
    );
    assert_eq!(check(&gate, &[("x-api-key", DEPLOY_KEY)]).await.unwrap().id(), "api_key:deploy");
    // A bad Access token next to a valid API key: the bad credential denies.
    let err =
        check(&gate, &[("cf-access-jwt-assertion", "garbage"), ("x-api-key", DEPLOY_KEY)]).await.unwrap_err();
    assert_eq!(err.code(), "invalid_token");
    // A forbidden user next to a valid API key: still denied.
    let mallory = key.sign(&user_claims(TEAM, AUD, "mallory@acme.com", NOW, 60));
    let err =
        check(&gate, &[("cf-access-jwt-assertion", &mallory), ("x-api-key", DEPLOY_KEY)]).await.unwrap_err();
    assert_eq!(err, Rejection::Forbidden);
    assert_eq!(check(&gate, &[]).await.unwrap_err(), Rejection::MissingCredential);
}

#[tokio::test]
async fn all_of_needs_every_credential() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let gate = Gate::new(Requirement::all_of([
        Requirement::mechanism(access_mechanism(&server.url(), clock()).await),
        Requirement::mechanism(ApiKeyAuth::new(keys())),
    ]));
    let token = key.sign(&user_claims(TEAM, AUD, "alice@acme.com", NOW, 60));
    let both =
        gate.check(&req(&[("cf-access-jwt-assertion", &token), ("x-api-key", DEPLOY_KEY)])).await.unwrap();
    assert_eq!(both.id(), "user:alice@acme.com");
    assert!(both.proved_by("access_jwt") && both.proved_by("api_key"));
    assert_eq!(both.proofs()[1].principal_id, "api_key:deploy");
    assert_eq!(
        check(&gate, &[("cf-access-jwt-assertion", &token)]).await.unwrap_err(),
        Rejection::MissingCredential
    );
    assert_eq!(check(&gate, &[("x-api-key", DEPLOY_KEY)]).await.unwrap_err(), Rejection::MissingCredential);
    let err =
        check(&gate, &[("cf-access-jwt-assertion", &token), ("x-api-key", "wrong-wrong-wrong-wrong")]).await;
    assert_eq!(err.unwrap_err().code(), "invalid_credential");
    let mallory = key.sign(&user_claims(TEAM, AUD, "mallory@acme.com", NOW, 60));
    let err = check(&gate, &[("cf-access-jwt-assertion", &mallory), ("x-api-key", DEPLOY_KEY)]).await;
    assert_eq!(err.unwrap_err(), Rejection::Forbidden);
}

#[tokio::test]
async fn empty_combinations_prove_nobody() {
    for requirement in [Requirement::any_of([]), Requirement::all_of([])] {
        let gate = Gate::new(requirement);
        assert_eq!(
            check(&gate, &[("x-api-key", DEPLOY_KEY)]).await.unwrap_err(),
            Rejection::MissingCredential
        );
    }
}

#[derive(Debug, Default)]
struct Counting {
    reads: AtomicUsize,
    value: std::sync::Mutex<String>,
}

impl SecretSource for Counting {
    fn get(&self) -> SecretFuture<'_> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let value = Secret::from(self.value.lock().unwrap().clone());
        Box::pin(async move { Ok(value) })
    }
}

#[test]
fn secret_is_read_at_most_once_per_request() {
    /// Counts its reads and answers only once the test opens the gate, so every caller that
    /// arrives before then overlaps the first read.
    #[derive(Debug)]
    struct Gated {
        reads: AtomicUsize,
        open: tokio::sync::watch::Receiver<bool>,
    }
    impl SecretSource for Gated {
        fn get(&self) -> SecretFuture<'_> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let mut open = self.open.clone();
            Box::pin(async move {
                open.wait_for(|open| *open).await.expect("the gate outlives the read");
                Ok(Secret::from("s1"))
            })
        }
    }

    const CALLS: usize = 16;
    // Current-thread: a spawned task runs until it waits, so once all have started, all of them
    // are inside their first `get`. Multi-thread: the calls race for real.
    for runtime in [
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
        tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap(),
    ] {
        runtime.block_on(async {
            let (gate, open) = tokio::sync::watch::channel(false);
            let source: &'static Gated = Box::leak(Box::new(Gated { reads: AtomicUsize::new(0), open }));
            let per_request = Arc::new(PerRequest::new(source));
            let started = Arc::new(AtomicUsize::new(0));
            let mut calls = tokio::task::JoinSet::new();
            for _ in 0..CALLS {
                let (per_request, started) = (per_request.clone(), started.clone());
                calls.spawn(async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    per_request.get().await
                });
            }
            while started.load(Ordering::SeqCst) < CALLS {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(
                source.reads.load(Ordering::SeqCst),
                1,
                "concurrent first calls read the source again"
            );
            gate.send(true).unwrap();
            while let Some(answer) = calls.join_next().await {
                assert_eq!(answer.unwrap().unwrap(), Secret::from("s1"));
            }
            // Later calls take the kept answer.
            for _ in 0..5 {
                assert_eq!(per_request.get().await.unwrap(), Secret::from("s1"));
            }
            assert_eq!(source.reads.load(Ordering::SeqCst), 1);
        });
    }
}

#[tokio::test]
async fn rotated_secret_takes_effect_after_the_cache_ttl_without_restart() {
    let source = Arc::new(Counting::default());
    *source.value.lock().unwrap() = "old".into();
    let clock = clock();
    let cached = CachedSecret::new(source.clone(), Duration::from_secs(60), clock.clone());
    assert_eq!(cached.get().await.unwrap(), Secret::from("old"));
    *source.value.lock().unwrap() = "new".into();
    clock.advance(Duration::from_secs(59));
    assert_eq!(cached.get().await.unwrap(), Secret::from("old"));
    clock.advance(Duration::from_secs(1));
    assert_eq!(cached.get().await.unwrap(), Secret::from("new"));
    assert_eq!(source.reads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn static_and_env_sources() {
    assert_eq!(StaticSecret::new("abc").get().await.unwrap(), Secret::from("abc"));
    let missing = EnvSecret::new("ZTGATE_TEST_SECRET_THAT_IS_NEVER_SET").get().await.unwrap_err();
    assert!(missing.to_string().contains("ZTGATE_TEST_SECRET_THAT_IS_NEVER_SET"));
    assert!(format!("{:?}", StaticSecret::new("hunter2")).contains("redacted"));
}

// Found by the client_cert fuzz target (fuzz/regressions/client_cert/repeated-cf-cert-verified):
// the first of two cf-cert-verified headers decided.
#[tokio::test]
async fn repeated_cf_cert_header_is_refused_whichever_copy_says_success() {
    let gate = Gate::with_limits(Requirement::mechanism(ClientCertAuth::new()), trusted_limits());
    for (first, second) in [("SUCCESS", "FAILED:certificate revoked"), ("FAILED:x", "SUCCESS"), ("1", "1")] {
        let mut headers = cert_headers(first, "false");
        headers.push(("cf-cert-verified", second));
        let err = check(&gate, &headers).await.unwrap_err();
        assert_eq!(err.code(), "invalid_credential", "{first}/{second}");
    }
    let other_fp = "00".repeat(32);
    let mut headers = cert_headers("SUCCESS", "false");
    headers.push(("cf-cert-fingerprint-sha256", &other_fp));
    assert_eq!(check(&gate, &headers).await.unwrap_err().code(), "invalid_credential");
}

// Found by the client_cert fuzz target (fuzz/regressions/client_cert/overlong-field-cut-to-256-bytes):
// a subject DN over 256 bytes was cut to 256, so it matched a 256-byte pin it merely starts with.
#[tokio::test]
async fn overlong_subject_dn_is_dropped_so_its_prefix_never_matches_a_pin() {
    let pin = format!("CN={}", "a".repeat(253));
    assert_eq!(pin.len(), 256);
    let longer = format!("{pin},O=Evil");
    let gate = Gate::with_limits(
        Requirement::mechanism(ClientCertAuth::new().pin_subject_dns([pin.clone()])),
        trusted_limits(),
    );
    fn with_dn(dn: &str) -> Vec<(&str, &str)> {
        let mut headers = cert_headers("SUCCESS", "false");
        headers.retain(|(name, _)| *name != "cf-cert-subject-dn");
        headers.push(("cf-cert-subject-dn", dn));
        headers
    }
    let headers = with_dn(&longer);
    assert_eq!(check(&gate, &headers).await.unwrap_err(), Rejection::Forbidden);
    let headers = with_dn(&pin);
    assert!(check(&gate, &headers).await.is_ok(), "the exact pinned DN is still admitted");
    // Unpinned, the certificate is admitted without a cut name.
    let open = Gate::with_limits(Requirement::mechanism(ClientCertAuth::new()), trusted_limits());
    let headers = with_dn(&longer);
    match check(&open, &headers).await.unwrap() {
        Principal::ClientCert(p) => assert_eq!(p.subject_dn, ""),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 10: a client-certificate fingerprint is a SHA-256 fingerprint or nothing.

fn with_fingerprint(fp: &str) -> Vec<(&str, &str)> {
    let mut headers = cert_headers("SUCCESS", "0");
    headers.retain(|(name, _)| *name != "cf-cert-fingerprint-sha256");
    headers.push(("cf-cert-fingerprint-sha256", fp));
    headers
}

/// `AB:CD:…`, as `openssl x509 -fingerprint -sha256` prints a fingerprint.
fn colon_form(hex: &str) -> String {
    hex.as_bytes().chunks(2).map(|pair| std::str::from_utf8(pair).unwrap()).collect::<Vec<_>>().join(":")
}

#[tokio::test]
async fn a_fingerprint_that_is_not_64_hex_digits_is_never_a_principal() {
    let open = Gate::with_limits(Requirement::mechanism(ClientCertAuth::new()), trusted_limits());
    let by_dn = ClientCertAuth::new().pin_subject_dns(["CN=backup-agent,O=Acme"]);
    let by_dn = Gate::with_limits(Requirement::mechanism(by_dn), trusted_limits());
    for fp in [
        "not-a-fingerprint".to_owned(),
        FP[..63].to_owned(),
        format!("{FP}0"),
        format!("<script>{}</script>", &FP[..47]),
        "../../../../etc/passwd".to_owned(),
        format!("user:admin@{}", &FP[..53]),
        format!("{FP}:admin"),
        "*".to_owned(),
    ] {
        for gate in [&open, &by_dn] {
            let err = check(gate, &with_fingerprint(&fp)).await.unwrap_err();
            assert_eq!(
                err,
                Rejection::InvalidCredential {
                    mechanism: "client_cert",
                    reason: "malformed certificate fingerprint"
                },
                "{fp:?}"
            );
            assert_eq!(err.to_response::<String>().status(), 401);
        }
    }
    // The same certificate with a real fingerprint is admitted, by either gate.
    assert!(check(&open, &with_fingerprint(FP)).await.is_ok());
    assert!(check(&by_dn, &with_fingerprint(FP)).await.is_ok());
}

#[tokio::test]
async fn a_colon_form_fingerprint_matches_its_pin() {
    let upper_colons = colon_form(&FP.to_uppercase());
    for (pin, sent) in [
        (FP.to_owned(), upper_colons.clone()),
        (upper_colons.clone(), FP.to_owned()),
        (upper_colons.clone(), colon_form(FP)),
        (FP.to_uppercase(), FP.to_owned()),
    ] {
        let pinned = ClientCertAuth::new().pin_fingerprints([pin.as_str()]);
        let gate = Gate::with_limits(Requirement::mechanism(pinned), trusted_limits());
        let principal = check(&gate, &with_fingerprint(&sent)).await.unwrap();
        // The reported id is the one normal form, whichever form was sent.
        assert_eq!(principal.id(), format!("cert:{FP}"), "pin {pin} / sent {sent}");
    }
    // A colon-form header that is another certificate still does not match.
    let pinned = ClientCertAuth::new().pin_fingerprints([FP]);
    let gate = Gate::with_limits(Requirement::mechanism(pinned), trusted_limits());
    let other = colon_form(&"ab".repeat(32));
    assert_eq!(check(&gate, &with_fingerprint(&other)).await.unwrap_err(), Rejection::Forbidden);
}

#[tokio::test]
async fn a_pin_that_is_no_fingerprint_matches_nothing_and_never_opens_the_mechanism() {
    // A typo in the only pin must not turn "pinned" into "any verified certificate".
    for typo in ["not-a-fingerprint", "", &FP[..63]] {
        let pinned = ClientCertAuth::new().pin_fingerprints([typo]);
        let gate = Gate::with_limits(Requirement::mechanism(pinned), trusted_limits());
        assert_eq!(check(&gate, &with_fingerprint(FP)).await.unwrap_err(), Rejection::Forbidden, "{typo:?}");
        // Nor does sending the typo itself match it.
        assert!(check(&gate, &with_fingerprint(typo)).await.is_err(), "{typo:?}");
    }
}

#[tokio::test]
async fn facts_set_outside_the_request_layer_with_a_bad_fingerprint_are_refused() {
    // An adapter (or custom code) may build the facts itself: the mechanism checks the form too.
    use ztgate::identity::{Attempt, Mechanism};
    use ztgate::request::{CertVerification, ClientCertFacts, RequestFacts};
    let mut cert = ClientCertFacts::from_tls_client_auth(|field| match field {
        "certPresented" => Some("1"),
        "certVerified" => Some("SUCCESS"),
        "certRevoked" => Some("0"),
        "certFingerprintSHA256" => Some(FP),
        _ => None,
    });
    assert_eq!(cert.verified, Some(CertVerification::Success));
    let facts = |cert: &ClientCertFacts| {
        RequestFacts::from_parts(&http::Method::GET, "/", &http::HeaderMap::new(), &RequestLimits::default())
            .unwrap()
            .with_client_cert(Some(cert.clone()))
    };
    let attempt = |facts: RequestFacts| async move {
        Mechanism::<ztgate::NoClaims>::attempt(&ClientCertAuth::new(), &facts).await
    };
    assert!(matches!(attempt(facts(&cert)).await, Attempt::Verified(_)));
    cert.fingerprint_sha256 = Some("user:admin".to_owned());
    assert!(matches!(attempt(facts(&cert)).await, Attempt::Refused(Rejection::InvalidCredential { .. })));
    cert.fingerprint_sha256 = Some(FP.to_uppercase());
    match attempt(facts(&cert)).await {
        Attempt::Verified(p) => assert_eq!(p.id(), format!("cert:{FP}")),
        other => panic!("{other:?}"),
    }
}

// Found by the request_facts fuzz target
// (fuzz/regressions/request_facts/repeated-assertion-header-with-oversized-cookie): once the
// Cookie fields were joined up front, an oversized Cookie header was reported before a repeated
// assertion header. Both refuse the request; the assertion header's error comes first, as its
// model says.
#[tokio::test]
async fn a_repeated_assertion_header_is_reported_before_an_oversized_cookie() {
    let gate = Gate::public();
    let big = format!("theme={}", "x".repeat(40 * 1024));
    let headers = [
        ("cf-access-jwt-assertion", "a.b.c"),
        ("cf-access-jwt-assertion", "d.e.f"),
        ("cookie", big.as_str()),
    ];
    let err = check(&gate, &headers).await.unwrap_err();
    assert_eq!(
        err,
        Rejection::Request(ztgate::request::RequestError::AmbiguousCredential {
            name: "Cf-Access-Jwt-Assertion"
        })
    );
    // Alone, the oversized cookie is still refused.
    let err = check(&gate, &[("cookie", big.as_str())]).await.unwrap_err();
    assert!(matches!(
        err,
        Rejection::Request(ztgate::request::RequestError::HeaderTooLarge { header: "Cookie", .. })
    ));
}
