//! The workload-identity round trip against a real STS implementation: moto's server
//! (`moto[server]` from PyPI), started by this test on a free 127.0.0.1 port and killed at the
//! end. A token signed by `ztgate::workload` is exchanged through `AssumeRoleWithWebIdentity`;
//! the credentials are then presented to moto's `GetCallerIdentity`, which names the assumed
//! role only for credentials it issued.
//!
//! moto does not verify the web-identity token (it accepts any role ARN and any token), so the
//! same token is also verified here the way a cloud would: the discovery document and the JWKS
//! fetched from the issuer served on 127.0.0.1, and the RS256 signature checked by ztgate's
//! own JWKS cache and verifier.
//!
//! Needs `moto_server` on PATH, or `python3 -m moto.server` (CI installs `moto[server]` with
//! pip), so it runs only with the `sts-tests` feature:
//! `cargo test --features sts-tests --test workload_sts`.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::Value;
use ztgate::clock::SystemClock;
use ztgate::identity::{JwksCache, JwksConfig};
use ztgate::native::HttpFetcher;
use ztgate::secrets::StaticSecret;
use ztgate::workload::{
    Algorithm, IssuerConfig, StsClient, StsConfig, StsError, WebIdentityCredentials, WorkloadIssuer,
};

const ACCOUNT: &str = "123456789012";
const ROLE_NAME: &str = "ztgate-workload";
const SESSION: &str = "ztgate-ci";

/// moto's server on a loopback port, killed when dropped.
struct Moto {
    child: Child,
    addr: SocketAddr,
}

impl Moto {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let args = ["-H", "127.0.0.1", "-p", &port.to_string()];
        let spawn = |program: &str, prefix: &[&str]| {
            Command::new(program)
                .args(prefix)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        };
        let child = spawn("moto_server", &[])
            .or_else(|_| spawn("python3", &["-m", "moto.server"]))
            .expect("moto_server on PATH, or python3 with moto[server] (pip install 'moto[server]')");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let moto = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "moto's server did not start on {addr}");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rsa_pem() -> String {
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let body = STANDARD.encode(key.as_der().unwrap().as_ref());
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n")) // pragma: allowlist secret
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().unwrap()
}

/// `GetCallerIdentity` as the holder of `access_key_id`. moto reads the key id from the
/// SigV4 `Authorization` header and does not check the signature, so none is computed.
async fn caller_arn(moto: &Moto, access_key_id: &str, session_token: &str) -> String {
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={access_key_id}/20300101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00"
    );
    let body = http()
        .post(moto.endpoint())
        .header("Authorization", authorization)
        .header("X-Amz-Security-Token", session_token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("Action=GetCallerIdentity&Version=2011-06-15")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = body.find("<Arn>").expect("an Arn in GetCallerIdentity's answer") + 5;
    body[start..start + body[start..].find("</Arn>").unwrap()].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_token_buys_credentials_from_moto_that_moto_then_recognises() {
    let moto = Moto::start();

    // The issuer, its discovery document and JWKS served on loopback, as a cloud would fetch them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer_url = format!("http://{}", listener.local_addr().unwrap());
    let config =
        IssuerConfig::new(&issuer_url, "system:serviceaccount:ci:ztgate", ["sts.amazonaws.com"]).unwrap();
    let clock = Arc::new(SystemClock);
    let issuer = WorkloadIssuer::new(config, Algorithm::Rs256, StaticSecret::new(rsa_pem()), clock.clone());
    let service = issuer.discovery_service();
    let app = axum::Router::new()
        .route_service("/.well-known/openid-configuration", service.clone())
        .route_service("/.well-known/jwks.json", service);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let role_arn = format!("arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}");
    let sts_config = StsConfig::new(&role_arn, SESSION)
        .unwrap()
        .with_endpoint(moto.endpoint())
        .dangerously_allow_http_on_loopback()
        .with_duration(Duration::from_secs(900))
        .unwrap()
        .with_deadline(Duration::from_secs(30))
        .unwrap()
        .with_attempt_timeout(Duration::from_secs(10))
        .unwrap();
    let sts = StsClient::new(sts_config).unwrap();

    // 1. One token, verified as a cloud would, then exchanged.
    let token = issuer.sign().await.unwrap();
    let discovery: Value = http()
        .get(format!("{issuer_url}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], issuer_url);
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap();
    let keys =
        JwksCache::new(Arc::new(HttpFetcher::new(jwks_uri).unwrap()), clock.clone(), JwksConfig::default());
    let key = keys.key(token.key_id()).await.expect("the token's kid is in the published JWKS");
    let (signing_input, signature) = token.expose().rsplit_once('.').unwrap();
    assert!(key.verify(signing_input.as_bytes(), signature), "ztgate's RS256 check refused the token");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(signing_input.split('.').nth(1).unwrap()).unwrap())
            .unwrap();
    assert_eq!((&claims["iss"], &claims["aud"]), (&issuer_url.clone().into(), &"sts.amazonaws.com".into()));

    let credentials = sts.assume_role_with_web_identity(token.expose()).await.unwrap();
    assert!(credentials.access_key_id().starts_with("ASIA"), "{credentials:?}");
    let assumed = format!("arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE_NAME}/{SESSION}");
    assert_eq!(credentials.assumed_role_arn(), Some(assumed.as_str()));
    let now = ztgate::clock::unix_now();
    assert!((now + 800..=now + 960).contains(&credentials.expiration()), "asked for 900 s");
    assert_eq!(caller_arn(&moto, credentials.access_key_id(), credentials.session_token()).await, assumed);
    // The check is live: a key moto never issued is someone else.
    assert_ne!(caller_arn(&moto, "ASIAZZZZZZZZZZZZZZZZ", "none").await, assumed); // pragma: allowlist secret

    // 2. The cached provider: many concurrent calls, one exchange, and moto knows the result.
    let aws = WebIdentityCredentials::new(issuer.clone(), sts.clone(), clock.clone());
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let aws = aws.clone();
        calls.spawn(async move { aws.credentials().await.map(|c| c.access_key_id().to_owned()) });
    }
    let ids: Vec<String> = calls.join_all().await.into_iter().map(Result::unwrap).collect();
    assert!(ids.iter().all(|id| *id == ids[0]));
    assert_eq!(aws.exchanges(), 1);
    let cached = aws.credentials().await.unwrap();
    assert_eq!(caller_arn(&moto, cached.access_key_id(), cached.session_token()).await, assumed);

    // 3. moto down: a bounded error, not a hang.
    drop(moto);
    let token = issuer.sign().await.unwrap();
    let after = sts.assume_role_with_web_identity(token.expose());
    let error = tokio::time::timeout(Duration::from_secs(60), after).await.expect("hung").unwrap_err();
    assert!(matches!(error, StsError::Network(_) | StsError::DeadlineExceeded { .. }), "{error:?}");
}
