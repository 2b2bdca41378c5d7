//! Webhook signatures (`identity::webhook`): `WebhookVerifier::verify_without_replay_guard` for
//! Svix (with `svix-*` and Standard Webhooks `webhook-*` names), GitHub and Stripe.
//!
//! Byte 0: bits 0-1 the scheme (Svix, Svix with `webhook-*` names, GitHub, Stripe), bit 2
//! sign mode, bits 3-4 the verifier (tolerance 300 s, 1 s or 3600 s, or 300 s with a 16-byte
//! body cap). Raw mode: `(name byte, length byte, value)` headers up to a 0xff name byte, then
//! the body. Sign mode: `timestamp offset (i16 BE, seconds from now), flags, id (length
//! byte), body (u16 BE length), mutation bytes`; the target signs the delivery itself with
//! `hmac`/`sha2` exactly as each provider documents (Svix: base64 of
//! `HMAC(base64-decoded key, id.timestamp.body)` as `v1,<sig>`; GitHub: `sha256=<hex of
//! HMAC(secret, body)>`; Stripe: `t=<ts>,v1=<hex of HMAC(whole whsec_ secret, ts.body)>`),
//! with flags adding a wrong signature and an entry of an ignored version.
//!
//! Invariants: no panic; any accepted delivery, raw or signed, carries, exactly once, the
//! headers of its scheme with a signature entry equal to the one computed here, a well-formed
//! id and a timestamp inside the tolerance window (both edges included), and the verified
//! message reports that id, timestamp and the documented replay key; a correctly signed
//! delivery is accepted iff its timestamp is in the window (else refused as too old or in the
//! future) and its body within the cap; after signing, any change to the body, timestamp, id
//! or one byte of the signature is refused.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use ztgate::identity::webhook::{VerifiedWebhook, WebhookError, WebhookVerifier};
use ztgate_fuzz::{GITHUB_SECRET, NOW, STRIPE_SECRET, SVIX_KEY};

const NAMES: [&str; 10] = [
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-hub-signature-256",
    "stripe-signature",
    "content-type",
    "x-github-delivery",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Svix,
    StandardWebhooks,
    GitHub,
    Stripe,
}

/// (tolerance in seconds, body cap) of the four verifier choices.
const CONFIGS: [(u64, usize); 4] = [(300, 1 << 20), (1, 1 << 20), (3600, 1 << 20), (300, 16)];

fn verifier(scheme: Scheme, config: usize) -> &'static WebhookVerifier {
    static VERIFIERS: OnceLock<Vec<WebhookVerifier>> = OnceLock::new();
    let all = VERIFIERS.get_or_init(|| {
        let mut out = Vec::new();
        for (tolerance, cap) in CONFIGS {
            let make = [
                WebhookVerifier::svix(format!("whsec_{}", STANDARD.encode(SVIX_KEY))),
                WebhookVerifier::github(GITHUB_SECRET),
                WebhookVerifier::stripe(STRIPE_SECRET),
            ];
            for v in make {
                let v =
                    v.expect("verifier").with_tolerance(Duration::from_secs(tolerance)).expect("tolerance");
                out.push(v.with_max_body_bytes(cap));
            }
        }
        out
    });
    let index = match scheme {
        Scheme::Svix | Scheme::StandardWebhooks => 0,
        Scheme::GitHub => 1,
        Scheme::Stripe => 2,
    };
    &all[config * 3 + index]
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_timestamp(t: &str) -> bool {
    (1..=12).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()) && (t == "0" || !t.starts_with('0'))
}

fn in_window(ts: u64, now: u64, tolerance: u64) -> bool {
    ts.saturating_add(tolerance) >= now && ts <= now.saturating_add(tolerance)
}

/// The only value of header `name`, as text.
fn only<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    all.next().is_none().then_some(())?;
    first.to_str().ok()
}

