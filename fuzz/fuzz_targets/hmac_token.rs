//! HMAC-signed tokens (`identity::hmac_token`): `KeyRing::parse`, `HmacKey::new`, `mint` and
//! `verify` on arbitrary input.
//!
//! Modes (byte 0 % 4):
//! - 0, raw: a purpose and clock choice byte, then token bytes verified with the fixed ring of
//!   `HMAC_KEYS`;
//! - 1, mint: `clock byte, ttl (u32 BE), purpose (length byte), subject (u16 BE length),
//!   mutation bytes`: mint, then verify the token and changed copies of it;
//! - 2, parse: the rest is a `ZTGATE_HMAC_KEYS` spec for `KeyRing::parse`;
//! - 3, key: `kid (length byte), secret bytes` for `HmacKey::new` and `KeyRing::new`.
//!
//! Invariants: no panic; `verify` accepts a token iff it is exactly the canonical encoding
//! of `v1.kid.expiry.b64(subject).b64(mac)` or `v2.kid.expiry.b64(id).b64(subject).b64(mac)`
//! (a 16-byte id) with the MAC the format specifies (recomputed here
//! with the `hmac` crate) under a key of the ring for the expected purpose, and
//! `now < expiry <= now + MAX_TTL + 300`; `mint` fails exactly when its documented rules say
//! so, and a minted token is that canonical encoding, round-trips subject, purpose, expiry and
//! kid, expires exactly at `now + ttl`, is refused for any other purpose, by a ring without its
//! key or with another secret under the same kid, and after any change of one byte, a
//! truncation or an extension; a spec parses exactly when a restated model of the format says
//! so, with the same key ids, and every key of a parsed ring verifies what it minted alone.
#![no_main]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use ztgate::identity::hmac_token::{HmacKey, HmacTokenError, KeyRing, MintError};
use ztgate::identity::hmac_token::{MAX_SUBJECT_LEN, MAX_TOKEN_LEN, MAX_TTL, MIN_SECRET_LEN};
use ztgate::secrets::Secret;
use ztgate_fuzz::{HMAC_KEYS, NOW, hmac_ring};

/// Tolerated skew past `MAX_TTL` (the module's private `CLOCK_SKEW_SECS`).
const SKEW: u64 = 300;
/// The longest token `mint` can make (module docs).
const LONGEST_MINTED: usize = 1490;
const PURPOSES: [&str; 6] = ["unsubscribe", "magic-link", "session:v2", "", "a/b", "p\0"];

fuzz_target!(init: ztgate_fuzz::seeds::write_if_asked("hmac_token"), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 => raw(rest),
        1 => mint(rest),
        2 => parse(&String::from_utf8_lossy(rest)),
        _ => key(rest),
    }
});

/// `now` choices: the fixed time, the epoch, and the far end of `u64` where `now + ttl` overflows.
fn clock(byte: u8) -> u64 {
    [NOW, 0, 1, u64::MAX - MAX_TTL.as_secs(), u64::MAX - 1, u64::MAX, NOW + 86_400, NOW - 1]
        [usize::from(byte % 8)]
}

fn secret_of(kid: &str) -> Option<&'static str> {
    HMAC_KEYS.iter().find(|(k, _)| *k == kid).map(|(_, s)| *s)
}

