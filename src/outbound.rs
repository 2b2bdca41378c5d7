//! Fetching a URL a caller supplied, without becoming their proxy into your network (SSRF).
//!
//! An endpoint that fetches a URL from its request (a webmention's `source`, a link preview, an
//! avatar URL) lets anyone on the internet make *your server* send a request. Unguarded, that
//! request reaches what only your server can reach: `127.0.0.1`, the private network, the
//! cloud's metadata service (`169.254.169.254` hands out credentials), and it can be steered
//! there by DNS or by a redirect after a URL that looked harmless was checked.
//! [`GuardedFetcher`] is the one call for that case (feature `native`):
//!
//! - **The URL**: `http` or `https` only; no credentials (`user:pass@`); a host is required.
//!   The URL is parsed by the WHATWG rules (`reqwest::Url`), which normalise numeric IPv4
//!   forms (`http://2130706433/`, `http://0x7f.1/`, `http://0177.0.0.1/` are all `127.0.0.1`),
//!   so the address checked below is the address the connection uses, whatever the spelling.
//! - **The addresses**: the host is resolved, and refused unless *every* address it resolves to
//!   is public ([`classify`]): no loopback, private, link-local, CGNAT, metadata, multicast,
//!   broadcast, documentation, benchmarking or reserved ranges, and no IPv6 form that embeds
//!   one of those (IPv4-mapped `::ffff:0:0/96`, IPv4-compatible `::/96`, NAT64 `64:ff9b::/96`,
//!   6to4 `2002::/16`), no Teredo and nothing outside global unicast `2000::/3`.
//! - **The connection goes to the checked address.** See "Why a checking resolver" below.
//! - **Redirects**: none by default (a `3xx` is [`OutboundError::TooManyRedirects`] with
//!   `max: 0`). With [`GuardedFetcherBuilder::max_redirects`] (at most [`MAX_REDIRECTS`]),
//!   each `Location` is resolved against the current URL and checked again by every rule
//!   above, exactly like the first URL: the fetcher follows redirects itself, reqwest never does.
//! - **Bounds**: one timeout for the whole operation, DNS, connection, every redirect and the
//!   body included (default [`DEFAULT_TIMEOUT`], 5 s), and a body cap enforced while streaming
//!   (default [`DEFAULT_MAX_BYTES`], 1 MiB), up front when `Content-Length` already says more.
//! - **Nothing ambient**: no proxy (an environment proxy would make the address check
//!   meaningless), no cookies, no compression (no decompression bomb), only a `2xx` is a page.
//!
//! ## Why a checking resolver, not pinned addresses
//!
//! The address that is checked must be the address that is connected to; resolving once to
//! check and letting the HTTP client resolve again to connect is the DNS-rebinding hole (a name
//! with a zero TTL answers a public address to the check and `127.0.0.1` to the connection).
//! Two shapes close it: pin each request's client to the checked addresses
//! (`ClientBuilder::resolve_to_addrs`), or give one client a resolver that checks every
//! address it returns. This module does the second: the client's only resolver
//! is [`tokio::net::lookup_host`] followed by [`classify`] on every answer, so an address that
//! was not checked cannot reach the connector — whatever the name, on every hop, and for every
//! new connection of the pool. One client means one TLS configuration (root certificates are
//! loaded once, not per request) and one connection pool, whose connections were each opened to
//! a checked address. Hosts written as IP addresses never reach a resolver (the connector
//! parses them); they are checked before the request is sent.
//!
//! ```
//! use ztgate::outbound::{AddressRange, GuardedFetcher, OutboundError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fetcher = GuardedFetcher::new()?;
//! // Refused before any packet is sent: the AWS/GCP/Azure metadata service.
//! match fetcher.get("http://169.254.169.254/latest/meta-data/").await {
//!     Err(OutboundError::NonPublicAddress { reason, .. }) => {
//!         assert_eq!(reason.range(), AddressRange::CloudMetadata)
//!     }
//!     other => panic!("not refused: {other:?}"),
//! }
//! // The same address spelled as one decimal number is the same address.
//! assert!(matches!(fetcher.get("http://2852039166/").await, Err(OutboundError::NonPublicAddress { .. })));
//! # Ok(())
//! # }
//! ```
//!
//! `docs/outbound.md` explains each rule and the attack it answers.

use std::error::Error as _;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::error::ConfigError;

/// The whole-operation timeout when none is configured: DNS, connections, redirects and body.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The body cap when none is configured (1 MiB).
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;
/// The most redirects a [`GuardedFetcher`] may be configured to follow.
pub const MAX_REDIRECTS: u8 = 5;

