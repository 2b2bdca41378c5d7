//! HMAC-signed tokens: unsubscribe links, magic links, session cookies.
//!
//! A token says "the holder may do *purpose* as *subject* until *expires_at*", and carries an
//! id of its own, so that one token can be revoked (by
//! [`RevocationKind::HmacToken`](super::shared_state::RevocationKind::HmacToken)) while the
//! subject's other tokens keep working. It is signed with HMAC-SHA256 under one key of a
//! [`KeyRing`]; the ring's first key signs and every key verifies, so keys rotate without
//! breaking live tokens.
//!
//! ```text
//! v2.<kid>.<expires_at>.<token_id>.<base64url(subject)>.<base64url(mac)>
//! mac = HMAC-SHA256(secret[kid], "ztgate-hmac-v2" 0x00 kid 0x00 purpose 0x00 expires_at 0x00 token_id 0x00 subject)
//! ```
//!
//! The token id ([`TokenId`]) is 16 bytes from the operating system's CSPRNG, written as 22
//! characters of base64url; the MAC covers it (as those 22 characters), so it cannot be changed
//! to dodge a revocation. [`KeyRing::mint`] makes v2 tokens. [`KeyRing::verify`] also accepts
//! the earlier format, v1, which has no id (tokens minted before v2 keep verifying until they
//! expire; [`SignedToken::id`] is `None` for them):
//!
//! ```text
//! v1.<kid>.<expires_at>.<base64url(subject)>.<base64url(mac)>
//! mac = HMAC-SHA256(secret[kid], "ztgate-hmac-v1" 0x00 kid 0x00 purpose 0x00 expires_at 0x00 subject)
//! ```
//!
//! Every character is in `[A-Za-z0-9._-]`, so a token goes into a query string, a path segment
//! or a cookie value without escaping. The purpose is not carried in the token: the verifier
//! supplies the one it expects and the MAC covers it, so a token minted for another purpose
//! fails as [`HmacTokenError::BadSignature`], exactly like a forgery. The two versions' MACs
//! have different domain strings, so no MAC of one version verifies a token of the other.
//! `docs/hmac-token-format.md` specifies both formats for other implementations (a TypeScript
//! minter for Workers) and `tests/vectors/hmac_token_v1.json` and `hmac_token_v2.json` hold
//! test vectors.
//!
//! ```
//! use std::time::Duration;
//! use ztgate::identity::hmac_token::{HmacTokenError, KeyRing};
//!
//! // In production: KeyRing::parse(&std::env::var("ZTGATE_HMAC_KEYS")?)?
//! let ring = KeyRing::parse(
//!     "k2:example-only-new-key-at-least-32-bytes,k1:example-only-old-key-at-least-32-bytes",
//! )?;
//! let now = 1_700_000_000; // from a `ztgate::clock::Clock`
//!
//! let token = ring.mint("unsubscribe", "alice@example.com", now, Duration::from_secs(30 * 86_400))?;
//! let link = format!("https://example.com/unsubscribe?t={token}");
//!
//! let proven = ring.verify(&token, "unsubscribe", now + 60)?;
//! assert_eq!(proven.subject, "alice@example.com");
//! // Its id, to revoke this token alone (`RevocationKind::HmacToken`).
//! let id = proven.id.expect("a v2 token has an id");
//! assert_eq!(id.len(), 22);
//! // Minted for unsubscribing, refused for signing in.
//! assert_eq!(ring.verify(&token, "magic-link", now + 60), Err(HmacTokenError::BadSignature));
//! # let _ = link;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Rotating without a restart
//!
//! A [`KeyRing`] is fixed once built. A [`KeyRingSource`] reads the same `kid:secret,...` text
//! from a [`SecretSource`] (a [`FileSecret`](crate::secrets::FileSecret) a deploy rewrites, a
//! secrets store) and reads it again at most once per TTL: put a new key first, and within the
//! TTL it signs while the old one keeps verifying. An unreadable or invalid new value keeps the
//! last good ring (and logs); only a source that never held a valid ring refuses tokens.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use ztgate::clock::{SystemClock, unix_now};
//! use ztgate::identity::hmac_token::{KeyRingSource, SignedTokenAuth, TokenSource};
//! use ztgate::secrets::FileSecret;
//!
//! async fn setup() -> Result<(), Box<dyn std::error::Error>> {
//!     // The file holds `kid:secret,kid:secret`, the signing key first; rewrite it to rotate.
//!     let keys = FileSecret::new("/run/secrets/ztgate-hmac-keys");
//!     let ring = Arc::new(KeyRingSource::load(keys, Duration::from_secs(60), Arc::new(SystemClock)).await?);
//!     let query = TokenSource::Query("token".into());
//!     let auth = SignedTokenAuth::from_source(ring.clone(), "unsubscribe", query, Arc::new(SystemClock));
//!     // Mint with the same source: its current first key signs.
//!     let day = Duration::from_secs(86_400);
//!     let token = ring.ring().await?.mint("unsubscribe", "alice@example.com", unix_now(), day)?;
//!     # let _ = (auth, token);
//!     Ok(())
//! }
//! # let _ = setup;
//! ```
//!
//! ## The checks, in order
//!
//! 0. the expected purpose is valid (otherwise a caller bug: [`HmacTokenError::InvalidPurpose`]);
//! 1. the token is at most [`MAX_TOKEN_LEN`] bytes, checked before anything is decoded;
//! 2. strict parsing: `v2.` and exactly five more segments, or `v1.` and exactly four; a key
//!    id of `[A-Za-z0-9_-]{1,32}`; a decimal expiry without sign, whitespace or leading zeros;
//!    (v2) a token id of exactly 22 characters decoding to 16 bytes; a non-empty UTF-8 subject
//!    of at most [`MAX_SUBJECT_LEN`] bytes; canonical base64url without padding (no `+`, `/`,
//!    `=`, and no stray bits in the last character);
//! 3. the key id names a key of the ring;
//! 4. the MAC, recomputed with the expected purpose (and, in v2, the token id) and compared in
//!    constant time;
//! 5. the expiry: refused when `now >= expires_at`, and when `expires_at` is more than
//!    [`MAX_TTL`] (plus five minutes for clock skew) after `now`, which catches minters that put
//!    milliseconds where seconds belong.
//!
//! A forged or tampered token stops at step 4, so it learns nothing about whether its expiry
//! or purpose would have been accepted.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use std::sync::Arc;