fn is_purpose(p: &str) -> bool {
    (1..=64).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

fn is_kid(k: &str) -> bool {
    (1..=32).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
}

/// The v1 token the format specifies, computed independently of the crate.
fn model_token(kid: &str, secret: &[u8], purpose: &str, expiry: u64, subject: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("ztgate-hmac-v1\0{kid}\0{purpose}\0{expiry}\0").as_bytes());
    mac.update(subject.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!("v1.{kid}.{expiry}.{}.{}", URL_SAFE_NO_PAD.encode(subject), URL_SAFE_NO_PAD.encode(tag))
}

/// The v2 token the format specifies for token id `id` (its base64url text).
fn model_token_v2(kid: &str, secret: &[u8], purpose: &str, expiry: u64, id: &str, subject: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("ztgate-hmac-v2\0{kid}\0{purpose}\0{expiry}\0{id}\0").as_bytes());
    mac.update(subject.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!("v2.{kid}.{expiry}.{id}.{}.{}", URL_SAFE_NO_PAD.encode(subject), URL_SAFE_NO_PAD.encode(tag))
}

/// Whether `id` is the canonical base64url of 16 bytes.
fn is_token_id(id: &str) -> bool {
    URL_SAFE_NO_PAD.decode(id).is_ok_and(|b| b.len() == 16 && URL_SAFE_NO_PAD.encode(&b) == id)
}

/// Whether `token` is what a minter makes: v2, a well-formed id, and the v2 MAC over it.
fn is_model_minted(token: &str, kid: &str, secret: &[u8], purpose: &str, expiry: u64, subject: &str) -> bool {
    let id = token.split('.').nth(3).unwrap_or("");
    token.starts_with("v2.")
        && is_token_id(id)
        && model_token_v2(kid, secret, purpose, expiry, id, subject) == token
}

fn in_window(expiry: u64, now: u64) -> bool {
    now < expiry && expiry - now <= MAX_TTL.as_secs() + SKEW
}

/// Arbitrary tokens: accepted iff canonical, correctly signed for the purpose, and in time.
fn raw(rest: &[u8]) {
    let Some((&choice, token)) = rest.split_first() else { return };
    let purpose = PURPOSES[usize::from(choice % 6)];
    let now = clock(choice / 6);
    let token = String::from_utf8_lossy(token);
    let outcome = hmac_ring().verify(&token, purpose, now);

    // What the format says: a lenient split, then the canonical re-encoding must be the input.
    let model_ok = (|| {
        let parts: Vec<&str> = token.split('.').collect();
        let (v, kid, expiry, id, subject) = match parts[..] {
            [v, kid, expiry, subject, _mac] => (v, kid, expiry, None, subject),
            [v, kid, expiry, id, subject, _mac] => (v, kid, expiry, Some(id), subject),
            _ => return false,
        };
        let (Some(secret), Ok(expiry)) = (secret_of(kid), expiry.parse::<u64>()) else { return false };
        let Some(subject) = URL_SAFE_NO_PAD.decode(subject).ok().and_then(|s| String::from_utf8(s).ok())
        else {
            return false;
        };
        let canonical = match (v, id) {
            ("v1", None) => model_token(kid, secret.as_bytes(), purpose, expiry, &subject) == *token,
            ("v2", Some(id)) => {
                is_token_id(id)
                    && model_token_v2(kid, secret.as_bytes(), purpose, expiry, id, &subject) == *token
            }
            _ => false,
        };
        canonical
            && is_purpose(purpose)
            && !subject.is_empty()
            && subject.len() <= MAX_SUBJECT_LEN
            && in_window(expiry, now)
    })();
    match &outcome {
        Ok(t) => {
            assert!(model_ok, "accepted a token the format refuses: {token:?} for {purpose:?} at {now}");
            assert_eq!(t.purpose, purpose);
            let secret = secret_of(&t.kid).expect("a kid of the ring");
            let model = match &t.id {
                None => model_token(&t.kid, secret.as_bytes(), purpose, t.expires_at, &t.subject),
                Some(id) => model_token_v2(&t.kid, secret.as_bytes(), purpose, t.expires_at, id, &t.subject),
            };
            assert_eq!(model, *token);
        }
        Err(e) => {
            assert!(!model_ok, "refused a canonical, correctly signed token ({e:?}): {token:?}");
            if !is_purpose(purpose) {
                assert_eq!(*e, HmacTokenError::InvalidPurpose);
            } else if token.len() > MAX_TOKEN_LEN {
                assert_eq!(*e, HmacTokenError::TooLong);
            }
        }
    }
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

/// Mint with fuzz-chosen arguments, then check the token and changed copies of it.
fn mint(rest: &[u8]) {
    let mut c = Cursor(rest);
    let now = clock(c.byte());
    let ttl_bytes = c.take(4);
    let ttl = ttl_bytes.iter().fold(0u64, |n, &b| n << 8 | u64::from(b));
    let purpose_len = usize::from(c.byte() % 80);
    let purpose = String::from_utf8_lossy(c.take(purpose_len)).into_owned();
    let subject_len = usize::from(c.byte()) << 8 | usize::from(c.byte());
    let subject = String::from_utf8_lossy(c.take(subject_len % 1100)).into_owned();
    let mutation = c.0;

    let ring = hmac_ring();
    let outcome = ring.mint(&purpose, &subject, now, Duration::from_secs(ttl));
    let expected_error = if !is_purpose(&purpose) {
        Some(MintError::InvalidPurpose)
    } else if subject.is_empty() {
        Some(MintError::EmptySubject)
    } else if subject.len() > MAX_SUBJECT_LEN {
        Some(MintError::SubjectTooLong)
    } else if subject.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')) {
        Some(MintError::ControlCharacterInSubject)
    } else if ttl == 0 || ttl > MAX_TTL.as_secs() || now.checked_add(ttl).is_none() {
        Some(MintError::TtlOutOfRange)
    } else {
        None
    };
    let token = match (outcome, expected_error) {
        (Ok(token), None) => token,
        (Err(got), Some(want)) => return assert_eq!(got, want),
        (got, want) => {
            panic!("mint({purpose:?}, {} bytes, {now}, {ttl}): {got:?}, expected {want:?}", subject.len())
        }
    };
    let expires_at = now + ttl;
    let (kid, secret) = HMAC_KEYS[0];
    assert!(
        is_model_minted(&token, kid, secret.as_bytes(), &purpose, expires_at, &subject),
        "not the specified encoding: {token:?}"
    );
    assert!(token.len() <= LONGEST_MINTED);
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)), "{token:?}");

    let proven = ring.verify(&token, &purpose, now).expect("a freshly minted token verifies");
    assert_eq!((proven.subject.as_str(), proven.purpose.as_str()), (subject.as_str(), purpose.as_str()));
    assert_eq!((proven.expires_at, proven.kid.as_str()), (expires_at, kid));
    // Valid until the second before its expiry, refused from it on.
    assert!(ring.verify(&token, &purpose, expires_at - 1).is_ok());
    assert_eq!(ring.verify(&token, &purpose, expires_at).unwrap_err(), HmacTokenError::Expired);
    assert_eq!(ring.verify(&token, &purpose, u64::MAX).unwrap_err(), HmacTokenError::Expired);
    // Seen from further back than MAX_TTL plus the skew, the expiry is too far.
    let horizon = MAX_TTL.as_secs() + SKEW;
    if let Some(early) = expires_at.checked_sub(horizon) {
        assert!(ring.verify(&token, &purpose, early).is_ok());
        if let Some(earlier) = early.checked_sub(1) {
            assert_eq!(ring.verify(&token, &purpose, earlier).unwrap_err(), HmacTokenError::ExpiryTooFar);
        }
    }

    // Another purpose: a forgery, whatever it is.
    let other = other_purpose(&purpose, mutation.first().copied().unwrap_or(0));
    assert_ne!(other, purpose);
    assert_eq!(ring.verify(&token, &other, now).unwrap_err(), HmacTokenError::BadSignature);
    // Without its key, or with another secret under the same kid.
    let old_only = KeyRing::parse(&format!("{}:{}", HMAC_KEYS[1].0, HMAC_KEYS[1].1)).expect("ring");
    assert_eq!(old_only.verify(&token, &purpose, now).unwrap_err(), HmacTokenError::UnknownKey);
    let impostor = KeyRing::parse(&format!("{kid}:{}", HMAC_KEYS[1].1)).expect("ring");
    assert_eq!(impostor.verify(&token, &purpose, now).unwrap_err(), HmacTokenError::BadSignature);

    // Changed copies: every one refused.
    for op in mutation.chunks(3) {
        if let Some(changed) = change(&token, op) {
            let got = ring.verify(&changed, &purpose, now);
            assert!(got.is_err(), "a changed token verified: {token:?} -> {changed:?}: {got:?}");
        }
    }
}