/// The longest timeout that can be configured: a caller-supplied URL holds a task that long.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest body cap that can be configured (64 MiB).
const MAX_MAX_BYTES: usize = 64 << 20;

/// Cloud metadata services, refused by name so that a refusal says what was at stake: AWS, GCP
/// and Azure IMDS, AWS ECS task credentials, and Azure's WireServer (a public-looking address
/// that only a VM can reach).
const METADATA_V4: [Ipv4Addr; 3] =
    [Ipv4Addr::new(169, 254, 169, 254), Ipv4Addr::new(169, 254, 170, 2), Ipv4Addr::new(168, 63, 129, 16)];
/// AWS IMDS over IPv6 (inside `fc00::/7` too, but named for the same reason).
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

// ---------------------------------------------------------------------------------------------
// Classification: pure, the rule every address meets.

/// The special-purpose range a non-public address belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressRange {
    /// `0.0.0.0`, `::`: "any address", which connects to the local host.
    Unspecified,
    /// `0.0.0.0/8`: "this network" (RFC 791), reaches the local host on some systems.
    ThisNetwork,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` (RFC 1918).
    Private,
    /// `100.64.0.0/10`: carrier-grade NAT (RFC 6598), private to an operator's network.
    SharedAddressSpace,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// A cloud metadata service: `169.254.169.254`, `169.254.170.2`, `168.63.129.16`,
    /// `fd00:ec2::254`.
    CloudMetadata,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18.0.0/15`, `2001:2::/48`.
    Benchmarking,
    /// `192.0.0.0/24`, `2001::/23` (outside its named parts): IETF protocol assignments.
    ProtocolAssignments,
    /// `240.0.0.0/4` (reserved), `5f00::/16` (SRv6 segment identifiers).
    Reserved,
    /// Deprecated forms with no public use: `192.88.99.0/24` (6to4 relay anycast),
    /// `fec0::/10` (site-local), IPv4-compatible `::/96` whatever it embeds.
    Deprecated,
    /// `fc00::/7` (unique local, the IPv6 private range).
    UniqueLocal,
    /// `2001::/32`: Teredo, a tunnel whose endpoint cannot be checked.
    Teredo,
    /// IPv6 outside global unicast `2000::/3` (and not one of the named ranges).
    NotGlobalUnicast,
}

impl AddressRange {
    fn name(self) -> &'static str {
        match self {
            AddressRange::Unspecified => "unspecified",
            AddressRange::ThisNetwork => "this-network",
            AddressRange::Loopback => "loopback",
            AddressRange::Private => "private",
            AddressRange::SharedAddressSpace => "shared (CGNAT)",
            AddressRange::LinkLocal => "link-local",
            AddressRange::CloudMetadata => "cloud metadata",
            AddressRange::Multicast => "multicast",
            AddressRange::Broadcast => "broadcast",
            AddressRange::Documentation => "documentation",
            AddressRange::Benchmarking => "benchmarking",
            AddressRange::ProtocolAssignments => "IETF protocol assignment",
            AddressRange::Reserved => "reserved",
            AddressRange::Deprecated => "deprecated",
            AddressRange::UniqueLocal => "unique-local",
            AddressRange::Teredo => "Teredo",
            AddressRange::NotGlobalUnicast => "non-global-unicast",
        }
    }
}

/// An IPv6 form that carries an IPv4 address, through which a refused IPv4 is refused too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Embedding {
    /// `::ffff:a.b.c.d` (`::ffff:0:0/96`): a dual-stack socket connects to `a.b.c.d`.
    Ipv4Mapped,
    /// `::a.b.c.d` (`::/96`, deprecated): refused whatever it embeds.
    Ipv4Compatible,
    /// `64:ff9b::a.b.c.d` (`64:ff9b::/96`): NAT64 translates it to `a.b.c.d`.
    Nat64,
    /// `2002:aabb:ccdd::/48` (`2002::/16`): 6to4 tunnels it to `a.b.c.d`.
    SixToFour,
}

impl Embedding {
    fn name(self) -> &'static str {
        match self {
            Embedding::Ipv4Mapped => "IPv4-mapped IPv6",
            Embedding::Ipv4Compatible => "IPv4-compatible IPv6",
            Embedding::Nat64 => "NAT64",
            Embedding::SixToFour => "6to4",
        }
    }
}

/// Why an address is not public: its range, and the IPv6 form it came in if the range is that
/// of an embedded IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NonPublic {
    range: AddressRange,
    embedding: Option<Embedding>,
}

impl NonPublic {
    /// The special-purpose range (for an embedded address, the embedded IPv4's range).
    pub fn range(&self) -> AddressRange {
        self.range
    }