use super::mechanism::{Attempt, Mechanism};
use crate::BoxFuture;
use crate::clock::Clock;
use crate::error::{ConfigError, Rejection};
use crate::principal::{Principal, SignedTokenPrincipal};
use crate::request::RequestFacts;
use crate::secrets::{Secret, SecretError, SecretSource};

type HmacSha256 = Hmac<Sha256>;

/// The longest token [`KeyRing::verify`] reads; longer input is refused before decoding.
/// Every token [`KeyRing::mint`] makes is shorter (at most 1,490 bytes).
pub const MAX_TOKEN_LEN: usize = 2048;
/// The longest subject, in UTF-8 bytes.
pub const MAX_SUBJECT_LEN: usize = 1024;
/// The shortest key secret accepted, in bytes (HMAC-SHA256 gains nothing past 64).
pub const MIN_SECRET_LEN: usize = 32;
/// The longest lifetime [`KeyRing::mint`] accepts: 400 days, the longest browsers keep a cookie.
pub const MAX_TTL: Duration = Duration::from_secs(400 * 86_400);

/// Clock skew tolerated between a minter and the verifier for the [`MAX_TTL`] check.
const CLOCK_SKEW_SECS: u64 = 300;
/// The v1 format: no token id.
const DOMAIN_V1: &[u8] = b"ztgate-hmac-v1";
const PREFIX_V1: &str = "v1.";
/// The v2 format: a token id between the expiry and the subject, and in the MAC.
const DOMAIN_V2: &[u8] = b"ztgate-hmac-v2";
const PREFIX_V2: &str = "v2.";
/// base64url without padding of [`TokenId::LEN`] bytes.
const TOKEN_ID_B64_LEN: usize = 22;
const MAC_LEN: usize = 32;
/// base64url without padding of [`MAC_LEN`] bytes.
const MAC_B64_LEN: usize = 43;
/// base64url without padding of [`MAX_SUBJECT_LEN`] bytes.
const MAX_SUBJECT_B64_LEN: usize = (MAX_SUBJECT_LEN * 4).div_ceil(3);
const MAX_KID_LEN: usize = 32;
const MAX_PURPOSE_LEN: usize = 64;
const MAX_EXPIRY_DIGITS: usize = 20;
const SETTING: &str = "hmac_keys";

/// One signing key: a key id and a secret of at least [`MIN_SECRET_LEN`] bytes.
///
/// `Debug` shows the key id only.
#[derive(Clone)]
pub struct HmacKey {
    kid: String,
    /// HMAC state with the key already absorbed: verifying clones it instead of hashing the
    /// key again. It is key material, like the secret it came from.
    keyed: HmacSha256,
}

impl HmacKey {
    /// A key named `kid` (`[A-Za-z0-9_-]{1,32}`; it is written into every token it signs).
    ///
    /// The error names the setting `hmac_keys` and never repeats the input: a secret pasted
    /// into the wrong place must not end up in a log.
    pub fn new(kid: impl Into<String>, secret: Secret) -> Result<Self, ConfigError> {
        let kid = kid.into();
        Self::checked(kid, &secret).map_err(|why| ConfigError::new(SETTING, why))
    }

    fn checked(kid: String, secret: &Secret) -> Result<Self, &'static str> {
        if !is_kid(&kid) {
            return Err("a key id must be 1 to 32 characters of A-Z a-z 0-9 _ -");
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err("a key secret must be at least 32 bytes");
        }
        let keyed = HmacSha256::new_from_slice(secret.expose()).map_err(|_| "unusable key secret")?;
        Ok(Self { kid, keyed })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// The keys tokens are minted and verified with: the first signs, all verify.
///
/// To rotate: put the new key first and keep the old one second until the longest-lived token
/// it signed has expired, then remove it. `Debug` shows the key ids only.
#[derive(Clone)]
pub struct KeyRing {
    /// Never empty; `keys[0]` signs.
    keys: Vec<HmacKey>,
}

impl KeyRing {
    /// A ring of `keys`, the first of which signs. Refuses an empty list and duplicate key ids
    /// (naming keys by position, from 1).
    pub fn new(keys: Vec<HmacKey>) -> Result<Self, ConfigError> {
        if keys.is_empty() {
            return Err(ConfigError::new(SETTING, "at least one key is required"));
        }
        for (i, key) in keys.iter().enumerate() {
            if let Some(j) = keys[..i].iter().position(|earlier| earlier.kid == key.kid) {
                let why = format!("keys {} and {} have the same key id", j + 1, i + 1);
                return Err(ConfigError::new(SETTING, why));
            }
        }
        Ok(Self { keys })
    }