/// A valid purpose other than `purpose`.
fn other_purpose(purpose: &str, pick: u8) -> String {
    let alphabet = b"abcXYZ019_.:-";
    let c = char::from(alphabet[usize::from(pick) % alphabet.len()]);
    if purpose.len() < 64 {
        format!("{purpose}{c}")
    } else {
        let mut p: Vec<char> = purpose.chars().collect();
        p[0] = if p[0] == c { 'q' } else { c };
        p.into_iter().collect()
    }
}

/// One byte replaced, the token cut, or a byte appended; `None` if that changes nothing.
fn change(token: &str, op: &[u8]) -> Option<String> {
    let pick = |i: usize| op.get(i).copied().unwrap_or(0);
    let bytes = token.as_bytes();
    let at = (usize::from(pick(0)) << 8 | usize::from(pick(1))) % bytes.len().max(1);
    let value = pick(2);
    let mut changed = bytes.to_vec();
    match pick(0) >> 6 {
        0 => changed.truncate(at),
        1 => changed.push(value),
        _ => changed[at] = value,
    }
    let changed = String::from_utf8_lossy(&changed).into_owned();
    (changed != token).then_some(changed)
}

/// The restated spec format: `kid:secret` entries split on `,`, trimmed, unique kids.
fn parse(spec: &str) {
    let outcome = KeyRing::parse(spec);
    let model: Option<Vec<(&str, &str)>> = spec
        .split(',')
        .map(|entry| {
            let (kid, secret) = entry.trim().split_once(':')?;
            (is_kid(kid) && secret.len() >= MIN_SECRET_LEN).then_some((kid, secret))
        })
        .collect();
    let model = model.filter(|entries| {
        entries.iter().enumerate().all(|(i, (kid, _))| entries[..i].iter().all(|(k, _)| k != kid))
    });
    let (ring, entries) = match (outcome, model) {
        (Ok(ring), Some(entries)) => (ring, entries),
        (Err(e), None) => return assert_eq!(e.setting(), "hmac_keys"),
        (got, want) => panic!("KeyRing::parse({spec:?}): {got:?}, model {want:?}"),
    };
    assert_eq!(ring.kids().collect::<Vec<_>>(), entries.iter().map(|(k, _)| *k).collect::<Vec<_>>());
    let token = ring.mint("fuzz.parse", "subject", NOW, Duration::from_secs(60)).expect("mint");
    assert!(is_model_minted(
        &token,
        entries[0].0,
        entries[0].1.as_bytes(),
        "fuzz.parse",
        NOW + 60,
        "subject"
    ));
    assert_eq!(ring.verify(&token, "fuzz.parse", NOW).expect("verify").kid, entries[0].0);
    // Rotation: what any key of the ring minted alone, the ring verifies.
    for (kid, secret) in entries.iter().take(4) {
        let alone = KeyRing::parse(&format!("{kid}:{secret}")).expect("one valid entry");
        let token = alone.mint("fuzz.parse", "rotated", NOW, Duration::from_secs(60)).expect("mint");
        assert_eq!(ring.verify(&token, "fuzz.parse", NOW).expect("verify").kid, *kid);
    }
}

