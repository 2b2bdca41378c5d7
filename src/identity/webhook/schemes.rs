//! The three wire formats: strict, bounded parsing and the MAC check.
//!
//! Order within every scheme: read the headers (presence, no duplicates, size caps, strict
//! syntax), then the MAC, then the timestamp window. A forged request therefore stops at the
//! MAC and learns nothing about whether its timestamp would have been accepted.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use super::{MAX_ID_BYTES, MAX_SIGNATURE_HEADER_BYTES, MAX_SIGNATURES, MAX_TIMESTAMP_DIGITS, WebhookError};
use crate::secrets::Secret;

/// HMAC-SHA256 output length.
const MAC_LEN: usize = 32;
/// A base64 (standard, padded) HMAC-SHA256: 44 characters.
const MAC_BASE64_LEN: usize = 44;
/// Cap for a timestamp header: generous, so that a long value reads as malformed, not as
/// too large.
const MAX_TIMESTAMP_HEADER_BYTES: usize = 64;

/// What a scheme proved, before the replay guard is asked.
pub(super) struct Checked {
    /// The signed message id (Svix only).
    pub(super) id: Option<String>,
    /// The signed timestamp (Svix and Stripe).
    pub(super) timestamp: Option<u64>,
    /// The key the replay guard records, scoped by scheme.
    pub(super) replay_key: String,
    /// The last second (inclusive) a replay of this message could still pass the checks.
    pub(super) replay_until: u64,
}