    /// Reads the `ZTGATE_HMAC_KEYS` format: `kid:secret` entries separated by commas, the
    /// signing key first, e.g. `2025-06:<secret>,2025-01:<older secret>`.
    ///
    /// Each secret is the UTF-8 bytes after the first `:` of its entry (so it may contain `:`
    /// but not `,`). Whitespace around an entry is removed (a trailing newline from a secrets
    /// file is harmless); empty entries are refused. Errors name the entry by position and
    /// never repeat its text.
    pub fn parse(spec: &str) -> Result<Self, ConfigError> {
        let mut keys = Vec::new();
        for (i, entry) in spec.split(',').enumerate() {
            let at = |why: &str| ConfigError::new(SETTING, format!("entry {}: {why}", i + 1));
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(at("empty (expected kid:secret, comma-separated)"));
            }
            let (kid, secret) =
                entry.split_once(':').ok_or_else(|| at("no ':' between key id and secret"))?;
            keys.push(HmacKey::checked(kid.to_owned(), &Secret::from(secret)).map_err(at)?);
        }
        Self::new(keys)
    }

    /// A ring of one fresh random 32-byte key with key id `random`, from the operating
    /// system's CSPRNG. For dev mode and tests only: tokens die with the process, and a fleet
    /// would not share the key. Production sets keys explicitly with [`KeyRing::parse`].
    #[cfg(feature = "dev")]
    pub fn random() -> Result<Self, ConfigError> {
        let mut secret = [0u8; MIN_SECRET_LEN];
        aws_lc_rs::rand::fill(&mut secret)
            .map_err(|_| ConfigError::new(SETTING, "the system random number generator failed"))?;
        Self::new(vec![HmacKey::new("random", Secret::new(secret))?])
    }

    /// The key ids, the signing key first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    /// Mints a v2 token for `subject` (non-empty, at most [`MAX_SUBJECT_LEN`] bytes, no control
    /// character or line break: see [`MintError::ControlCharacterInSubject`]), valid for
    /// `purpose` (`[A-Za-z0-9_.:-]{1,64}`) from `now` until `now + ttl`, signed with the
    /// first key, with a fresh random [`TokenId`] (16 bytes from the operating system's
    /// CSPRNG: [`TokenId::random`]).
    ///
    /// `ttl` counts whole seconds and must be between one second and [`MAX_TTL`]. The subject
    /// and the id are readable by whoever holds the token (it is signed, not encrypted). To know
    /// the id without verifying the token again (to record it next to the subject, say), make
    /// it first with [`TokenId::random`] and mint with [`KeyRing::mint_with_id`].
    pub fn mint(&self, purpose: &str, subject: &str, now: u64, ttl: Duration) -> Result<String, MintError> {
        // The arguments are checked before the random source is asked.
        check_mint_args(purpose, subject, now, ttl)?;
        self.mint_with_id(purpose, subject, now, ttl, TokenId::random()?)
    }

    /// Like [`KeyRing::mint`], with the token id `id` instead of a fresh random one.
    ///
    /// Ids must be unique: a revocation names an id, and refuses every token that carries it.
    /// Make them with [`TokenId::random`] (never a counter, a hash of the subject, or an id
    /// reused from another token); a fixed id is for test vectors.
    pub fn mint_with_id(
        &self,
        purpose: &str,
        subject: &str,
        now: u64,
        ttl: Duration,
        id: TokenId,
    ) -> Result<String, MintError> {
        let expires_at = check_mint_args(purpose, subject, now, ttl)?.to_string();
        let key = &self.keys[0];
        let id = id.to_string();
        let mac = mac_over(key, purpose, &expires_at, Some(&id), subject.as_bytes()).finalize().into_bytes();

        let len =
            PREFIX_V2.len() + key.kid.len() + expires_at.len() + id.len() + subject.len().div_ceil(3) * 4;
        let mut token = String::with_capacity(len + MAC_B64_LEN + 4);
        token.push_str(PREFIX_V2);
        token.push_str(&key.kid);
        token.push('.');
        token.push_str(&expires_at);
        token.push('.');
        token.push_str(&id);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(subject, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(mac, &mut token);
        Ok(token)
    }

    /// Verifies `token` (v2, or v1 from an earlier minter) for `purpose` at `now` (Unix
    /// seconds), in the order the [module docs](self) give.
    pub fn verify(&self, token: &str, purpose: &str, now: u64) -> Result<SignedToken, HmacTokenError> {
        if !is_purpose(purpose) {
            return Err(HmacTokenError::InvalidPurpose);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(HmacTokenError::TooLong);
        }
        let parts = Parts::parse(token)?;
        let key = self.keys.iter().find(|k| k.kid == parts.kid).ok_or(HmacTokenError::UnknownKey)?;
        // `verify_slice` compares in constant time.
        mac_over(key, purpose, parts.expiry, parts.id, parts.subject.as_bytes())
            .verify_slice(&parts.mac)
            .map_err(|_| HmacTokenError::BadSignature)?;
        if now >= parts.expires_at {
            return Err(HmacTokenError::Expired);
        }
        if parts.expires_at - now > MAX_TTL.as_secs() + CLOCK_SKEW_SECS {
            return Err(HmacTokenError::ExpiryTooFar);
        }
        Ok(SignedToken {
            subject: parts.subject,
            purpose: purpose.to_owned(),
            expires_at: parts.expires_at,
            kid: key.kid.clone(),
            id: parts.id.map(str::to_owned),
        })
    }
}

/// The checks of [`KeyRing::mint`] that need no key and no randomness; the expiry.
fn check_mint_args(purpose: &str, subject: &str, now: u64, ttl: Duration) -> Result<u64, MintError> {
    if !is_purpose(purpose) {
        return Err(MintError::InvalidPurpose);
    }
    if subject.is_empty() {
        return Err(MintError::EmptySubject);
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(MintError::SubjectTooLong);
    }
    if subject.chars().any(breaks_lines) {
        return Err(MintError::ControlCharacterInSubject);
    }
    if ttl.as_secs() == 0 || ttl > MAX_TTL {
        return Err(MintError::TtlOutOfRange);
    }
    now.checked_add(ttl.as_secs()).ok_or(MintError::TtlOutOfRange)
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing").field("kids", &self.kids().collect::<Vec<_>>()).finish()
    }
}