    /// The IPv6 form that embedded the refused IPv4 address, if any.
    pub fn embedding(&self) -> Option<Embedding> {
        self.embedding
    }
}

impl fmt::Display for NonPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.embedding {
            None => f.write_str(self.range.name()),
            Some(embedding) => write!(f, "{} inside {}", self.range.name(), embedding.name()),
        }
    }
}

impl std::error::Error for NonPublic {}

/// Whether `ip` is a public unicast address that a guarded fetch may connect to.
///
/// ```
/// use ztgate::outbound::is_public;
///
/// assert!(is_public("1.1.1.1".parse().unwrap()));
/// assert!(!is_public("10.0.0.1".parse().unwrap()));
/// assert!(!is_public("::ffff:127.0.0.1".parse().unwrap()));
/// ```
pub fn is_public(ip: IpAddr) -> bool {
    classify(ip).is_ok()
}

/// `Ok` for a public unicast address, else the range that makes it non-public.
///
/// An allowlist for IPv6 (only global unicast `2000::/3`, minus its special parts) and a
/// denylist of every special-purpose IPv4 block of the IANA registry that is not globally
/// reachable, plus the cloud metadata services. IPv6 forms that embed an IPv4 address are
/// judged by that address.
pub fn classify(ip: IpAddr) -> Result<(), NonPublic> {
    match ip {
        IpAddr::V4(v4) => match classify_v4(v4) {
            Some(range) => Err(NonPublic { range, embedding: None }),
            None => Ok(()),
        },
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressRange> {
    if METADATA_V4.contains(&ip) {
        return Some(AddressRange::CloudMetadata);
    }
    let range = match ip.octets() {
        [0, 0, 0, 0] => AddressRange::Unspecified,
        [255, 255, 255, 255] => AddressRange::Broadcast,
        [0, ..] => AddressRange::ThisNetwork,
        [10, ..] | [172, 16..=31, ..] | [192, 168, ..] => AddressRange::Private,
        [100, 64..=127, ..] => AddressRange::SharedAddressSpace,
        [127, ..] => AddressRange::Loopback,
        [169, 254, ..] => AddressRange::LinkLocal,
        [192, 0, 0, _] => AddressRange::ProtocolAssignments,
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => AddressRange::Documentation,
        [192, 88, 99, _] => AddressRange::Deprecated,
        [198, 18..=19, ..] => AddressRange::Benchmarking,
        [224..=239, ..] => AddressRange::Multicast,
        [240..=255, ..] => AddressRange::Reserved,
        _ => return None,
    };
    Some(range)
}

fn classify_v6(ip: Ipv6Addr) -> Result<(), NonPublic> {
    let plain = |range| Err(NonPublic { range, embedding: None });
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let embedded = |ip: Ipv4Addr, embedding| match classify_v4(ip) {
        Some(range) => Err(NonPublic { range, embedding: Some(embedding) }),
        None => Ok(()),
    };
    if METADATA_V6.contains(&ip) {
        return plain(AddressRange::CloudMetadata);
    }
    match ip.segments() {
        [0, 0, 0, 0, 0, 0, 0, 0] => plain(AddressRange::Unspecified),
        [0, 0, 0, 0, 0, 0, 0, 1] => plain(AddressRange::Loopback),
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => embedded(v4(hi, lo), Embedding::Ipv4Mapped),
        // Deprecated (RFC 4291) and routed nowhere: refused even around a public IPv4, but
        // named by the embedded range when that one is refused too.
        [0, 0, 0, 0, 0, 0, hi, lo] => Err(NonPublic {
            range: classify_v4(v4(hi, lo)).unwrap_or(AddressRange::Deprecated),
            embedding: Some(Embedding::Ipv4Compatible),
        }),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => embedded(v4(hi, lo), Embedding::Nat64),
        [0x2002, hi, lo, ..] => embedded(v4(hi, lo), Embedding::SixToFour),
        [0x2001, 0, ..] => plain(AddressRange::Teredo),
        [0x2001, 2, 0, ..] => plain(AddressRange::Benchmarking),
        [0x2001, 0..=0x01ff, ..] => plain(AddressRange::ProtocolAssignments),
        [0x2001, 0x0db8, ..] | [0x3fff, 0..=0x0fff, ..] => plain(AddressRange::Documentation),
        [0x5f00, ..] => plain(AddressRange::Reserved),
        [0x2000..=0x3fff, ..] => Ok(()),
        [0xfc00..=0xfdff, ..] => plain(AddressRange::UniqueLocal),
        [0xfe80..=0xfebf, ..] => plain(AddressRange::LinkLocal),
        [0xfec0..=0xfeff, ..] => plain(AddressRange::Deprecated),
        [0xff00..=0xffff, ..] => plain(AddressRange::Multicast),
        _ => plain(AddressRange::NotGlobalUnicast),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// Why a guarded fetch did not return a page. `Display` is for people and never includes a
/// response body; hosts and URLs in it are the parser's normalised form (no control
/// characters), but they come from the caller: log them as values (`?e`), not as a line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboundError {
    /// Not a URL (the parser's reason).
    InvalidUrl(String),
    /// A scheme other than `http` or `https` (e.g. `file`, `gopher`).
    Scheme(String),
    /// A user name or password in the URL.
    Credentials,
    /// A URL without a host.
    NoHost,
    /// The host is, or resolves to, an address that is not public.
    NonPublicAddress {
        /// The host as the URL names it.
        host: String,
        /// The refused address (of possibly several; one refused is enough).
        address: IpAddr,
        /// Its range.
        reason: NonPublic,
    },
    /// The host could not be resolved, or resolved to nothing.
    Dns {
        /// The host as the URL names it.
        host: String,
        /// The resolver's reason.
        message: String,
    },
    /// A redirect beyond the configured number (`max: 0`: redirects are not followed).
    TooManyRedirects {
        /// The configured number of redirects.
        max: u8,
    },
    /// A redirect without a usable `Location`.
    BadRedirect,
    /// The body is larger than the cap.
    TooLarge {
        /// The cap in bytes.
        max_bytes: usize,
    },
    /// The whole operation took longer than the timeout.
    Timeout,
    /// The final response was not a `2xx`.
    Status(u16),
    /// The connection or the HTTP exchange failed.
    Network(String),
}

impl OutboundError {
    /// Whether the URL itself was refused by a rule (scheme, credentials, host, address,
    /// redirect limit), as opposed to a fetch that failed: a caller answers 400 for these.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            OutboundError::InvalidUrl(_)
                | OutboundError::Scheme(_)
                | OutboundError::Credentials
                | OutboundError::NoHost
                | OutboundError::NonPublicAddress { .. }
                | OutboundError::TooManyRedirects { .. }
                | OutboundError::BadRedirect
        )
    }
}

impl fmt::Display for OutboundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboundError::InvalidUrl(reason) => write!(f, "not a URL: {reason}"),
            OutboundError::Scheme(scheme) => write!(f, "scheme {scheme:?} refused: http and https only"),
            OutboundError::Credentials => f.write_str("credentials in the URL refused"),
            OutboundError::NoHost => f.write_str("the URL has no host"),
            OutboundError::NonPublicAddress { host, address, reason } => {
                write!(f, "{host:?} is {address}, a {reason} address: refused")
            }
            OutboundError::Dns { host, message } => write!(f, "cannot resolve {host:?}: {message}"),
            OutboundError::TooManyRedirects { max: 0 } => {
                f.write_str("a redirect: redirects are not followed")
            }
            OutboundError::TooManyRedirects { max } => write!(f, "more than {max} redirects"),
            OutboundError::BadRedirect => f.write_str("a redirect without a usable Location"),
            OutboundError::TooLarge { max_bytes } => write!(f, "the body is larger than {max_bytes} bytes"),
            OutboundError::Timeout => f.write_str("timed out"),
            OutboundError::Status(status) => write!(f, "the server answered {status}"),
            OutboundError::Network(message) => write!(f, "network error: {message}"),
        }
    }
}

