//! Shared fixtures for the fuzz targets: keys made once per process, a verifier with a fixed
//! key set and a fixed clock, and the input conventions the targets and their seeds share.
//!
//! Input conventions (see `docs/hardening.md`):
//! - byte 0 picks a mode; raw modes take the rest as a token (lossy UTF-8);
//! - "sign" modes take `header JSON 0x00 payload JSON [0x00 mutation bytes]`: the target signs
//!   header and payload with a key of its own, so the fuzzer reaches valid signatures by
//!   choosing claims only. In both JSON texts `$+N`, `$-N` and `$0` stand for "now plus/minus
//!   N seconds" and "now", so seeds stay valid whatever the clock says.

pub mod seeds;

use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ztgate::AccessConfig;
use ztgate::clock::FixedClock;
use ztgate::dev::{DevKey, jwks_json};
use ztgate::identity::{AccessVerifier, JwksCache, JwksConfig, StaticFetcher};

pub const TEAM: &str = "https://acme-test.cloudflareaccess.com";
pub const AUD: &str = "aud-4b8f1c";
/// The fixed time of the verifier target.
pub const NOW: u64 = 1_800_000_000;
/// The verifier's default leeway.
pub const LEEWAY: u64 = 60;

pub struct Keys {
    /// Published as `k1` and `k2`.
    pub k1: DevKey,
    pub k2: DevKey,
    /// Calls itself `k1` but is not published: its signatures must never verify.
    pub impostor: DevKey,
    pub jwks: String,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let k1 = DevKey::generate("k1").expect("RSA key generation");
        let k2 = DevKey::generate("k2").expect("RSA key generation");
        let impostor = DevKey::generate("k1").expect("RSA key generation");
        let jwks = jwks_json(&[&k1, &k2]);
        Keys { k1, k2, impostor, jwks }
    })
}

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("tokio runtime"))
}

/// The Access verifier for TEAM/AUD with keys k1 and k2, at NOW.
pub fn verifier() -> &'static AccessVerifier {
    static VERIFIER: OnceLock<AccessVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| verifier_for(&keys().jwks))
}

/// The Access verifier for TEAM/AUD whose only key source is `jwks`, at NOW.
pub fn verifier_for(jwks: &str) -> AccessVerifier {
    let clock = Arc::new(FixedClock::at(NOW));
    let fetcher = Arc::new(StaticFetcher::new(jwks.as_bytes().to_vec()));
    let cache = JwksCache::new(fetcher, clock.clone(), JwksConfig::default());
    AccessVerifier::new(AccessConfig::new(TEAM, [AUD]).expect("config"), cache, clock)
}

/// The tokens of one input in the `access_jwt` convention.
pub struct AccessTokens {
    /// The raw token (even mode byte), or the header and payload signed by `k1` (modes 1, 3,
    /// 5 mod 8), `k2` (7) or the unpublished impostor (the other odd modes).
    pub token: String,
    /// Whether `token` was signed here (sign mode).
    pub signed: bool,
    /// The signed token changed by the mutation bytes (never equal to it); `None` in raw mode
    /// or when the change is a no-op.
    pub mutated: Option<String>,
}

/// Reads one input in the `access_jwt` convention (shared by the `access_jwt` and
/// `verifier_backends` targets, so their corpora mean the same tokens).
pub fn access_tokens(data: &[u8]) -> Option<AccessTokens> {
    let (&mode, rest) = data.split_first()?;
    if mode % 2 == 0 {
        return Some(AccessTokens {
            token: String::from_utf8_lossy(rest).into_owned(),
            signed: false,
            mutated: None,
        });
    }
    let input = sign_input(rest, NOW);
    let keys = keys();
    let token = match mode % 8 {
        1 | 3 | 5 => keys.k1.sign_raw(&input.header, &input.payload),
        7 => keys.k2.sign_raw(&input.header, &input.payload),
        _ => keys.impostor.sign_raw(&input.header, &input.payload),
    };
    let mutated = mutate(&token, input.mutation, &modulus(&keys.k1));
    Some(AccessTokens { token, signed: true, mutated })
}