/// Panics unless an accepted delivery is what the scheme's documentation calls correctly
/// signed, and the verified message says what was signed.
fn check_accepted(
    scheme: Scheme,
    config: usize,
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
    v: &VerifiedWebhook,
) {
    let (tolerance, cap) = CONFIGS[config];
    assert!(body.len() <= cap, "a body over the cap was accepted");
    match scheme {
        Scheme::Svix | Scheme::StandardWebhooks => {
            let svix_names = ["svix-id", "svix-timestamp", "svix-signature"];
            let prefix = if svix_names.iter().any(|n| headers.contains_key(*n)) { "svix" } else { "webhook" };
            let id = only(headers, &format!("{prefix}-id")).expect("one id header");
            let ts = only(headers, &format!("{prefix}-timestamp")).expect("one timestamp header");
            let sigs = only(headers, &format!("{prefix}-signature")).expect("one signature header");
            assert!(
                !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| b.is_ascii_graphic() && b != b'.')
            );
            assert!(is_timestamp(ts), "timestamp {ts:?}");
            let expected = mac(&SVIX_KEY, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
            let entry = format!("v1,{}", STANDARD.encode(expected));
            assert!(sigs.split(' ').any(|e| e == entry), "accepted without a correct v1 entry: {sigs:?}");
            assert!(sigs.split(' ').filter(|e| e.starts_with("v1,")).count() <= 16);
            let ts: u64 = ts.parse().expect("digits");
            assert!(in_window(ts, now, tolerance), "timestamp {ts} outside the window at {now}");
            assert_eq!((v.id(), v.timestamp()), (Some(id), Some(ts)));
            assert_eq!(v.replay_key(), format!("svix:{id}"));
            assert_eq!(v.replay_until(), ts + tolerance);
        }
        Scheme::GitHub => {
            let value = only(headers, "x-hub-signature-256").expect("one signature header");
            let expected = hex(&mac(GITHUB_SECRET.as_bytes(), &[body]));
            assert_eq!(value, format!("sha256={expected}"));
            assert_eq!((v.id(), v.timestamp()), (None, None));
            assert_eq!(v.replay_key(), format!("github:{expected}"));
            assert_eq!(v.replay_until(), now + tolerance);
        }
        Scheme::Stripe => {
            let value = only(headers, "stripe-signature").expect("one signature header");
            let items: Vec<&str> = value.split(',').collect();
            assert!(items.iter().all(|i| i.contains('=')), "{value:?}");
            let ts: Vec<&str> = items.iter().filter_map(|i| i.strip_prefix("t=")).collect();
            let [ts] = ts[..] else { panic!("accepted without exactly one t=: {value:?}") };
            assert!(is_timestamp(ts), "timestamp {ts:?}");
            let expected = hex(&mac(STRIPE_SECRET.as_bytes(), &[ts.as_bytes(), b".", body]));
            assert!(
                items.contains(&format!("v1={expected}").as_str()),
                "accepted without a correct v1: {value:?}"
            );
            let ts: u64 = ts.parse().expect("digits");
            assert!(in_window(ts, now, tolerance), "timestamp {ts} outside the window at {now}");
            assert_eq!((v.id(), v.timestamp()), (None, Some(ts)));
            assert_eq!(v.replay_key(), format!("stripe:{expected}"));
            assert_eq!(v.replay_until(), ts + tolerance);
        }
    }
}

fn run(
    scheme: Scheme,
    config: usize,
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
) -> Result<(), WebhookError> {
    let outcome = verifier(scheme, config).verify_without_replay_guard(headers, body, now);
    if let Ok(v) = &outcome {
        check_accepted(scheme, config, headers, body, now, v);
    }
    outcome.map(|_| ())
}

fuzz_target!(init: ztgate_fuzz::seeds::write_if_asked("webhook_headers"), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let scheme = [Scheme::Svix, Scheme::StandardWebhooks, Scheme::GitHub, Scheme::Stripe][usize::from(mode & 3)];
    let config = usize::from(mode >> 3 & 3);
    if mode & 4 == 0 {
        raw(scheme, config, rest);
    } else {
        signed(scheme, config, rest);
    }
});