impl std::error::Error for OutboundError {}

// ---------------------------------------------------------------------------------------------
// The fetcher.

/// Fetches caller-supplied URLs under the rules of this [module](self): http(s) only, no
/// credentials, public addresses only (checked on the address connected to), redirects only if
/// configured and each checked again, a size cap and a whole-operation timeout.
///
/// Cheap to clone (one `Arc`); build it once and share it, so connections and the TLS
/// configuration are reused.
///
/// ```
/// use std::time::Duration;
/// use ztgate::outbound::{GuardedFetcher, OutboundError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let fetcher = GuardedFetcher::builder()
///     .max_redirects(3)
///     .max_bytes(256 * 1024)
///     .timeout(Duration::from_secs(3))
///     .build()?;
/// // Checked without any network traffic: syntax, credentials, literal addresses.
/// assert_eq!(fetcher.check_url("https://blog.example/post#c1")?, "https://blog.example/post");
/// assert_eq!(fetcher.check_url("https://user:pw@blog.example/"), Err(OutboundError::Credentials)); // pragma: allowlist secret
/// assert!(matches!(fetcher.check_url("gopher://blog.example/"), Err(OutboundError::Scheme(_))));
/// // `localhost` is refused by what it resolves to.
/// let refused = fetcher.get("http://localhost/admin").await.unwrap_err();
/// assert!(matches!(refused, OutboundError::NonPublicAddress { .. }), "{refused}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct GuardedFetcher {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    rules: Rules,
    timeout: Duration,
    max_bytes: usize,
    max_redirects: u8,
}