/// Replaces `$+N`, `$-N` and `$0` with `now + N`, `now - N` (saturating at 0) and `now`.
pub fn expand_times(text: &[u8], now: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'$' {
            let sign = text.get(i + 1).copied();
            let digits_from = if matches!(sign, Some(b'+' | b'-')) { i + 2 } else { i + 1 };
            let digits_to =
                digits_from + text[digits_from..].iter().take(19).take_while(|b| b.is_ascii_digit()).count();
            if digits_to > digits_from {
                let n: u64 = std::str::from_utf8(&text[digits_from..digits_to]).unwrap().parse().unwrap_or(0);
                let t = match sign {
                    Some(b'-') => now.saturating_sub(n),
                    _ => now.saturating_add(n),
                };
                out.extend_from_slice(t.to_string().as_bytes());
                i = digits_to;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

/// A "sign" mode input: header JSON, payload JSON (times expanded) and mutation bytes.
pub struct SignInput<'a> {
    pub header: Vec<u8>,
    pub payload: Vec<u8>,
    pub mutation: &'a [u8],
}

pub fn sign_input(data: &[u8], now: u64) -> SignInput<'_> {
    let mut parts = data.splitn(3, |b| *b == 0);
    let header = parts.next().unwrap_or_default();
    let payload = parts.next().unwrap_or_default();
    let mutation = parts.next().unwrap_or_default();
    SignInput { header: expand_times(header, now), payload: expand_times(payload, now), mutation }
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `a + b` for big-endian magnitudes, as a big-endian vector one byte longer than the longer.
fn add_be(a: &[u8], b: &[u8]) -> Vec<u8> {
    let len = a.len().max(b.len()) + 1;
    let mut out = vec![0u8; len];
    let mut carry = 0u16;
    for i in 0..len {
        let x = if i < a.len() { a[a.len() - 1 - i] } else { 0 };
        let y = if i < b.len() { b[b.len() - 1 - i] } else { 0 };
        let s = u16::from(x) + u16::from(y) + carry;
        out[len - 1 - i] = s as u8;
        carry = s >> 8;
    }
    out
}

/// Changes a signed token so that it must no longer verify; `None` if the change is a no-op.
///
/// `op` picks the change: a bit flip in the signature, another key's signature over the same
/// input, the signature plus the modulus (the same value mod n: a verifier that does not check
/// `s < n` accepts it), a truncated or extended signature, a changed header or payload byte.
pub fn mutate(token: &str, op: &[u8], n: &[u8]) -> Option<String> {
    let (signing_input, signature) = token.rsplit_once('.')?;
    let sig = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let pick = |i: usize| op.get(i).copied().unwrap_or(0) as usize;
    let at = (pick(1) << 8 | pick(2)) % sig.len().max(1);
    let mutated = match pick(0) % 9 {
        0 => {
            let mut s = sig.clone();
            s[at] ^= 1 << (pick(3) % 8);
            format!("{signing_input}.{}", b64(&s))
        }
        1 => {
            let other = if pick(3) % 2 == 0 { &keys().k2 } else { &keys().impostor };
            let (h, p) = signing_input.split_once('.')?;
            let resigned = other.sign_raw(&URL_SAFE_NO_PAD.decode(h).ok()?, &URL_SAFE_NO_PAD.decode(p).ok()?);
            format!("{signing_input}.{}", resigned.rsplit_once('.')?.1)
        }
        2 => {
            // s + n, kept at the modulus length when it fits (it does when s < 2^2048 - n).
            let sum = add_be(&sig, n);
            let sum = if sum[0] == 0 { &sum[1..] } else { &sum[..] };
            format!("{signing_input}.{}", b64(sum))
        }
        3 => format!("{signing_input}.{}", b64(&sig[..at])),
        4 => {
            let mut s = sig.clone();
            s.insert(if pick(3) % 2 == 0 { 0 } else { s.len() }, 0);
            format!("{signing_input}.{}", b64(&s))
        }
        5 => format!("{signing_input}.{}", b64(&vec![0u8; sig.len()])),
        6 => {
            let mut bytes = signing_input.as_bytes().to_vec();
            let i = (pick(1) << 8 | pick(2)) % bytes.len().max(1);
            bytes[i] = b"AQgw-_Z9."[pick(3) % 9];
            format!("{}.{signature}", String::from_utf8_lossy(&bytes))
        }
        7 => format!("{signing_input}.{signature}{}", ["A", "=", ".", " ", "AA"][pick(3) % 5]),
        _ => {
            // Any one character of the token, the signature segment included.
            let mut bytes = token.as_bytes().to_vec();
            let i = (pick(1) << 8 | pick(2)) % bytes.len().max(1);
            bytes[i] = pick(3) as u8;
            String::from_utf8_lossy(&bytes).into_owned()
        }
    };
    (mutated != token).then_some(mutated)
}

/// The modulus of a dev key (big-endian).
pub fn modulus(key: &DevKey) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(key.public_jwk()["n"].as_str().expect("n")).expect("n is base64url")
}

/// The HMAC token ring of the `hmac_token` target: `(kid, secret)`, the signing key first.
/// Test-only secrets, known to the target so it can recompute every MAC itself.
pub const HMAC_KEYS: [(&str, &str); 2] = [
    ("k2", "fuzz-only-hmac-key-two-0123456789abcdef"), // pragma: allowlist secret
    ("k1", "fuzz-only-hmac-key-one-0123456789abcdef"), // pragma: allowlist secret
];

/// The ring of [`HMAC_KEYS`].
pub fn hmac_ring() -> &'static ztgate::identity::hmac_token::KeyRing {
    static RING: OnceLock<ztgate::identity::hmac_token::KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        let spec = HMAC_KEYS.iter().map(|(kid, secret)| format!("{kid}:{secret}")).collect::<Vec<_>>();
        ztgate::identity::hmac_token::KeyRing::parse(&spec.join(",")).expect("fuzz HMAC ring")
    })
}

/// Webhook secrets of the `webhook_headers` target (test-only): the Svix key bytes (its secret
/// is `whsec_` + standard base64 of them), the GitHub secret and the Stripe secret.
pub const SVIX_KEY: [u8; 24] = *b"fuzz-only-svix-key-24byt"; // pragma: allowlist secret
pub const GITHUB_SECRET: &str = "fuzz-only-github-webhook-secret"; // pragma: allowlist secret
pub const STRIPE_SECRET: &str = "whsec_fuzzOnlyStripeSigningSecret0123"; // pragma: allowlist secret