/// What a verified token proves.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignedToken {
    /// Who or what the token was minted for, e.g. an email address.
    pub subject: String,
    /// The purpose it was verified for (the MAC binds it).
    pub purpose: String,
    /// When it expires, in Unix seconds.
    pub expires_at: u64,
    /// The key that signed it (to see how many live tokens an old key still carries).
    pub kid: String,
    /// The token's id ([`TokenId`], as its 22 characters of base64url): what
    /// [`RevocationKind::HmacToken`](super::shared_state::RevocationKind::HmacToken) revokes.
    /// `None` for a v1 token, which has no id (revoke those by removing their key from the ring).
    pub id: Option<String>,
}

/// The id of a v2 token: 16 bytes, written in the token (and compared, and revoked) as 22
/// characters of canonical base64url without padding.
///
/// [`KeyRing::mint`] takes 16 fresh bytes from the operating system's CSPRNG for every token
/// ([`TokenId::random`]), so ids are unique without any coordination between minters: two equal
/// ids among 2^48 tokens have a chance of about 2^-33. An id is not a secret (whoever holds the
/// token can read it, and it proves nothing without the MAC); it names one token, so that token
/// can be revoked while the subject's others keep working. `Display` gives the 22 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId([u8; TokenId::LEN]);

impl TokenId {
    /// The length of an id in bytes.
    pub const LEN: usize = 16;

    /// A fresh id: 16 bytes from the operating system's CSPRNG (`getrandom(2)` and its
    /// counterparts natively, `crypto.getRandomValues` in Workers). Fails only when the
    /// platform has no random source to give.
    pub fn random() -> Result<Self, MintError> {
        let mut bytes = [0u8; Self::LEN];
        getrandom::getrandom(&mut bytes).map_err(|_| MintError::RandomUnavailable)?;
        Ok(Self(bytes))
    }

    /// The id made of these bytes (for test vectors; see [`KeyRing::mint_with_id`]).
    pub const fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    /// The id written as `text`: exactly 22 characters of canonical base64url (the form
    /// `Display` gives and tokens carry); anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut bytes = [0u8; Self::LEN];
        let canonical = text.len() == TOKEN_ID_B64_LEN
            && URL_SAFE_NO_PAD.decode_slice(text, &mut bytes).is_ok_and(|written| written == Self::LEN);
        canonical.then_some(Self(bytes))
    }

    /// The id's bytes.
    pub const fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; TOKEN_ID_B64_LEN];
        let written = URL_SAFE_NO_PAD.encode_slice(self.0, &mut text).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&text[..written]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

/// Why a token was refused. `Display` is for people; no variant carries token bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HmacTokenError {
    /// The purpose passed to [`KeyRing::verify`] is not `[A-Za-z0-9_.:-]{1,64}`: a caller bug.
    InvalidPurpose,
    /// Longer than [`MAX_TOKEN_LEN`]; refused without decoding.
    TooLong,
    /// Not a strictly formed v2 or v1 token; says which part is wrong.
    Malformed(&'static str),
    /// The key id is not in the ring (never was, or was rotated out).
    UnknownKey,
    /// The MAC does not match: forged, tampered with, or minted for another purpose.
    BadSignature,
    /// The expiry has passed.
    Expired,
    /// The expiry is more than [`MAX_TTL`] away: a minter bug (milliseconds for seconds?).
    ExpiryTooFar,
}

impl HmacTokenError {
    /// A short reason for people, the same as `Display`.
    fn reason(self) -> &'static str {
        match self {
            Self::InvalidPurpose => "the expected purpose is not a valid purpose",
            Self::TooLong => "token is too long",
            Self::Malformed(what) => what,
            Self::UnknownKey => "token is signed with an unknown key",
            Self::BadSignature => "token signature is invalid",
            Self::Expired => "token has expired",
            Self::ExpiryTooFar => "token expiry is too far in the future",
        }
    }
}