/// The address rules, shared by the URL check and the client's resolver.
#[derive(Clone, Copy, Debug)]
struct Rules {
    allow_loopback: bool,
}

impl fmt::Debug for GuardedFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedFetcher")
            .field("timeout", &self.inner.timeout)
            .field("max_bytes", &self.inner.max_bytes)
            .field("max_redirects", &self.inner.max_redirects)
            .field("allow_loopback_for_tests", &self.inner.rules.allow_loopback)
            .finish()
    }
}

impl GuardedFetcher {
    /// A fetcher with the defaults: no redirects, [`DEFAULT_MAX_BYTES`], [`DEFAULT_TIMEOUT`].
    pub fn new() -> Result<Self, ConfigError> {
        Self::builder().build()
    }

    /// A builder for the limits.
    pub fn builder() -> GuardedFetcherBuilder {
        GuardedFetcherBuilder::default()
    }

    /// Checks what can be checked without the network: a URL, http(s), no credentials, a host,
    /// and a host written as an IP address must be public. Returns the normalised URL (no
    /// fragment). Useful to answer 400 at once; [`get`](Self::get) checks all of it again and
    /// resolves, so a URL that passed here can still be refused there.
    pub fn check_url(&self, url: &str) -> Result<String, OutboundError> {
        self.inner.rules.check_url(url).map(String::from)
    }

    /// GETs `url` under the rules: the `2xx` page at the end of at most the configured number
    /// of redirects, or why not.
    pub async fn get(&self, url: &str) -> Result<Fetched, OutboundError> {
        let outcome = match tokio::time::timeout(self.inner.timeout, self.follow(url)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(OutboundError::Timeout),
        };
        if let Err(e) = &outcome {
            let outcome = if e.is_refusal() { "refused" } else { "failed" };
            tracing::info!(layer = "outbound", outcome, reason = ?e.to_string());
        }
        outcome
    }

    async fn follow(&self, url: &str) -> Result<Fetched, OutboundError> {
        let inner = &*self.inner;
        let mut url = inner.rules.check_url(url)?;
        let mut redirects = 0;
        loop {
            let mut response = inner.client.get(url.clone()).send().await.map_err(from_reqwest)?;
            let status = response.status();
            if status.is_redirection() && is_followable(status) {
                if redirects == inner.max_redirects {
                    return Err(OutboundError::TooManyRedirects { max: inner.max_redirects });
                }
                let next = response
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|location| location.to_str().ok())
                    .and_then(|location| url.join(location).ok())
                    .ok_or(OutboundError::BadRedirect)?;
                url = inner.rules.check(next)?;
                redirects += 1;
                continue;
            }
            if !status.is_success() {
                return Err(OutboundError::Status(status.as_u16()));
            }
            let too_large = OutboundError::TooLarge { max_bytes: inner.max_bytes };
            if response.content_length().is_some_and(|length| length > inner.max_bytes as u64) {
                return Err(too_large);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(from_reqwest)? {
                if chunk.len() > inner.max_bytes - body.len() {
                    return Err(too_large);
                }
                body.extend_from_slice(&chunk);
            }
            let headers = std::mem::take(response.headers_mut());
            return Ok(Fetched { url: url.into(), status, headers, body, redirects });
        }
    }
}

/// The redirects that name a new location to GET (300 and 304 do not; 305 is refused by
/// every client).
fn is_followable(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// A reqwest failure as an [`OutboundError`]: the resolver's refusal if that is what it
/// carries, else the chain of reasons (never a body: reqwest does not put one in an error).
fn from_reqwest(e: reqwest::Error) -> OutboundError {
    let mut source = e.source();
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<ResolverRefusal>() {
            return refused.0.clone();
        }
        source = cause.source();
    }
    if e.is_timeout() {
        return OutboundError::Timeout;
    }
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    OutboundError::Network(message)
}

impl Rules {
    fn check_url(&self, url: &str) -> Result<reqwest::Url, OutboundError> {
        let url = reqwest::Url::parse(url).map_err(|e| OutboundError::InvalidUrl(e.to_string()))?;
        self.check(url)
    }