fn raw(scheme: Scheme, config: usize, mut rest: &[u8]) {
    let mut headers = HeaderMap::new();
    while let Some((&name, tail)) = rest.split_first() {
        rest = tail;
        if name == 0xff {
            break;
        }
        let Some((&len, tail)) = rest.split_first() else { break };
        let (value, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(NAMES[usize::from(name) % NAMES.len()]), value);
        }
    }
    let _ = run(scheme, config, &headers, rest, NOW);
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }
    fn byte(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
}

/// A delivery as the provider would send it.
#[derive(Clone)]
struct Delivery {
    id: Vec<u8>,
    timestamp: String,
    body: Vec<u8>,
    /// The signature header's value (Svix: the list of entries).
    signature: String,
}

fn sign(scheme: Scheme, id: &[u8], timestamp: &str, body: &[u8], flags: u8) -> String {
    let wrong = [0x5au8; 32];
    match scheme {
        Scheme::Svix | Scheme::StandardWebhooks => {
            let good = mac(&SVIX_KEY, &[id, b".", timestamp.as_bytes(), b".", body]);
            let mut entries = vec![format!("v1,{}", STANDARD.encode(good))];
            if flags & 1 != 0 {
                entries.insert(0, format!("v1,{}", STANDARD.encode(wrong)));
            }
            if flags & 2 != 0 {
                entries.push(format!("v1a,{}", STANDARD.encode([7u8; 64])));
            }
            if flags & 4 != 0 {
                entries.reverse();
            }
            entries.join(" ")
        }
        Scheme::GitHub => format!("sha256={}", hex(&mac(GITHUB_SECRET.as_bytes(), &[body]))),
        Scheme::Stripe => {
            let good = hex(&mac(STRIPE_SECRET.as_bytes(), &[timestamp.as_bytes(), b".", body]));
            let mut items = vec![format!("t={timestamp}"), format!("v1={good}")];
            if flags & 1 != 0 {
                items.insert(1, format!("v1={}", hex(&wrong)));
            }
            if flags & 2 != 0 {
                items.push(format!("v0={}", hex(&wrong)));
            }
            if flags & 4 != 0 {
                items.reverse();
            }
            items.join(",")
        }
    }
}

/// The headers of `d`, or `None` when a value cannot be a header value at all.
fn headers_of(scheme: Scheme, d: &Delivery, flags: u8) -> Option<HeaderMap> {
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, value: &[u8]| -> Option<()> {
        h.append(HeaderName::from_static(name), HeaderValue::from_bytes(value).ok()?);
        Some(())
    };
    match scheme {
        Scheme::Svix | Scheme::StandardWebhooks => {
            let prefix = if scheme == Scheme::Svix { "svix" } else { "webhook" };
            let [id, ts, sig] = match prefix {
                "svix" => ["svix-id", "svix-timestamp", "svix-signature"],
                _ => ["webhook-id", "webhook-timestamp", "webhook-signature"],
            };
            put(id, &d.id)?;
            put(ts, d.timestamp.as_bytes())?;
            put(sig, d.signature.as_bytes())?;
            // Svix names win over a stray `webhook-*` family.
            if scheme == Scheme::Svix && flags & 8 != 0 {
                put("webhook-id", b"msg_other")?;
                put("webhook-signature", b"v1,AAAA")?;
            }
        }
        Scheme::GitHub => {
            put("x-hub-signature-256", d.signature.as_bytes())?;
            put("x-github-delivery", &d.id)?;
        }
        Scheme::Stripe => put("stripe-signature", d.signature.as_bytes())?,
    }
    Some(h)
}