impl fmt::Display for HmacTokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(what) => write!(f, "malformed token: {what}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for HmacTokenError {}

impl From<HmacTokenError> for Rejection {
    /// A 401 `invalid_credential` with mechanism `signed_token`, the name the mechanism, its
    /// proofs and its logs use.
    fn from(e: HmacTokenError) -> Self {
        Self::InvalidCredential { mechanism: SignedTokenAuth::NAME, reason: e.reason() }
    }
}

/// Why [`KeyRing::mint`] refused to mint: a bug in the caller, or (for the subject) input the
/// caller should have refused; a server that mints for a client-chosen subject answers 400 for
/// [`EmptySubject`](Self::EmptySubject), [`SubjectTooLong`](Self::SubjectTooLong) and
/// [`ControlCharacterInSubject`](Self::ControlCharacterInSubject).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MintError {
    /// The purpose is not `[A-Za-z0-9_.:-]{1,64}`.
    InvalidPurpose,
    /// The subject is empty: a token must say whom it is for.
    EmptySubject,
    /// The subject is longer than [`MAX_SUBJECT_LEN`] bytes.
    SubjectTooLong,
    /// The subject contains a control character (Unicode category Cc: U+0000 to U+001F, U+007F
    /// to U+009F, so `\n`, `\r`, tab, NUL and ESC) or a line or paragraph separator (U+2028,
    /// U+2029). A subject is an email address or an id; one with a line break in it is an
    /// attempt to forge log lines or headers wherever it is written later.
    ControlCharacterInSubject,
    /// The lifetime is under one second or over [`MAX_TTL`].
    TtlOutOfRange,
    /// The operating system's random number generator gave no bytes for the token id: nothing
    /// was minted (a token id is never made up from anything weaker).
    RandomUnavailable,
}

impl fmt::Display for MintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidPurpose => "purpose must be 1 to 64 characters of A-Z a-z 0-9 _ . : -",
            Self::EmptySubject => "subject must not be empty",
            Self::SubjectTooLong => "subject is longer than 1024 bytes",
            Self::ControlCharacterInSubject => "subject must not contain control characters or line breaks",
            Self::TtlOutOfRange => "lifetime must be between 1 second and 400 days",
            Self::RandomUnavailable => "the system random number generator failed",
        })
    }
}

impl std::error::Error for MintError {}

/// A strictly parsed token, not yet authenticated.
struct Parts<'a> {
    kid: &'a str,
    /// The expiry exactly as written (canonical decimal), for the MAC input.
    expiry: &'a str,
    expires_at: u64,
    /// v2: the token id exactly as written (22 characters of canonical base64url), for the MAC
    /// input. v1: `None`.
    id: Option<&'a str>,
    subject: String,
    mac: [u8; MAC_LEN],
}

impl<'a> Parts<'a> {
    fn parse(token: &'a str) -> Result<Self, HmacTokenError> {
        use HmacTokenError::Malformed;

        let (v2, rest) = match (token.strip_prefix(PREFIX_V2), token.strip_prefix(PREFIX_V1)) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => return Err(Malformed("not a v2 or v1 token")),
        };
        let shape = Malformed(if v2 {
            "expected v2.kid.expiry.id.subject.mac"
        } else {
            "expected v1.kid.expiry.subject.mac"
        });
        // The MAC has a fixed length and the key id, expiry and token id are short, so the dots
        // are found without scanning the subject; a dot anywhere else fails base64url decoding.
        let head_len = rest.len().checked_sub(MAC_B64_LEN + 1).ok_or(shape)?;
        if rest.as_bytes()[head_len] != b'.' {
            return Err(shape);
        }
        let (head, mac) = (&rest[..head_len], &rest[head_len + 1..]);
        let (kid, head) = split_at_dot(head, MAX_KID_LEN).ok_or(shape)?;
        let (expiry, head) = split_at_dot(head, MAX_EXPIRY_DIGITS).ok_or(shape)?;
        let (id, subject) = if v2 {
            let (id, subject) = split_at_dot(head, TOKEN_ID_B64_LEN).ok_or(shape)?;
            (Some(id), subject)
        } else {
            (None, head)
        };
        if !is_kid(kid) {
            return Err(Malformed("invalid key id"));
        }
        let expires_at = parse_expiry(expiry).ok_or(Malformed("expiry is not a canonical decimal"))?;
        if id.is_some_and(|id| TokenId::parse(id).is_none()) {
            return Err(Malformed("token id is not 16 bytes of canonical base64url"));
        }

        if subject.is_empty() {
            return Err(Malformed("empty subject"));
        }
        if subject.len() > MAX_SUBJECT_B64_LEN {
            return Err(Malformed("subject is too long"));
        }
        let subject =
            URL_SAFE_NO_PAD.decode(subject).map_err(|_| Malformed("subject is not canonical base64url"))?;
        let subject = String::from_utf8(subject).map_err(|_| Malformed("subject is not UTF-8"))?;

        let mut tag = [0u8; MAC_LEN];
        if mac.len() != MAC_B64_LEN
            || !URL_SAFE_NO_PAD.decode_slice(mac, &mut tag).is_ok_and(|written| written == MAC_LEN)
        {
            return Err(Malformed("MAC is not 32 bytes of canonical base64url"));
        }
        Ok(Self { kid, expiry, expires_at, id, subject, mac: tag })
    }
}