    fn check(&self, mut url: reqwest::Url) -> Result<reqwest::Url, OutboundError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OutboundError::Scheme(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(OutboundError::Credentials);
        }
        let host = match url.host_str() {
            None | Some("") => return Err(OutboundError::NoHost),
            Some(host) => host,
        };
        // The parser has normalised every IPv4 spelling to dotted decimal and put IPv6 in
        // brackets; a domain never parses as an address (WHATWG: a host ending in a number is
        // IPv4 or an error).
        let literal = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => Some(IpAddr::V6(
                v6.parse().map_err(|_| OutboundError::InvalidUrl("invalid IPv6 address".into()))?,
            )),
            None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        };
        if let Some(ip) = literal {
            self.check_addresses(host, [ip])?;
        }
        url.set_fragment(None);
        Ok(url)
    }

    /// Every address must pass: one refused address refuses the host.
    fn check_addresses(
        &self,
        host: &str,
        addresses: impl IntoIterator<Item = IpAddr>,
    ) -> Result<(), OutboundError> {
        let mut any = false;
        for address in addresses {
            any = true;
            match classify(address) {
                Ok(()) => {}
                Err(reason) if self.allow_loopback && reason == LOOPBACK => {}
                Err(reason) => {
                    return Err(OutboundError::NonPublicAddress { host: host.to_owned(), address, reason });
                }
            }
        }
        match any {
            true => Ok(()),
            false => Err(OutboundError::Dns { host: host.to_owned(), message: "no address".into() }),
        }
    }
}

/// What the test-only switch admits: plain loopback (`127.0.0.0/8`, `::1`), no embedded form.
const LOOPBACK: NonPublic = NonPublic { range: AddressRange::Loopback, embedding: None };

/// The client's only resolver: the system's (through tokio), then the rules on every answer.
/// (tokio's `net` and `time`, used here and in [`GuardedFetcher::get`], come with reqwest,
/// which the `native` feature always builds.)
struct CheckingResolver(Rules);

/// The resolver's refusal, carried through reqwest's error chain back to [`from_reqwest`].
#[derive(Debug)]
struct ResolverRefusal(OutboundError);

impl fmt::Display for ResolverRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ResolverRefusal {}

impl reqwest::dns::Resolve for CheckingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let rules = self.0;
        Box::pin(async move {
            let host = name.as_str();
            let refuse = |e: OutboundError| -> Box<dyn std::error::Error + Send + Sync> {
                Box::new(ResolverRefusal(e))
            };
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
                .await
                .map_err(|e| refuse(OutboundError::Dns { host: host.to_owned(), message: e.to_string() }))?
                .collect();
            rules.check_addresses(host, addresses.iter().map(SocketAddr::ip)).map_err(refuse)?;
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Builds a [`GuardedFetcher`]. The defaults are the safe choice; every knob is bounded.
#[derive(Clone, Debug)]
pub struct GuardedFetcherBuilder {
    timeout: Duration,
    max_bytes: usize,
    max_redirects: u8,
    allow_loopback: bool,
    user_agent: Option<String>,
}

impl Default for GuardedFetcherBuilder {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            max_bytes: DEFAULT_MAX_BYTES,
            max_redirects: 0,
            allow_loopback: false,
            user_agent: None,
        }
    }
}

impl GuardedFetcherBuilder {
    /// Follow up to `max` redirects (default 0, at most [`MAX_REDIRECTS`]), each checked again.
    pub fn max_redirects(mut self, max: u8) -> Self {
        self.max_redirects = max;
        self
    }

