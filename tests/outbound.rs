//! The outbound-URL guard (`ztgate::outbound`) against the SSRF attacks it exists for.
//!
//! Every request goes to a real HTTP server this file starts on `127.0.0.1:0`, or nowhere:
//! a refused URL is refused before any connection, and a public address is only classified,
//! never connected to. Where a rule could be bypassed by reaching the local server, the test
//! points at that live server, so that removing the rule makes the fetch succeed and the test
//! fail.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use ztgate::outbound::{
    AddressRange, DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, Embedding, GuardedFetcher, MAX_REDIRECTS,
    OutboundError, classify, is_public,
};

// ---------------------------------------------------------------------------------------------
// A small HTTP/1.1 server whose answer per path is decided by the test.

enum Reply {
    Page(String),
    Status(u16, &'static str),
    Redirect(u16, String),
    /// A redirect sent after a pause.
    SlowRedirect(Duration, String),
    RedirectWithoutLocation,
    /// A body of this many bytes, with or without `Content-Length` (else: until close).
    Body {
        len: usize,
        content_length: bool,
    },
    /// A body that never ends.
    Endless,
    /// `Content-Length: n`, then nothing.
    Declared(usize),
    /// Accepts, reads the request, never answers.
    Stall,
    /// `Content-Length: n`, then one byte every `gap`.
    Trickle {
        len: usize,
        gap: Duration,
    },
}

type Route = dyn Fn(&str) -> Reply + Send + Sync;

struct Server {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Server {
    async fn start(route: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let route: Arc<Route> = Arc::new(route);
        let seen = hits.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket, route.clone(), seen.clone()));
            }
        });
        Server { addr, hits }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