/// The three header names of the Svix scheme.
struct SvixHeaders {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

const SVIX: SvixHeaders =
    SvixHeaders { id: "svix-id", timestamp: "svix-timestamp", signature: "svix-signature" };
const STANDARD_WEBHOOKS: SvixHeaders =
    SvixHeaders { id: "webhook-id", timestamp: "webhook-timestamp", signature: "webhook-signature" };

/// Svix / Resend / Standard Webhooks: `HMAC(key, "{id}.{timestamp}.{body}")`, base64, in a
/// space-separated list of `v1,<sig>` entries.
pub(super) fn svix(
    key: &Secret,
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<Checked, WebhookError> {
    // One family per request: the `svix-` names if any is present, else the standard ones.
    let names = if [SVIX.id, SVIX.timestamp, SVIX.signature].iter().any(|h| headers.contains_key(*h)) {
        &SVIX
    } else {
        &STANDARD_WEBHOOKS
    };
    let id = header(headers, names.id, MAX_ID_BYTES)?;
    // No dot and no whitespace: with a dot, "{id}.{timestamp}.{body}" would have two readings.
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic() && b != b'.') {
        return Err(WebhookError::MalformedId);
    }
    let timestamp_text = header(headers, names.timestamp, MAX_TIMESTAMP_HEADER_BYTES)?;
    let timestamp = parse_timestamp(timestamp_text)?;
    let signatures = header(headers, names.signature, MAX_SIGNATURE_HEADER_BYTES)?;

    let mut candidates = Candidates::default();
    for entry in signatures.split(' ').filter(|e| !e.is_empty()) {
        let (version, signature) =
            entry.split_once(',').ok_or(WebhookError::MalformedHeader { header: names.signature })?;
        // Other versions (`v1a` asymmetric signatures, future ones) are not ours to judge.
        if version == "v1" {
            candidates.push(decode_base64_mac(signature))?;
        }
    }

    candidates.require_some()?;

    let expected = hmac_sha256(key, &[id.as_bytes(), b".", timestamp_text.as_bytes(), b".", body])?;
    if !candidates.any_matches(&expected) {
        return Err(WebhookError::SignatureMismatch);
    }
    check_window(timestamp, now, tolerance)?;
    Ok(Checked {
        id: Some(id.to_owned()),
        timestamp: Some(timestamp),
        replay_key: format!("svix:{id}"),
        replay_until: timestamp.saturating_add(tolerance),
    })
}

/// GitHub: `X-Hub-Signature-256: sha256=<64 lowercase hex>` = `HMAC(secret, body)`.
pub(super) fn github(
    key: &Secret,
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<Checked, WebhookError> {
    const NAME: &str = "x-hub-signature-256";
    let value = header(headers, NAME, MAX_SIGNATURE_HEADER_BYTES)?;
    let hex = value.strip_prefix("sha256=").ok_or(WebhookError::NoSupportedSignature)?;
    let candidate = decode_hex_mac(hex).ok_or(WebhookError::MalformedSignature)?;
    let expected = hmac_sha256(key, &[body])?;
    if !bool::from(expected.ct_eq(&candidate)) {
        return Err(WebhookError::SignatureMismatch);
    }
    // No signed id or timestamp: the MAC itself names the body, and the record lives one
    // tolerance window from now.
    Ok(Checked {
        id: None,
        timestamp: None,
        replay_key: format!("github:{hex}"),
        replay_until: now.saturating_add(tolerance),
    })
}

/// Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...][,v0=<hex>]`,
/// `v1 = HMAC(secret, "{t}.{body}")`.
pub(super) fn stripe(
    key: &Secret,
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<Checked, WebhookError> {
    const NAME: &str = "stripe-signature";
    let malformed = WebhookError::MalformedHeader { header: NAME };
    let value = header(headers, NAME, MAX_SIGNATURE_HEADER_BYTES)?;

    let mut timestamp_text = None;
    let mut candidates = Candidates::default();
    for item in value.split(',') {
        let (name, item_value) = item.split_once('=').ok_or_else(|| malformed.clone())?;
        match name {
            // Two timestamps would leave the choice to whoever reads the header.
            "t" if timestamp_text.is_some() => return Err(malformed),
            "t" => timestamp_text = Some(item_value),
            "v1" => candidates.push(decode_hex_mac(item_value))?,
            // `v0` (test-mode events, not signed with the endpoint secret) and unknown schemes.
            _ => {}
        }
    }
    let timestamp_text = timestamp_text.ok_or(malformed)?;
    let timestamp = parse_timestamp(timestamp_text)?;
    candidates.require_some()?;

    let expected = hmac_sha256(key, &[timestamp_text.as_bytes(), b".", body])?;
    if !candidates.any_matches(&expected) {
        return Err(WebhookError::SignatureMismatch);
    }
    check_window(timestamp, now, tolerance)?;
    // Stripe signs no message id (the event id is inside the body): the MAC of "{t}.{body}"
    // names this delivery, whatever else the header lists.
    Ok(Checked {
        id: None,
        timestamp: Some(timestamp),
        replay_key: format!("stripe:{}", encode_hex(&expected)),
        replay_until: timestamp.saturating_add(tolerance),
    })
}

/// One header's value: present exactly once, at most `limit` bytes, visible ASCII.
fn header<'h>(headers: &'h HeaderMap, name: &'static str, limit: usize) -> Result<&'h str, WebhookError> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(WebhookError::MissingHeader { header: name })?;
    if values.next().is_some() {
        return Err(WebhookError::DuplicateHeader { header: name });
    }
    if value.len() > limit {
        return Err(WebhookError::HeaderTooLarge { header: name });
    }
    value.to_str().map_err(|_| WebhookError::MalformedHeader { header: name })
}

/// A Unix timestamp in plain decimal: digits only, no sign, no whitespace, no leading zero,
/// at most [`MAX_TIMESTAMP_DIGITS`] digits.
pub(super) fn parse_timestamp(text: &str) -> Result<u64, WebhookError> {
    let canonical = !text.is_empty()
        && text.len() <= MAX_TIMESTAMP_DIGITS
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return Err(WebhookError::MalformedTimestamp);
    }
    text.parse().map_err(|_| WebhookError::MalformedTimestamp)
}

/// Accepted when `now - tolerance <= timestamp <= now + tolerance` (both edges included).
pub(super) fn check_window(timestamp: u64, now: u64, tolerance: u64) -> Result<(), WebhookError> {
    if timestamp.saturating_add(tolerance) < now {
        return Err(WebhookError::TimestampTooOld);
    }
    if timestamp > now.saturating_add(tolerance) {
        return Err(WebhookError::TimestampInFuture);
    }
    Ok(())
}

fn hmac_sha256(key: &Secret, parts: &[&[u8]]) -> Result<[u8; MAC_LEN], WebhookError> {
    // HMAC accepts keys of any length; the error arm exists only to avoid a panic path.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.expose()).map_err(|_| WebhookError::SignatureMismatch)?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes().into())
}

/// The signatures of the supported version found in a header, without allocating.
/// `None` marks a malformed entry: it matches nothing, like a wrong one.
#[derive(Default)]
struct Candidates {
    slots: [Option<[u8; MAC_LEN]>; MAX_SIGNATURES],
    len: usize,
}

impl Candidates {
    fn push(&mut self, candidate: Option<[u8; MAC_LEN]>) -> Result<(), WebhookError> {
        let slot = self.slots.get_mut(self.len).ok_or(WebhookError::TooManySignatures)?;
        *slot = candidate;
        self.len += 1;
        Ok(())
    }