/// The keyed MAC of a v2 token (`id` is its token id) or of a v1 token (`id` is `None`):
///
/// - v2: `"ztgate-hmac-v2" 0x00 kid 0x00 purpose 0x00 expiry 0x00 id 0x00 subject`;
/// - v1: `"ztgate-hmac-v1" 0x00 kid 0x00 purpose 0x00 expiry 0x00 subject`.
///
/// Only the last field may contain 0x00 (the others are validated), so each input is
/// unambiguous, and the domain strings keep the two versions apart: a v1 subject that
/// contains `id 0x00 subject` still has a MAC input that starts with `ztgate-hmac-v1`.
fn mac_over(key: &HmacKey, purpose: &str, expiry: &str, id: Option<&str>, subject: &[u8]) -> HmacSha256 {
    let mut mac = key.keyed.clone();
    let domain = if id.is_some() { DOMAIN_V2 } else { DOMAIN_V1 };
    for field in [domain, key.kid.as_bytes(), purpose.as_bytes(), expiry.as_bytes()] {
        mac.update(field);
        mac.update(&[0]);
    }
    if let Some(id) = id {
        mac.update(id.as_bytes());
        mac.update(&[0]);
    }
    mac.update(subject);
    mac
}

/// Splits `s` at a `.` among its first `max + 1` bytes.
fn split_at_dot(s: &str, max: usize) -> Option<(&str, &str)> {
    // A slice, not `bytes().take(..)`: the take-adaptor's loop kept its count in memory and was
    // a tenth of a whole verification (perf annotate).
    let window = &s.as_bytes()[..s.len().min(max.saturating_add(1))];
    let dot = window.iter().position(|&b| b == b'.')?;
    Some((&s[..dot], &s[dot + 1..]))
}