async fn answer(mut socket: TcpStream, route: Arc<Route>, hits: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
    hits.lock().unwrap().push(path.clone());
    let simple = |status: u16, headers: &str, body: &str| {
        format!(
            "HTTP/1.1 {status} X\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let _ = match route(&path) {
        Reply::Page(body) => {
            socket.write_all(simple(200, "Content-Type: text/html\r\n", &body).as_bytes()).await
        }
        Reply::Status(status, body) => socket.write_all(simple(status, "", body).as_bytes()).await,
        Reply::Redirect(status, location) => {
            socket.write_all(simple(status, &format!("Location: {location}\r\n"), "").as_bytes()).await
        }
        Reply::SlowRedirect(pause, location) => {
            tokio::time::sleep(pause).await;
            socket.write_all(simple(302, &format!("Location: {location}\r\n"), "").as_bytes()).await
        }
        Reply::RedirectWithoutLocation => socket.write_all(simple(302, "", "").as_bytes()).await,
        Reply::Body { len, content_length } => {
            let length = if content_length { format!("Content-Length: {len}\r\n") } else { String::new() };
            let head = format!("HTTP/1.1 200 OK\r\nConnection: close\r\n{length}\r\n");
            let mut response = head.into_bytes();
            response.resize(response.len() + len, b'a');
            socket.write_all(&response).await
        }
        Reply::Endless => {
            let chunk = vec![b'a'; 64 * 1024];
            let mut result = socket.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").await;
            while result.is_ok() {
                result = socket.write_all(&chunk).await;
            }
            result
        }
        Reply::Declared(len) => {
            let head = format!("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n");
            let result = socket.write_all(head.as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            result
        }
        Reply::Stall => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        }
        Reply::Trickle { len, gap } => {
            let head = format!("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n");
            let mut result = socket.write_all(head.as_bytes()).await;
            for _ in 0..len {
                if result.is_err() {
                    break;
                }
                tokio::time::sleep(gap).await;
                result = socket.write_all(b"a").await;
            }
            result
        }
    };
    let _ = socket.shutdown().await;
}

/// A page at `/page`, 404 elsewhere.
async fn page_server() -> Server {
    Server::start(|path| match path {
        "/page" => Reply::Page("<p>hello</p>".into()),
        _ => Reply::Status(404, "missing"),
    })
    .await
}

fn default_fetcher() -> GuardedFetcher {
    GuardedFetcher::new().unwrap()
}

fn loopback_fetcher() -> GuardedFetcher {
    GuardedFetcher::builder().dangerously_allow_loopback_for_tests().build().unwrap()
}

/// The refused address and its reason, or a panic naming what came instead.
fn non_public(
    outcome: Result<ztgate::outbound::Fetched, OutboundError>,
    url: &str,
) -> (String, AddressRange, Option<Embedding>) {
    match outcome {
        Err(OutboundError::NonPublicAddress { address, reason, .. }) => {
            (address.to_string(), reason.range(), reason.embedding())
        }
        other => panic!("{url}: expected a non-public address refusal, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses.

#[tokio::test]
async fn loopback_url_is_refused() {
    let server = page_server().await;
    let fetcher = default_fetcher();
    for (url, address) in [
        (server.url("/page"), "127.0.0.1"),
        (format!("http://127.0.0.2:{}/page", server.port()), "127.0.0.2"),
        (format!("http://[::1]:{}/page", server.port()), "::1"),
    ] {
        let refused = non_public(fetcher.get(&url).await, &url);
        assert_eq!(refused, (address.to_owned(), AddressRange::Loopback, None), "{url}");
        assert_eq!(fetcher.check_url(&url).unwrap_err(), fetcher.get(&url).await.unwrap_err());
    }
    assert!(server.hits().is_empty(), "the server was reached: {:?}", server.hits());
}

#[tokio::test]
async fn numeric_ipv4_spellings_of_loopback_are_refused() {
    let server = page_server().await;
    let fetcher = default_fetcher();
    let port = server.port();
    for host in ["2130706433", "0x7f000001", "0x7f.0.0.1", "0177.0.0.1", "127.1", "0x7F.1", "017700000001"] {
        let url = format!("http://{host}:{port}/page");
        assert_eq!(
            non_public(fetcher.get(&url).await, &url),
            ("127.0.0.1".into(), AddressRange::Loopback, None)
        );
    }
    assert!(server.hits().is_empty());
}

#[tokio::test]
async fn a_hostname_resolving_to_loopback_is_refused() {
    let server = page_server().await;
    let url = format!("http://localhost:{}/page", server.port());
    let outcome = default_fetcher().get(&url).await;
    match &outcome {
        Err(OutboundError::NonPublicAddress { host, reason, .. }) => {
            assert_eq!(host, "localhost");
            assert_eq!(reason.range(), AddressRange::Loopback);
        }
        other => panic!("{other:?}"),
    }
    // Not refusable without resolving: the syntax check lets it through.
    assert!(default_fetcher().check_url(&url).is_ok());
    assert!(server.hits().is_empty());
}

#[tokio::test]
async fn ipv4_mapped_ipv6_of_a_private_address_is_refused() {
    let fetcher = GuardedFetcher::builder().timeout(Duration::from_secs(2)).build().unwrap();
    for (url, address, range) in [
        ("http://[::ffff:10.0.0.1]/", "::ffff:10.0.0.1", AddressRange::Private),
        ("http://[::ffff:192.168.1.1]/", "::ffff:192.168.1.1", AddressRange::Private),
        ("http://[::ffff:a9fe:a9fe]/", "::ffff:169.254.169.254", AddressRange::CloudMetadata),
    ] {
        assert_eq!(
            non_public(fetcher.get(url).await, url),
            (address.into(), range, Some(Embedding::Ipv4Mapped))
        );
    }
    // The mapped form of loopback stays refused even where loopback itself is allowed: a
    // dual-stack socket would reach the live server through it.
    let server = page_server().await;
    let url = format!("http://[::ffff:127.0.0.1]:{}/page", server.port());
    let refused = non_public(loopback_fetcher().get(&url).await, &url);
    assert_eq!(refused, ("::ffff:127.0.0.1".into(), AddressRange::Loopback, Some(Embedding::Ipv4Mapped)));
    assert!(server.hits().is_empty());
}

#[tokio::test]
async fn nat64_and_6to4_forms_of_a_private_address_are_refused() {
    let fetcher = default_fetcher();
    for (url, range, embedding) in [
        ("http://[64:ff9b::10.0.0.1]/", AddressRange::Private, Embedding::Nat64),
        ("http://[64:ff9b::127.0.0.1]/", AddressRange::Loopback, Embedding::Nat64),
        ("http://[2002:c0a8:101::1]/", AddressRange::Private, Embedding::SixToFour),
        ("http://[::127.0.0.1]/", AddressRange::Loopback, Embedding::Ipv4Compatible),
    ] {
        let (_, got_range, got_embedding) = non_public(fetcher.get(url).await, url);
        assert_eq!((got_range, got_embedding), (range, Some(embedding)), "{url}");
    }
}

#[tokio::test]
async fn metadata_address_is_refused() {
    let fetcher = default_fetcher();
    for (url, address) in [
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "169.254.169.254"),
        ("http://169.254.170.2/v2/credentials", "169.254.170.2"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254"),
        ("http://168.63.129.16/machine?comp=goalstate", "168.63.129.16"),
        ("http://2852039166/latest/meta-data/", "169.254.169.254"),
    ] {
        assert_eq!(
            non_public(fetcher.get(url).await, url),
            (address.into(), AddressRange::CloudMetadata, None),
            "{url}"
        );
    }
}

#[tokio::test]
async fn private_link_local_cgnat_multicast_and_reserved_addresses_are_refused() {
    let fetcher = default_fetcher();
    for (url, range) in [
        ("http://10.1.2.3/", AddressRange::Private),
        ("http://172.16.0.1/", AddressRange::Private),
        ("http://172.31.255.254/", AddressRange::Private),
        ("http://192.168.0.1/", AddressRange::Private),
        ("http://169.254.1.1/", AddressRange::LinkLocal),
        ("http://[fe80::1]/", AddressRange::LinkLocal),
        ("http://100.64.0.1/", AddressRange::SharedAddressSpace),
        ("http://0.0.0.0/", AddressRange::Unspecified),
        ("http://[::]/", AddressRange::Unspecified),
        ("http://0.1.2.3/", AddressRange::ThisNetwork),
        ("http://224.0.0.1/", AddressRange::Multicast),
        ("http://[ff02::1]/", AddressRange::Multicast),
        ("http://255.255.255.255/", AddressRange::Broadcast),
        ("http://192.0.2.1/", AddressRange::Documentation),
        ("http://198.51.100.1/", AddressRange::Documentation),
        ("http://203.0.113.1/", AddressRange::Documentation),
        ("http://[2001:db8::1]/", AddressRange::Documentation),
        ("http://198.18.0.1/", AddressRange::Benchmarking),
        ("http://240.0.0.1/", AddressRange::Reserved),
        ("http://192.0.0.8/", AddressRange::ProtocolAssignments),
        ("http://[fc00::1]/", AddressRange::UniqueLocal),
        ("http://[fd12:3456::1]/", AddressRange::UniqueLocal),
        ("http://[2001::1]/", AddressRange::Teredo),
        ("http://[100::1]/", AddressRange::NotGlobalUnicast),
    ] {
        let (_, got, _) = non_public(fetcher.get(url).await, url);
        assert_eq!(got, range, "{url}");
    }
}

#[test]
fn public_addresses_are_classified_public_and_never_contacted() {
    // Classified only: no test connects to the internet.
    for ip in
        ["1.1.1.1", "8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::1.1.1.1"]
    {
        let ip = ip.parse().unwrap();
        assert!(is_public(ip), "{ip}");
        assert_eq!(classify(ip), Ok(()));
    }
    let fetcher = default_fetcher();
    assert_eq!(
        fetcher.check_url("https://93.184.216.34/post?x=1#frag").unwrap(),
        "https://93.184.216.34/post?x=1"
    );
    assert_eq!(fetcher.check_url("HTTPS://Blog.Example./a/../b").unwrap(), "https://blog.example./b");
}

// ---------------------------------------------------------------------------------------------
// The URL.

#[tokio::test]
async fn credentials_in_the_url_are_refused() {
    let server = page_server().await;
    let fetcher = loopback_fetcher();
    let port = server.port();
    for url in [
        format!("http://user:secret@127.0.0.1:{port}/page"), // pragma: allowlist secret
        format!("http://user@127.0.0.1:{port}/page"),
        format!("http://:secret@127.0.0.1:{port}/page"), // pragma: allowlist secret
        "https://user:secret@example.com/".to_owned(),   // pragma: allowlist secret
    ] {
        assert_eq!(fetcher.get(&url).await.unwrap_err(), OutboundError::Credentials, "{url}");
        assert_eq!(fetcher.check_url(&url).unwrap_err(), OutboundError::Credentials, "{url}");
    }
    assert!(server.hits().is_empty(), "{:?}", server.hits());
}

#[tokio::test]
async fn file_and_gopher_schemes_are_refused() {
    let server = page_server().await;
    let fetcher = loopback_fetcher();
    let port = server.port();
    for (url, scheme) in [
        ("file:///etc/passwd".to_owned(), "file"),
        (format!("gopher://127.0.0.1:{port}/_GET%20/page"), "gopher"),
        (format!("ftp://127.0.0.1:{port}/page"), "ftp"),
        (format!("ws://127.0.0.1:{port}/page"), "ws"),
        ("data:text/html,<p>x</p>".to_owned(), "data"),
        ("javascript:alert(1)".to_owned(), "javascript"),
    ] {
        assert_eq!(fetcher.get(&url).await.unwrap_err(), OutboundError::Scheme(scheme.into()), "{url}");
    }
    assert!(server.hits().is_empty(), "{:?}", server.hits());
}

#[tokio::test]
async fn urls_without_a_host_or_unparseable_are_refused() {
    let fetcher = default_fetcher();
    for url in ["not a url", "http://", "http://:80/", "https://[::1/", "http://exa mple.com/", "/relative"] {
        let refused = fetcher.get(url).await.unwrap_err();
        assert!(
            matches!(refused, OutboundError::InvalidUrl(_) | OutboundError::NoHost),
            "{url}: {refused:?}"
        );
        assert!(refused.is_refusal());
    }
}

// ---------------------------------------------------------------------------------------------
// Fetching, with loopback allowed for tests.

#[tokio::test]
async fn a_local_page_is_fetched_when_loopback_is_allowed_for_tests() {
    let server = page_server().await;
    let page = loopback_fetcher().get(&server.url("/page#section")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.body(), b"<p>hello</p>");
    assert_eq!(page.url(), server.url("/page"));
    assert_eq!(page.redirects(), 0);
    assert_eq!(page.headers()["content-type"], "text/html");
    // Through the resolver too: `localhost` answers loopback, which the switch admits.
    let page = loopback_fetcher().get(&format!("http://localhost:{}/page", server.port())).await.unwrap();
    assert_eq!(page.into_body(), b"<p>hello</p>");
    assert_eq!(server.hits(), ["/page", "/page"]);
}

#[tokio::test]
async fn a_status_other_than_2xx_is_an_error_that_never_shows_the_body() {
    let server = Server::start(|path| match path {
        "/boom" => Reply::Status(500, "stack trace: db password hunter2"),
        _ => Reply::Status(404, "hunter2 not found"),
    })
    .await;
    let fetcher = loopback_fetcher();
    for (path, status) in [("/boom", 500), ("/nothing", 404)] {
        let error = fetcher.get(&server.url(path)).await.unwrap_err();
        assert_eq!(error, OutboundError::Status(status));
        assert!(!error.to_string().contains("hunter2") && !format!("{error:?}").contains("hunter2"));
    }
}

// ---------------------------------------------------------------------------------------------
// Redirects.

/// `/start` redirects to `location`; `/page` is a page.
async fn redirect_server(location: String) -> Server {
    Server::start(move |path| match path {
        "/start" => Reply::Redirect(302, location.clone()),
        "/page" => Reply::Page("<p>landed</p>".into()),
        _ => Reply::Status(404, ""),
    })
    .await
}

#[tokio::test]
async fn redirects_are_not_followed_by_default() {
    let server = redirect_server("/page".into()).await;
    let refused = loopback_fetcher().get(&server.url("/start")).await.unwrap_err();
    assert_eq!(refused, OutboundError::TooManyRedirects { max: 0 });
    assert_eq!(server.hits(), ["/start"]);
    // The same redirect is followed once it is allowed.
    let fetcher =
        GuardedFetcher::builder().dangerously_allow_loopback_for_tests().max_redirects(1).build().unwrap();
    assert_eq!(fetcher.get(&server.url("/start")).await.unwrap().body(), b"<p>landed</p>");
}

#[tokio::test]
async fn a_redirect_to_a_private_address_is_refused_even_when_redirects_are_allowed() {
    let fetcher = GuardedFetcher::builder()
        .dangerously_allow_loopback_for_tests()
        .max_redirects(MAX_REDIRECTS)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    for (location, address, range) in [
        ("http://10.0.0.1/admin", "10.0.0.1", AddressRange::Private),
        ("http://192.168.1.1:8080/", "192.168.1.1", AddressRange::Private),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", AddressRange::CloudMetadata),
        ("http://[::ffff:172.16.0.1]/", "::ffff:172.16.0.1", AddressRange::Private),
        ("http://0xa9fea9fe/", "169.254.169.254", AddressRange::CloudMetadata),
    ] {
        let server = redirect_server(location.into()).await;
        let url = server.url("/start");
        let (got, got_range, _) = non_public(fetcher.get(&url).await, location);
        assert_eq!((got.as_str(), got_range), (address, range), "{location}");
    }
}

#[tokio::test]
async fn a_redirect_to_another_scheme_or_to_credentials_is_refused() {
    let fetcher =
        GuardedFetcher::builder().dangerously_allow_loopback_for_tests().max_redirects(5).build().unwrap();
    let server = redirect_server("file:///etc/passwd".into()).await;
    assert_eq!(fetcher.get(&server.url("/start")).await.unwrap_err(), OutboundError::Scheme("file".into()));
    let port = Arc::new(Mutex::new(0u16));
    let port_seen = port.clone();
    let server = Server::start(move |path| match path {
        "/start" => {
            Reply::Redirect(302, format!("http://user:pw@127.0.0.1:{}/page", port_seen.lock().unwrap()))
        }
        _ => Reply::Page("<p>should not be reached</p>".into()),
    })
    .await;
    *port.lock().unwrap() = server.port();
    assert_eq!(fetcher.get(&server.url("/start")).await.unwrap_err(), OutboundError::Credentials);
    assert_eq!(server.hits(), ["/start"]);
    let server = Server::start(|_| Reply::RedirectWithoutLocation).await;
    assert_eq!(fetcher.get(&server.url("/start")).await.unwrap_err(), OutboundError::BadRedirect);
}

/// `/hop/3` → `/hop/2` (relative) → `http://localhost:port/hop/1` (by name, through the
/// resolver) → `//127.0.0.1:port/page` (scheme-relative) → the page, each with another redirect
/// status; and `/bad/2` → `/bad/1` → the IPv4-mapped loopback address → `/secret`.
async fn chain_server() -> Server {
    let port = Arc::new(Mutex::new(0u16));
    let port_seen = port.clone();
    let server = Server::start(move |path| {
        let port = *port_seen.lock().unwrap();
        match path {
            "/hop/3" => Reply::Redirect(301, "/hop/2".into()),
            "/hop/2" => Reply::Redirect(307, format!("http://localhost:{port}/hop/1")),
            "/hop/1" => Reply::Redirect(308, format!("//127.0.0.1:{port}/page")),
            "/page" => Reply::Page("<p>end of the chain</p>".into()),
            "/bad/2" => Reply::Redirect(302, "/bad/1".into()),
            "/bad/1" => Reply::Redirect(303, format!("http://[::ffff:127.0.0.1]:{port}/secret")),
            "/secret" => Reply::Page("<p>internal</p>".into()),
            _ => Reply::Status(404, ""),
        }
    })
    .await;
    *port.lock().unwrap() = server.port();
    server
}

#[tokio::test]
async fn a_redirect_chain_within_the_cap_is_followed_with_each_hop_checked() {
    let server = chain_server().await;
    let allowed =
        GuardedFetcher::builder().dangerously_allow_loopback_for_tests().max_redirects(3).build().unwrap();
    let page = allowed.get(&server.url("/hop/3")).await.unwrap();
    assert_eq!(page.body(), b"<p>end of the chain</p>");
    assert_eq!(page.redirects(), 3);
    assert_eq!(page.url(), server.url("/page"));
    assert_eq!(server.hits(), ["/hop/3", "/hop/2", "/hop/1", "/page"]);

    // Each hop is checked: the third URL of this chain is the mapped form of loopback, which
    // the test switch does not admit, and which would reach the server on a dual-stack host.
    let url = server.url("/bad/2");
    let refused = non_public(allowed.get(&url).await, &url);
    assert_eq!(refused, ("::ffff:127.0.0.1".into(), AddressRange::Loopback, Some(Embedding::Ipv4Mapped)));
    assert!(!server.hits().contains(&"/secret".to_owned()), "{:?}", server.hits());
}

#[tokio::test]
async fn a_redirect_chain_longer_than_the_cap_is_refused() {
    let server = chain_server().await;
    let fetcher =
        GuardedFetcher::builder().dangerously_allow_loopback_for_tests().max_redirects(2).build().unwrap();
    assert_eq!(
        fetcher.get(&server.url("/hop/3")).await.unwrap_err(),
        OutboundError::TooManyRedirects { max: 2 }
    );
    assert_eq!(server.hits(), ["/hop/3", "/hop/2", "/hop/1"]);
}

#[test]
fn more_than_five_redirects_cannot_be_configured() {
    assert_eq!(MAX_REDIRECTS, 5);
    assert!(GuardedFetcher::builder().max_redirects(5).build().is_ok());
    let refused = GuardedFetcher::builder().max_redirects(6).build().unwrap_err();
    assert_eq!(refused.setting(), "outbound.max_redirects");
    assert!(GuardedFetcher::builder().max_bytes(0).build().is_err());
    assert!(GuardedFetcher::builder().max_bytes(65 << 20).build().is_err());
    assert!(GuardedFetcher::builder().timeout(Duration::ZERO).build().is_err());
    assert!(GuardedFetcher::builder().timeout(Duration::from_secs(61)).build().is_err());
    assert!(GuardedFetcher::builder().user_agent("bad\nagent").build().is_err());
}

// ---------------------------------------------------------------------------------------------
// Size and time.

#[tokio::test]
async fn oversized_body_is_cut_at_the_cap() {
    assert_eq!(DEFAULT_MAX_BYTES, 1 << 20);
    let server = Server::start(|_| Reply::Endless).await;
    // A body that never ends would run into the timeout; the cap ends it long before.
    let fetcher = GuardedFetcher::builder()
        .dangerously_allow_loopback_for_tests()
        .max_bytes(64 * 1024)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        fetcher.get(&server.url("/")).await.unwrap_err(),
        OutboundError::TooLarge { max_bytes: 64 * 1024 }
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // The default cap, on a body without a length: 1 MiB passes whole, one byte more does not.
    let server = Server::start(|path| Reply::Body {
        len: DEFAULT_MAX_BYTES + usize::from(path == "/over"),
        content_length: false,
    })
    .await;
    let fetcher = loopback_fetcher();
    assert_eq!(fetcher.get(&server.url("/exact")).await.unwrap().body().len(), DEFAULT_MAX_BYTES);
    assert_eq!(
        fetcher.get(&server.url("/over")).await.unwrap_err(),
        OutboundError::TooLarge { max_bytes: 1 << 20 }
    );
}

#[tokio::test]
async fn a_declared_oversized_body_is_refused_before_it_is_read() {
    // The server announces 2 MiB and sends nothing: only the up-front check answers in time.
    let server = Server::start(|_| Reply::Declared(2 << 20)).await;
    let fetcher = GuardedFetcher::builder()
        .dangerously_allow_loopback_for_tests()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        fetcher.get(&server.url("/")).await.unwrap_err(),
        OutboundError::TooLarge { max_bytes: 1 << 20 }
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn slow_server_hits_the_timeout() {
    assert_eq!(DEFAULT_TIMEOUT, Duration::from_secs(5));
    let server = Server::start(|_| Reply::Stall).await;
    let fetcher = GuardedFetcher::builder()
        .dangerously_allow_loopback_for_tests()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    assert_eq!(fetcher.get(&server.url("/")).await.unwrap_err(), OutboundError::Timeout);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(server.hits(), ["/"]);
}

#[tokio::test]
async fn a_trickling_body_hits_the_timeout_of_the_whole_operation() {
    // A byte every 50 ms keeps each read short; the operation as a whole is what is bounded.
    let server = Server::start(|_| Reply::Trickle { len: 200, gap: Duration::from_millis(50) }).await;
    let fetcher = GuardedFetcher::builder()
        .dangerously_allow_loopback_for_tests()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let started = Instant::now();
    assert_eq!(fetcher.get(&server.url("/")).await.unwrap_err(), OutboundError::Timeout);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_timeout_bounds_the_whole_redirect_chain() {
    // Each hop answers well within the timeout; four of them do not.
    let server = Server::start(|path| {
        let hop: u8 = path.trim_start_matches("/hop/").parse().unwrap_or(0);
        match hop {
            0 => Reply::Page("<p>too late</p>".into()),
            n => Reply::SlowRedirect(Duration::from_millis(250), format!("/hop/{}", n - 1)),
        }
    })
    .await;
    let fetcher = GuardedFetcher::builder()
        .dangerously_allow_loopback_for_tests()
        .max_redirects(5)
        .timeout(Duration::from_millis(600))
        .build()
        .unwrap();
    assert_eq!(fetcher.get(&server.url("/hop/4")).await.unwrap_err(), OutboundError::Timeout);
    assert!(server.hits().len() < 4, "{:?}", server.hits());
    // With time for all of them, the same chain ends at the page.
    let patient =
        GuardedFetcher::builder().dangerously_allow_loopback_for_tests().max_redirects(5).build().unwrap();
    assert_eq!(patient.get(&server.url("/hop/4")).await.unwrap().redirects(), 4);
}