fn signed(scheme: Scheme, config: usize, rest: &[u8]) {
    let (tolerance, cap) = CONFIGS[config];
    let mut c = Cursor(rest);
    let offset = i16::from_be_bytes([c.byte(), c.byte()]);
    let flags = c.byte();
    let id_len = usize::from(c.byte());
    let id = c.take(id_len).to_vec();
    let body_len = usize::from(c.byte()) << 8 | usize::from(c.byte());
    let body = c.take(body_len).to_vec();
    let mutation = c.0;

    let ts = NOW.checked_add_signed(i64::from(offset)).expect("near NOW");
    let timestamp = ts.to_string();
    let signature = sign(scheme, &id, &timestamp, &body, flags);
    let d = Delivery { id, timestamp, body, signature };
    let Some(headers) = headers_of(scheme, &d, flags) else { return };
    let outcome = run(scheme, config, &headers, &d.body, NOW);

    // What a correctly signed delivery must get.
    let svix = matches!(scheme, Scheme::Svix | Scheme::StandardWebhooks);
    let id_name = if scheme == Scheme::Svix { "svix-id" } else { "webhook-id" };
    let expected = if d.body.len() > cap {
        Err(WebhookError::BodyTooLarge { limit: cap })
    } else if svix && d.id.len() > 256 {
        Err(WebhookError::HeaderTooLarge { header: id_name })
    } else if svix && !d.id.iter().all(|&b| (b' '..0x7f).contains(&b) || b == b'\t') {
        Err(WebhookError::MalformedHeader { header: id_name })
    } else if svix && (d.id.is_empty() || !d.id.iter().all(|&b| b.is_ascii_graphic() && b != b'.')) {
        Err(WebhookError::MalformedId)
    } else if scheme == Scheme::GitHub {
        Ok(())
    } else if ts.saturating_add(tolerance) < NOW {
        Err(WebhookError::TimestampTooOld)
    } else if ts > NOW + tolerance {
        Err(WebhookError::TimestampInFuture)
    } else {
        Ok(())
    };
    assert_eq!(
        outcome, expected,
        "a correctly signed {scheme:?} delivery, offset {offset} s, tolerance {tolerance} s"
    );
    let signature_ok =
        matches!(expected, Ok(()) | Err(WebhookError::TimestampTooOld | WebhookError::TimestampInFuture));
    if !signature_ok {
        return;
    }

    // Changed after signing: refused, by the MAC when only the signed content changed.
    for op in mutation.chunks(3) {
        let pick = |i: usize| op.get(i).copied().unwrap_or(0);
        let at = usize::from(pick(1));
        let mut changed = d.clone();
        let content_only = match pick(0) % 6 {
            0 if !changed.body.is_empty() => {
                let i = at % changed.body.len();
                changed.body[i] ^= pick(2).max(1);
                true
            }
            0 | 1 => {
                changed.body.push(pick(2));
                true
            }
            2 if !changed.body.is_empty() => {
                changed.body.truncate(at % changed.body.len());
                true
            }
            3 if scheme != Scheme::GitHub => {
                // Another canonical timestamp, signature unchanged.
                let delta = i64::from(pick(2)) + 1;
                let other = if pick(1) & 1 == 0 { ts + delta as u64 } else { ts - delta as u64 };
                changed.timestamp = other.to_string();
                changed.signature = d.signature.replace(&format!("t={}", d.timestamp), &format!("t={other}"));
                true
            }
            4 if svix && d.id.len() < 256 => {
                changed.id.push(b'x');
                true
            }
            _ => {
                // One byte of the correct signature itself.
                let good = sign(scheme, &d.id, &d.timestamp, &d.body, 0);
                let sig_at = match scheme {
                    Scheme::Stripe => good.find("v1=").expect("v1 item") + 3,
                    Scheme::GitHub => "sha256=".len(),
                    _ => "v1,".len(),
                };
                let mut bytes = good.clone().into_bytes();
                let i = sig_at + at % (bytes.len() - sig_at);
                bytes[i] = pick(2);
                let Ok(bad) = String::from_utf8(bytes) else { continue };
                if bad == good {
                    continue;
                }
                changed.signature = d.signature.replace(&good[sig_at..], &bad[sig_at..]);
                if changed.signature == d.signature {
                    continue;
                }
                false
            }
        };
        let Some(h) = headers_of(scheme, &changed, flags) else { continue };
        let got = run(scheme, config, &h, &changed.body, NOW);
        assert!(got.is_err(), "a {scheme:?} delivery changed after signing was accepted");
        if content_only && changed.body.len() <= cap {
            assert_eq!(got, Err(WebhookError::SignatureMismatch), "{scheme:?} content changed after signing");
        }
    }
}