/// A control character (Cc) or a Unicode line or paragraph separator: refused in subjects.
fn breaks_lines(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// `[A-Za-z0-9_-]{1,32}`.
fn is_kid(s: &str) -> bool {
    (1..=MAX_KID_LEN).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `[A-Za-z0-9_.:-]{1,64}`.
fn is_purpose(s: &str) -> bool {
    (1..=MAX_PURPOSE_LEN).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// `0` or `[1-9][0-9]*` that fits a `u64`; nothing else (no sign, space or leading zero).
fn parse_expiry(s: &str) -> Option<u64> {
    let bytes = s.as_bytes();
    if bytes.is_empty() || (bytes[0] == b'0' && bytes.len() > 1) {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// The longest key ring text a [`KeyRingSource`] parses (64 KiB, thousands of keys).
const MAX_RING_SPEC_BYTES: usize = 64 * 1024;

/// A [`KeyRing`] that rotates without a restart: read from a [`SecretSource`] holding the
/// [`KeyRing::parse`] text (`kid:secret,kid:secret`, the signing key first), and read again at
/// most once per `ttl`.
///
/// To rotate, change what the source holds (rewrite the file of a
/// [`FileSecret`](crate::secrets::FileSecret), update the secret in the store): within `ttl`
/// the new first key signs, and every key still listed keeps verifying the links it signed.
///
/// Failing closed, but not falling over:
/// - a read that fails, or text that does not parse as a ring, **keeps the last good ring**
///   and logs a warning (`hmac_keys_reload_failed`, with the reason, never the text); it is
///   tried again after `ttl`. A half-written file or a store outage does not take every link
///   down;
/// - with **no good ring yet** (the source has never held a valid one), [`KeyRingSource::ring`]
///   fails, and [`SignedTokenAuth`] refuses every token (503 `not_configured`); the source is
///   asked again on the next request.
///
/// When the ring is stale, one request re-reads the source while the others go on with the
/// last good ring, so a slow store is asked once per `ttl`, not once per request. A new ring is
/// logged (`hmac_keys_loaded`, with the key ids only).
pub struct KeyRingSource {
    source: Box<dyn SecretSource>,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    state: Mutex<RingState>,
    /// A re-read of a stale ring is in flight.
    refreshing: AtomicBool,
}

#[derive(Default)]
struct RingState {
    /// The last good ring and the text it was parsed from.
    good: Option<(Arc<KeyRing>, Secret)>,
    /// When the source was last read (successfully or not, while a good ring exists).
    read_at: u64,
}

impl fmt::Debug for KeyRingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("KeyRingSource")
            .field("source", &self.source)
            .field("ttl", &self.ttl)
            .field("ring", &state.good.as_ref().map(|(ring, _)| ring))
            .finish()
    }
}

/// Resets the refresh flag however the refreshing future ends (completed or dropped).
struct Refreshing<'a>(&'a AtomicBool);

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl KeyRingSource {
    /// The ring `source` holds, read on first use and then at most once per `ttl` (e.g. 60 s;
    /// whole seconds, timed by `clock`).
    pub fn new(source: impl SecretSource, ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            source: Box::new(source),
            ttl,
            clock,
            state: Mutex::new(RingState::default()),
            refreshing: AtomicBool::new(false),
        }
    }

    /// Like [`KeyRingSource::new`], reading the source now: a program refuses to start when its
    /// key ring is missing or invalid, rather than answering 503 later. The error names the
    /// setting `hmac_keys` and never repeats the text.
    pub async fn load(
        source: impl SecretSource,
        ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        let ring = Self::new(source, ttl, clock);
        ring.ring().await?;
        Ok(ring)
    }

    /// The current ring: the last one read while fresh, else the source's value now (or, if
    /// that fails, the last good ring). Fails only when the source has never held a valid ring.
    pub async fn ring(&self) -> Result<Arc<KeyRing>, ConfigError> {
        let now = self.clock.now();
        let last_good = {
            let state = self.lock();
            let fresh = now >= state.read_at && now - state.read_at < self.ttl.as_secs();
            match &state.good {
                Some((ring, _)) if fresh => return Ok(ring.clone()),
                good => good.as_ref().map(|(ring, _)| ring.clone()),
            }
        };
        // Stale. While a good ring exists, one caller re-reads and the others use it meanwhile.
        let _refreshing = match &last_good {
            Some(ring) if self.refreshing.swap(true, Ordering::AcqRel) => return Ok(ring.clone()),
            Some(_) => Some(Refreshing(&self.refreshing)),
            None => None,
        };
        let read = self.source.get().await;
        let mut state = self.lock();
        match read.map_err(|e| unreadable(&e)).and_then(|text| Self::parse(&state, text)) {
            Ok(Parsed::New(ring, text)) => {
                tracing::info!(
                    layer = "identity",
                    outcome = "hmac_keys_loaded",
                    kids = ?ring.kids().collect::<Vec<_>>(),
                );
                state.good = Some((ring.clone(), text));
                state.read_at = now;
                Ok(ring)
            }
            Ok(Parsed::Unchanged(ring)) => {
                state.read_at = now;
                Ok(ring)
            }
            Err(e) => {
                tracing::warn!(
                    layer = "identity",
                    outcome = "hmac_keys_reload_failed",
                    kept_last_good = state.good.is_some(),
                    error = ?e.to_string(),
                );
                let kept = state.good.as_ref().map(|(ring, _)| ring.clone()).ok_or(e)?;
                // Tried again after the TTL, not on every request.
                state.read_at = now;
                Ok(kept)
            }
        }
    }

    /// The ring `text` holds: the one in use if the text is unchanged, else parsed anew.
    fn parse(state: &RingState, text: Secret) -> Result<Parsed, ConfigError> {
        if let Some((ring, current)) = &state.good
            && *current == text
        {
            return Ok(Parsed::Unchanged(ring.clone()));
        }
        if text.len() > MAX_RING_SPEC_BYTES {
            return Err(ConfigError::new(
                SETTING,
                format!("the key ring is longer than {MAX_RING_SPEC_BYTES} bytes"),
            ));
        }
        let spec = std::str::from_utf8(text.expose())
            .map_err(|_| ConfigError::new(SETTING, "the key ring is not UTF-8"))?;
        let ring = KeyRing::parse(spec)?;
        Ok(Parsed::New(Arc::new(ring), text))
    }

    /// The ring as last read successfully, without reading the source.
    fn last_good(&self) -> Option<Arc<KeyRing>> {
        self.lock().good.as_ref().map(|(ring, _)| ring.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RingState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a read of the source held.
enum Parsed {
    /// The text of the ring in use.
    Unchanged(Arc<KeyRing>),
    /// A new valid ring, and the text it came from.
    New(Arc<KeyRing>, Secret),
}

fn unreadable(e: &SecretError) -> ConfigError {
    ConfigError::new(SETTING, format!("the key ring could not be read: {e}"))
}

/// Where a [`SignedTokenAuth`] finds its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// A query parameter, e.g. `?token=...` in an unsubscribe link.
    Query(String),
    /// A cookie, e.g. a session cookie.
    Cookie(String),
}

/// HMAC-signed tokens (see the [module docs](self)) as a mechanism, for one purpose, read from a
/// query parameter or a cookie. A token for another purpose, expired, forged or from a
/// rotated-out key is refused (401).
#[derive(Clone, Debug)]
pub struct SignedTokenAuth {
    ring: Ring,
    purpose: String,
    source: TokenSource,
    clock: Arc<dyn Clock>,
}

/// The keys a [`SignedTokenAuth`] verifies with.
#[derive(Clone, Debug)]
enum Ring {
    Fixed(Arc<KeyRing>),
    Rotating(Arc<KeyRingSource>),
}

impl SignedTokenAuth {
    /// The mechanism's name, in proofs, logs and rejections (and [`Principal::kind`] of what it
    /// proves).
    pub const NAME: &'static str = "signed_token";

    /// Tokens minted by `ring` for `purpose`, found at `source`, checked against `clock`.
    pub fn new(
        ring: Arc<KeyRing>,
        purpose: impl Into<String>,
        source: TokenSource,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { ring: Ring::Fixed(ring), purpose: purpose.into(), source, clock }
    }

    /// Like [`SignedTokenAuth::new`], with the keys of `ring`, which rotate without a restart
    /// (mint with the same [`KeyRingSource`], so new tokens are signed by its current first
    /// key). While `ring` has never held a valid key ring, every token is refused with 503
    /// `not_configured`.
    pub fn from_source(
        ring: Arc<KeyRingSource>,
        purpose: impl Into<String>,
        source: TokenSource,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { ring: Ring::Rotating(ring), purpose: purpose.into(), source, clock }
    }

    fn verify<C>(&self, ring: &KeyRing, token: &str) -> Attempt<C> {
        match ring.verify(token, &self.purpose, self.clock.now()) {
            Ok(t) => Attempt::Verified(Principal::SignedToken(SignedTokenPrincipal {
                subject: t.subject,
                purpose: t.purpose,
                expires_at: t.expires_at,
                id: t.id,
                kid: t.kid,
            })),
            Err(e) => Attempt::Refused(e.into()),
        }
    }
}

impl<C: Send + Sync + 'static> Mechanism<C> for SignedTokenAuth {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn attempt<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Attempt<C>> {
        let found = match &self.source {
            TokenSource::Query(name) => facts.query_param(name),
            TokenSource::Cookie(name) => facts.cookie(name),
        };
        let token = match found {
            Err(e) => return Box::pin(std::future::ready(Attempt::Refused(Rejection::Request(e)))),
            Ok(None) => return Box::pin(std::future::ready(Attempt::NotPresent)),
            Ok(Some(token)) => token,
        };
        match &self.ring {
            Ring::Fixed(ring) => Box::pin(std::future::ready(self.verify(ring, token.expose()))),
            Ring::Rotating(source) => Box::pin(async move {
                match source.ring().await {
                    Ok(ring) => self.verify(&ring, token.expose()),
                    // Logged by the source; no ring has ever been good.
                    Err(_) => Attempt::Refused(Rejection::NotConfigured { what: "HMAC key ring" }),
                }
            }),
        }
    }

    /// The token was minted for this mechanism's purpose (403 if the route now wants
    /// another), and the key that signed it is still in the ring (401 once it was removed). A
    /// rotating ring is asked as last read, without reading its source again.
    fn readmit(&self, principal: &Principal<C>, _now: u64) -> Result<(), Rejection> {
        let Principal::SignedToken(token) = principal else { return Err(Rejection::Forbidden) };
        if token.purpose != self.purpose {
            return Err(Rejection::Forbidden);
        }
        let ring = match &self.ring {
            Ring::Fixed(ring) => Some(ring.clone()),
            Ring::Rotating(source) => source.last_good(),
        };
        if ring.is_some_and(|ring| ring.kids().any(|kid| kid == token.kid)) {
            Ok(())
        } else {
            Err(Rejection::InvalidCredential { mechanism: Self::NAME, reason: "the signing key was removed" })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_must_be_canonical_decimal() {
        assert_eq!(parse_expiry("0"), Some(0));
        assert_eq!(parse_expiry("1700000000"), Some(1_700_000_000));
        assert_eq!(parse_expiry("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "01", "00", "+1", "-1", " 1", "1 ", "1_0", "١", "18446744073709551616", "1e9"] {
            assert_eq!(parse_expiry(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_base64_engine_is_strict() {
        // Canonical: 0x00 0x00 → "AAA". A set trailing bit ("AAB") and padding are refused.
        assert_eq!(URL_SAFE_NO_PAD.decode("AAA").unwrap(), [0, 0]);
        assert!(URL_SAFE_NO_PAD.decode("AAB").is_err());
        assert!(URL_SAFE_NO_PAD.decode("AA==").is_err());
        assert!(URL_SAFE_NO_PAD.decode("+/8").is_err());
        assert_eq!(URL_SAFE_NO_PAD.decode("-_8").unwrap(), [0xfb, 0xff]);
        assert!(URL_SAFE_NO_PAD.decode("AA A").is_err());
    }

    #[test]
    fn max_lengths_add_up() {
        assert_eq!(MAX_SUBJECT_B64_LEN, 1366);
        assert_eq!(TOKEN_ID_B64_LEN, (TokenId::LEN * 4).div_ceil(3));
        let longest_v1 =
            PREFIX_V1.len() + MAX_KID_LEN + MAX_EXPIRY_DIGITS + MAX_SUBJECT_B64_LEN + MAC_B64_LEN + 3;
        assert_eq!(longest_v1, 1467);
        let longest_v2 = PREFIX_V2.len()
            + MAX_KID_LEN
            + MAX_EXPIRY_DIGITS
            + TOKEN_ID_B64_LEN
            + MAX_SUBJECT_B64_LEN
            + MAC_B64_LEN
            + 4;
        assert_eq!(longest_v2, 1490);
        assert!(longest_v2 <= MAX_TOKEN_LEN);
    }

    #[test]
    fn token_ids_are_22_canonical_characters() {
        let id = TokenId::from_bytes([0xfb; 16]);
        assert_eq!(id.to_string(), "-_v7-_v7-_v7-_v7-_v7-w");
        assert_eq!(TokenId::parse(&id.to_string()), Some(id));
        assert_eq!(format!("{id:?}"), "TokenId(-_v7-_v7-_v7-_v7-_v7-w)");
        assert_eq!(TokenId::from_bytes([0; 16]).to_string(), "A".repeat(22));
        // One character short or long, stray bits in the last one, padding, the standard
        // alphabet, a dot: refused.
        for bad in [
            "A".repeat(21),
            "A".repeat(23),
            format!("{}B", "A".repeat(21)),
            format!("{}==", "A".repeat(22)),
            "+/v7-_v7-_v7-_v7-_v7-w".to_owned(),
            format!("{}.", "A".repeat(21)),
            String::new(),
        ] {
            assert_eq!(TokenId::parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn charsets() {
        assert!(is_kid("2025-06_a") && !is_kid("") && !is_kid("a.b") && !is_kid(&"k".repeat(33)));
        assert!(is_purpose("email.verify:v2") && !is_purpose("a/b") && !is_purpose("a\0b"));
        for c in ['\n', '\r', '\t', '\0', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}', '\u{2028}', '\u{2029}'] {
            assert!(breaks_lines(c), "{c:?}");
        }
        for c in [' ', 'a', '@', 'é', '\u{a0}', '\u{200b}'] {
            assert!(!breaks_lines(c), "{c:?}");
        }
    }
}