    /// The body cap in bytes (default [`DEFAULT_MAX_BYTES`], 1 to 64 MiB).
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The timeout of the whole operation, DNS and redirects included (default
    /// [`DEFAULT_TIMEOUT`], at most 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The `User-Agent` sent (default: none).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// **For tests only**: admit loopback addresses (`127.0.0.0/8`, `::1`, so `localhost`),
    /// which lets a test fetch from a server on `127.0.0.1:0`. Every other rule still holds,
    /// and an IPv4-mapped or otherwise embedded loopback address stays refused. Never set
    /// this from configuration a deployment reads: on a server it exposes every service
    /// listening on localhost to whoever supplies the URL.
    pub fn dangerously_allow_loopback_for_tests(mut self) -> Self {
        self.allow_loopback = true;
        self
    }

    /// The fetcher, or which setting is out of bounds.
    pub fn build(self) -> Result<GuardedFetcher, ConfigError> {
        if self.max_redirects > MAX_REDIRECTS {
            return Err(ConfigError::new("outbound.max_redirects", format!("at most {MAX_REDIRECTS}")));
        }
        if self.max_bytes == 0 || self.max_bytes > MAX_MAX_BYTES {
            return Err(ConfigError::new("outbound.max_bytes", "must be 1 byte to 64 MiB"));
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(ConfigError::new("outbound.timeout", "must be above 0 and at most 60 s"));
        }
        let rules = Rules { allow_loopback: self.allow_loopback };
        if rules.allow_loopback {
            tracing::warn!(layer = "outbound", outcome = "loopback_allowed_for_tests");
        }
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(CheckingResolver(rules))
            .connect_timeout(self.timeout)
            .timeout(self.timeout);
        if let Some(user_agent) = &self.user_agent {
            let value = http::HeaderValue::from_str(user_agent)
                .map_err(|_| ConfigError::new("outbound.user_agent", "not a header value"))?;
            client = client.user_agent(value);
        }
        let client = client
            .build()
            .map_err(|e| ConfigError::new("outbound", format!("cannot build the HTTP client: {e}")))?;
        let inner = Inner {
            client,
            rules,
            timeout: self.timeout,
            max_bytes: self.max_bytes,
            max_redirects: self.max_redirects,
        };
        Ok(GuardedFetcher { inner: Arc::new(inner) })
    }
}

/// A page fetched by a [`GuardedFetcher`]: the final URL, status, headers and body.
pub struct Fetched {
    url: String,
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
    redirects: u8,
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetched")
            .field("url", &self.url)
            .field("status", &self.status)
            .field("body_bytes", &self.body.len())
            .field("redirects", &self.redirects)
            .finish_non_exhaustive()
    }
}

impl Fetched {
    /// The URL the page came from, after redirects (normalised, no fragment).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The final status, a `2xx`.
    pub fn status(&self) -> http::StatusCode {
        self.status
    }

    /// The final response's headers.
    pub fn headers(&self) -> &http::HeaderMap {
        &self.headers
    }