/// `HmacKey::new` on an arbitrary kid and arbitrary (not only UTF-8) secret bytes.
fn key(rest: &[u8]) {
    let mut c = Cursor(rest);
    let kid_len = usize::from(c.byte() % 40);
    let kid = String::from_utf8_lossy(c.take(kid_len)).into_owned();
    let secret = c.0;
    let valid = is_kid(&kid) && secret.len() >= MIN_SECRET_LEN;
    let key = match (HmacKey::new(kid.clone(), Secret::from(secret)), valid) {
        (Ok(key), true) => key,
        (Err(e), false) => return assert_eq!(e.setting(), "hmac_keys"),
        (got, _) => {
            panic!("HmacKey::new({kid:?}, {} bytes): {got:?}, expected valid = {valid}", secret.len())
        }
    };
    assert_eq!(key.kid(), kid);
    let ring = KeyRing::new(vec![key.clone()]).expect("one key");
    assert!(KeyRing::new(vec![key.clone(), key]).is_err(), "duplicate kids accepted");
    assert!(KeyRing::new(Vec::new()).is_err());
    let token = ring.mint("fuzz.key", "subject", NOW, Duration::from_secs(1)).expect("mint");
    assert!(is_model_minted(&token, &kid, secret, "fuzz.key", NOW + 1, "subject"), "{token}");
    assert!(ring.verify(&token, "fuzz.key", NOW).is_ok());
    assert_eq!(ring.verify(&token, "fuzz.key", NOW + 1).unwrap_err(), HmacTokenError::Expired);
}