    /// A header without a signature of the supported version is refused before any MAC work.
    fn require_some(&self) -> Result<(), WebhookError> {
        if self.len == 0 { Err(WebhookError::NoSupportedSignature) } else { Ok(()) }
    }

    /// Compares every candidate in full, so the time taken does not say which one matched.
    fn any_matches(&self, expected: &[u8; MAC_LEN]) -> bool {
        let mut matched = Choice::from(0);
        for candidate in self.slots.iter().take(self.len).flatten() {
            matched |= expected.ct_eq(candidate);
        }
        matched.into()
    }
}

/// A standard-alphabet, padded base64 HMAC-SHA256, or `None`.
fn decode_base64_mac(text: &str) -> Option<[u8; MAC_LEN]> {
    if text.len() != MAC_BASE64_LEN {
        return None;
    }
    let mut buf = [0u8; MAC_BASE64_LEN];
    let n = STANDARD.decode_slice(text, &mut buf).ok()?;
    buf.get(..n)?.try_into().ok()
}

/// Exactly 64 lowercase hex digits, or `None`. Providers send lowercase; accepting one
/// spelling keeps a signature a single string.
pub(super) fn decode_hex_mac(text: &str) -> Option<[u8; MAC_LEN]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() != 2 * MAC_LEN {
        return None;
    }
    let mut out = [0u8; MAC_LEN];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let &[hi, lo] = pair else { return None };
        *byte = (nibble(hi)? << 4) | nibble(lo)?;
    }
    Some(out)
}

fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_only_lowercase_decodes() {
        let bytes: [u8; MAC_LEN] = std::array::from_fn(|i| (i * 37) as u8);
        let hex = encode_hex(&bytes);
        assert_eq!(decode_hex_mac(&hex), Some(bytes));
        assert_eq!(decode_hex_mac(&hex.to_uppercase()), None);
        assert_eq!(decode_hex_mac(&hex[..62]), None);
        assert_eq!(decode_hex_mac(&format!("{hex}00")), None);
        assert_eq!(decode_hex_mac(&format!("{}g", &hex[..63])), None);
    }

    #[test]
    fn timestamps_are_plain_decimal() {
        assert_eq!(parse_timestamp("1700000000"), Ok(1_700_000_000));
        assert_eq!(parse_timestamp("0"), Ok(0));
        for bad in ["", "+1700000000", "-1", " 1700000000", "1700000000 ", "01700000000", "1e9", "1_7"] {
            assert_eq!(parse_timestamp(bad), Err(WebhookError::MalformedTimestamp), "{bad:?}");
        }
        assert_eq!(parse_timestamp("999999999999"), Ok(999_999_999_999));
        assert_eq!(parse_timestamp("1000000000000"), Err(WebhookError::MalformedTimestamp));
    }

    #[test]
    fn the_window_includes_both_edges() {
        assert_eq!(check_window(700, 1000, 300), Ok(()));
        assert_eq!(check_window(699, 1000, 300), Err(WebhookError::TimestampTooOld));
        assert_eq!(check_window(1300, 1000, 300), Ok(()));
        assert_eq!(check_window(1301, 1000, 300), Err(WebhookError::TimestampInFuture));
        assert_eq!(check_window(u64::MAX, u64::MAX, 300), Ok(()));
        assert_eq!(check_window(0, 0, 300), Ok(()));
    }
}