    /// The body, at most the configured cap.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, owned.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// How many redirects were followed to reach it.
    pub fn redirects(&self) -> u8 {
        self.redirects
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::{AddressRange, Embedding, NonPublic, Rules, classify, is_public};

    fn range(ip: &str) -> Result<(), NonPublic> {
        classify(ip.parse::<IpAddr>().unwrap())
    }

    fn refused(ip: &str) -> (AddressRange, Option<Embedding>) {
        match range(ip) {
            Err(np) => (np.range(), np.embedding()),
            Ok(()) => panic!("{ip} classified public"),
        }
    }

    #[test]
    fn every_special_ipv4_block_is_refused_at_both_ends() {
        use AddressRange::*;
        let blocks: &[(&str, &str, AddressRange)] = &[
            ("0.0.0.1", "0.255.255.255", ThisNetwork),
            ("10.0.0.0", "10.255.255.255", Private),
            ("100.64.0.0", "100.127.255.255", SharedAddressSpace),
            ("127.0.0.0", "127.255.255.255", Loopback),
            ("169.254.0.0", "169.254.255.255", LinkLocal),
            ("172.16.0.0", "172.31.255.255", Private),
            ("192.0.0.0", "192.0.0.255", ProtocolAssignments),
            ("192.0.2.0", "192.0.2.255", Documentation),
            ("192.88.99.0", "192.88.99.255", Deprecated),
            ("192.168.0.0", "192.168.255.255", Private),
            ("198.18.0.0", "198.19.255.255", Benchmarking),
            ("198.51.100.0", "198.51.100.255", Documentation),
            ("203.0.113.0", "203.0.113.255", Documentation),
            ("224.0.0.0", "239.255.255.255", Multicast),
            ("240.0.0.0", "255.255.255.254", Reserved),
        ];
        for &(first, last, want) in blocks {
            assert_eq!(refused(first), (want, None), "{first}");
            assert_eq!(refused(last), (want, None), "{last}");
        }
        assert_eq!(refused("0.0.0.0"), (Unspecified, None));
        assert_eq!(refused("255.255.255.255"), (Broadcast, None));
    }

    #[test]
    fn the_neighbours_of_each_ipv4_block_are_public() {
        for ip in [
            "1.0.0.0",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "191.255.255.255",
            "192.0.1.0",
            "192.0.3.0",
            "192.88.98.255",
            "192.88.100.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "223.255.255.255",
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
        ] {
            assert_eq!(range(ip), Ok(()), "{ip}");
        }
    }

    #[test]
    fn cloud_metadata_addresses_are_named() {
        for ip in ["169.254.169.254", "169.254.170.2", "168.63.129.16", "fd00:ec2::254"] {
            assert_eq!(refused(ip), (AddressRange::CloudMetadata, None), "{ip}");
        }
        // Its neighbours are still refused, by their ranges (Azure's neighbour is public).
        assert_eq!(refused("169.254.169.253"), (AddressRange::LinkLocal, None));
        assert_eq!(refused("fd00:ec2::253"), (AddressRange::UniqueLocal, None));
        assert_eq!(range("168.63.129.17"), Ok(()));
    }

    #[test]
    fn special_ipv6_ranges_are_refused() {
        use AddressRange::*;
        let cases: &[(&str, AddressRange)] = &[
            ("::", Unspecified),
            ("::1", Loopback),
            ("fe80::", LinkLocal),
            ("febf:ffff::1", LinkLocal),
            ("fec0::1", Deprecated),
            ("feff::1", Deprecated),
            ("fc00::", UniqueLocal),
            ("fdff:ffff::1", UniqueLocal),
            ("ff00::", Multicast),
            ("ff02::1", Multicast),
            ("2001::", Teredo),
            ("2001:0:ffff:ffff::1", Teredo),
            ("2001:2::1", Benchmarking),
            ("2001:10::1", ProtocolAssignments),
            ("2001:1ff:ffff::1", ProtocolAssignments),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("3fff:fff::1", Documentation),
            ("5f00::1", Reserved),
            ("100::1", NotGlobalUnicast),
            ("64:ff9b:1::1", NotGlobalUnicast),
            ("1fff:ffff::1", NotGlobalUnicast),
            ("4000::1", NotGlobalUnicast),
            ("::ffff:0:7f00:1", NotGlobalUnicast),
        ];
        for &(ip, want) in cases {
            assert_eq!(refused(ip), (want, None), "{ip}");
        }
        for ip in ["2000::1", "2001:200::1", "2001:4860:4860::8888", "2606:4700::1111", "3fff:1000::1"] {
            assert_eq!(range(ip), Ok(()), "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_of_a_refused_ipv4_are_refused_with_the_ipv4_reason() {
        use AddressRange::*;
        use Embedding::*;
        let cases: &[(&str, AddressRange, Embedding)] = &[
            ("::ffff:127.0.0.1", Loopback, Ipv4Mapped),
            ("::ffff:10.1.2.3", Private, Ipv4Mapped),
            ("::ffff:169.254.169.254", CloudMetadata, Ipv4Mapped),
            ("::ffff:0.0.0.0", Unspecified, Ipv4Mapped),
            ("::127.0.0.1", Loopback, Ipv4Compatible),
            ("::192.168.1.1", Private, Ipv4Compatible),
            ("64:ff9b::127.0.0.1", Loopback, Nat64),
            ("64:ff9b::a9fe:a9fe", CloudMetadata, Nat64),
            ("64:ff9b::100.64.0.1", SharedAddressSpace, Nat64),
            ("2002:7f00:1::", Loopback, SixToFour),
            ("2002:a00:1:1::1", Private, SixToFour),
            ("2002:c0a8:101::", Private, SixToFour),
        ];
        for &(ip, range, embedding) in cases {
            assert_eq!(refused(ip), (range, Some(embedding)), "{ip}");
        }
        // IPv4-compatible is deprecated: refused even around a public address.
        assert_eq!(refused("::8.8.8.8"), (Deprecated, Some(Ipv4Compatible)));
    }

    #[test]
    fn ipv6_forms_of_a_public_ipv4_are_public() {
        for ip in ["::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn one_refused_address_among_public_ones_refuses_the_host() {
        let rules = Rules { allow_loopback: false };
        let public = IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34));
        let private = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
        assert!(rules.check_addresses("h.example", [public]).is_ok());
        for list in [vec![public, private], vec![private, public]] {
            match rules.check_addresses("h.example", list) {
                Err(super::OutboundError::NonPublicAddress { address, .. }) => assert_eq!(address, private),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(rules.check_addresses("h.example", []), Err(super::OutboundError::Dns { .. })));
    }

    #[test]
    fn the_test_switch_admits_plain_loopback_only() {
        let rules = Rules { allow_loopback: true };
        assert!(rules.check_addresses("t", [IpAddr::V4(Ipv4Addr::LOCALHOST)]).is_ok());
        assert!(rules.check_addresses("t", [IpAddr::V6(Ipv6Addr::LOCALHOST)]).is_ok());
        for ip in ["::ffff:127.0.0.1", "10.0.0.1", "0.0.0.0", "::", "169.254.169.254"] {
            assert!(rules.check_addresses("t", [ip.parse().unwrap()]).is_err(), "{ip}");
        }
        assert!(
            Rules { allow_loopback: false }.check_addresses("t", [IpAddr::V4(Ipv4Addr::LOCALHOST)]).is_err()
        );
    }
}
