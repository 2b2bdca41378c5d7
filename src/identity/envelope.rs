//! Signed envelopes: a message body with the proof of who sent it, for transports that carry
//! no request to authenticate (a queue, say). A producer holding the key ring seals the body;
//! the consumer opens the envelope, and only then hands the body to storage, with a
//! [`Verified`] principal beside it.
//!
//! ```text
//! {"token": "<v2 HMAC token>", "body": "<the message, any text>"}
//! token = KeyRing::mint_with_id(purpose = "queue:<queue name>",
//!                               subject = lowercase hex SHA-256 of the body's UTF-8 bytes,
//!                               ttl, a fresh TokenId)
//! ```
//!
//! The token is an ordinary v2 HMAC-signed token (`docs/hmac-token-format.md`), so the MAC
//! covers the key id, the purpose (the queue's name: an envelope for one queue is a forgery on
//! another), the expiry, the token id and the body's digest. The body is a string (often JSON
//! text) rather than a JSON value, so the digest is over exactly the bytes that were signed,
//! with no canonical form of JSON to agree on.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use ztgate::identity::envelope::{EnvelopeError, EnvelopeVerifier, InMemoryClaims, sign_envelope};
//! use ztgate::identity::hmac_token::KeyRing;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let ring = Arc::new(KeyRing::parse("q1:example-only-queue-key-at-least-32-bytes")?);
//! let now = 1_700_000_000; // from a `ztgate::clock::Clock`
//!
//! // The producer.
//! let envelope = sign_envelope(&ring, "orders", r#"{"order":42}"#, now, Duration::from_secs(3600))?;
//!
//! // The consumer: the queue's name, the key ring, the claims every consumer shares.
//! let verifier = EnvelopeVerifier::new(ring, "orders", Arc::new(InMemoryClaims::default()))?;
//! let opened = verifier.verify(&envelope, "message-id-1", now + 5).await?;
//! assert_eq!(opened.body(), r#"{"order":42}"#);
//! assert_eq!(opened.principal().kind(), "signed_token");
//! // The same envelope in another message: a replay.
//! let again = verifier.verify(&envelope, "message-id-2", now + 6).await;
//! assert!(matches!(again, Err(EnvelopeError::Replayed)));
//! # Ok(())
//! # }
//! ```
//!
//! ## The checks, in order
//!
//! 1. the envelope is at most [`MAX_ENVELOPE_BYTES`] (before anything is parsed), and the
//!    delivery id is 1 to [`MAX_DELIVERY_ID_LEN`] bytes of printable ASCII;
//! 2. strict JSON: one object with exactly the members `token` and `body`, both strings;
//! 3. the token verifies ([`KeyRing::verify`]) for purpose `queue:<name>` now: key, MAC
//!    (constant time), expiry; it is a v2 token (it has an id);
//! 4. its subject equals the SHA-256 of the body, compared in constant time;
//! 5. the claim: the token id is claimed once, by one delivery (below).
//!
//! Everything before step 5 is pure, so no envelope that fails a check reaches the claim
//! store: garbage cannot fill it.
//!
//! ## Replays and redeliveries
//!
//! A queue delivers *at least once*, and a consumer asks for a message to be retried when its
//! storage step fails: the same message, with the same envelope, comes back. That is not a
//! replay. A replay is the same envelope in *another* message (someone with write access to
//! the queue sent a captured envelope again). So [`EnvelopeVerifier::verify`] takes the
//! delivery's id, which the queue assigns (Cloudflare Queues: `message.id`, the same on every
//! attempt, and not chosen by whoever sends), and claims `envelope:<purpose>:<token id>` for
//! that delivery until the token's expiry, in one atomic step of an [`EnvelopeClaims`] store:
//!
//! - not claimed yet: it is now, for this delivery ([`Claim::First`]);
//! - claimed by this same delivery: a redelivery, accepted again
//!   ([`OpenedEnvelope::is_redelivery`]);
//! - claimed by another delivery: [`EnvelopeError::Replayed`].
//!
//! A webhook's [`ReplayGuard`](super::webhook::ReplayGuard) (first seen or not) cannot tell
//! the second case from the third: that needs the holder, hence this port. A redelivery is
//! accepted, so the storage step must be idempotent by the envelope's id
//! ([`OpenedEnvelope::id`]): a message stored once and then redelivered by the queue must not
//! be stored twice. A store that cannot answer gives [`EnvelopeError::StoreUnavailable`],
//! which (unlike every other error) is not permanent: retry the message later. A message
//! retried past its token's expiry is refused as expired: give envelopes a lifetime longer
//! than the queue's retries take.
//!
//! The stores: [`InMemoryClaims`] (one instance, tests), Redis for a fleet of native consumers
//! (`RedisStore::envelope_claims` in `ztgate::redis`, feature `redis`) and, at the edge, the
//! shared-state Durable Object (`DurableState::envelope_claims` in `ztgate::workers`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::hmac_token::{HmacTokenError, KeyRing, MintError, TokenId};
use super::webhook::ReplayStoreError;
use crate::BoxFuture;
use crate::error::ConfigError;
use crate::principal::{Principal, Proof, SignedTokenPrincipal, Verified};

/// The largest envelope [`EnvelopeVerifier::verify`] reads, and [`sign_envelope`] makes, in
/// bytes: 128 KB, the most a Cloudflare Queues message holds.
pub const MAX_ENVELOPE_BYTES: usize = 128_000;
/// The longest queue name: `queue:` and the name must fit a purpose (64 characters).
pub const MAX_QUEUE_NAME_LEN: usize = 58;
/// The longest delivery (message) id [`EnvelopeVerifier::verify`] takes, in bytes.
pub const MAX_DELIVERY_ID_LEN: usize = 128;

/// The mechanism named in an opened envelope's proof, and in logs.
const MECHANISM: &str = "signed_envelope";
/// Lowercase hex of a SHA-256 digest.
const DIGEST_HEX_LEN: usize = 64;

/// Seals `body` for the queue named `queue`: a JSON envelope whose token (minted with the
/// first key of `ring`, a fresh random token id, valid from `now` for `ttl`) signs the body's
/// SHA-256 for purpose `queue:<queue>`. Send the returned text as the message.
///
/// Refuses a queue name that is not 1 to [`MAX_QUEUE_NAME_LEN`] characters of
/// `[A-Za-z0-9_.-]`, an envelope that would be larger than [`MAX_ENVELOPE_BYTES`], and
/// whatever [`KeyRing::mint`] refuses (a lifetime out of range, no random source).
pub fn sign_envelope(
    ring: &KeyRing,
    queue: &str,
    body: &str,
    now: u64,
    ttl: Duration,
) -> Result<String, SignEnvelopeError> {
    let purpose = queue_purpose(queue).ok_or(SignEnvelopeError::InvalidQueueName)?;
    // Checked before the digest and the MAC are computed: a body this large cannot fit.
    if body.len() > MAX_ENVELOPE_BYTES {
        return Err(SignEnvelopeError::TooLarge { limit: MAX_ENVELOPE_BYTES });
    }
    let token = ring.mint_with_id(&purpose, &digest_hex(body), now, ttl, TokenId::random()?)?;
    let envelope = serde_json::json!({ "token": token, "body": body }).to_string();
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(SignEnvelopeError::TooLarge { limit: MAX_ENVELOPE_BYTES });
    }
    Ok(envelope)
}

/// Why [`sign_envelope`] made no envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignEnvelopeError {
    /// The queue name is not 1 to [`MAX_QUEUE_NAME_LEN`] characters of `[A-Za-z0-9_.-]`.
    InvalidQueueName,
    /// The envelope would be larger than `limit` bytes.
    TooLarge {
        /// [`MAX_ENVELOPE_BYTES`].
        limit: usize,
    },
    /// The token could not be minted.
    Mint(MintError),
}

impl From<MintError> for SignEnvelopeError {
    fn from(e: MintError) -> Self {
        Self::Mint(e)
    }
}

impl fmt::Display for SignEnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidQueueName => f.write_str("a queue name is 1 to 58 characters of A-Z a-z 0-9 _ . -"),
            Self::TooLarge { limit } => write!(f, "the envelope would be larger than {limit} bytes"),
            Self::Mint(e) => write!(f, "the envelope's token could not be minted: {e}"),
        }
    }
}

impl std::error::Error for SignEnvelopeError {}

/// Opens the envelopes of one queue (see the [module docs](self)): the key ring that signs
/// them, the purpose `queue:<name>`, and the claims every consumer of the queue shares (at the
/// edge, the shared-state Durable Object: `DurableState::envelope_claims` in
/// `ztgate::workers`).
#[derive(Clone, Debug)]
pub struct EnvelopeVerifier {
    ring: Arc<KeyRing>,
    purpose: String,
    claims: Arc<dyn EnvelopeClaims>,
}

impl EnvelopeVerifier {
    /// A verifier for the queue named `queue` (1 to [`MAX_QUEUE_NAME_LEN`] characters of
    /// `[A-Za-z0-9_.-]`; the error names the setting `queue`).
    pub fn new(
        ring: Arc<KeyRing>,
        queue: &str,
        claims: Arc<dyn EnvelopeClaims>,
    ) -> Result<Self, ConfigError> {
        let purpose = queue_purpose(queue).ok_or_else(|| {
            ConfigError::new("queue", "a queue name is 1 to 58 characters of A-Z a-z 0-9 _ . -")
        })?;
        Ok(Self { ring, purpose, claims })
    }

    /// The purpose its tokens are verified for: `queue:<name>`.
    pub fn purpose(&self) -> &str {
        &self.purpose
    }

    /// Opens `envelope`, delivered as the message `delivery` (the queue's id for it), at `now`
    /// (Unix seconds): the checks of the [module docs](self), in that order. Every decision is
    /// logged (`layer = "identity"`, `via = "signed_envelope"`, the error's
    /// [code](EnvelopeError::code)); the body never is.
    pub async fn verify(
        &self,
        envelope: &str,
        delivery: &str,
        now: u64,
    ) -> Result<OpenedEnvelope, EnvelopeError> {
        let outcome = self.open(envelope, delivery, now).await;
        match &outcome {
            Ok(opened) => tracing::info!(
                layer = "identity",
                outcome = "verified",
                via = MECHANISM,
                principal = ?opened.verified.principal().id(),
                redelivery = opened.redelivery,
            ),
            Err(e) => tracing::info!(
                layer = "identity",
                outcome = "refused",
                via = MECHANISM,
                purpose = ?self.purpose,
                code = e.code(),
                reason = ?e.to_string(),
            ),
        }
        outcome
    }

    async fn open(&self, envelope: &str, delivery: &str, now: u64) -> Result<OpenedEnvelope, EnvelopeError> {
        if envelope.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge { limit: MAX_ENVELOPE_BYTES });
        }
        let delivery_ok = (1..=MAX_DELIVERY_ID_LEN).contains(&delivery.len())
            && delivery.bytes().all(|b| b.is_ascii_graphic());
        if !delivery_ok {
            return Err(EnvelopeError::Malformed("the delivery id is not 1 to 128 printable characters"));
        }
        let wire: Wire = serde_json::from_str(envelope).map_err(|_| {
            EnvelopeError::Malformed("not a JSON object of exactly two strings, token and body")
        })?;
        let token = self.ring.verify(&wire.token, &self.purpose, now).map_err(EnvelopeError::from)?;
        let Some(id) = token.id else {
            return Err(EnvelopeError::Malformed("a v1 token has no id to guard against replays"));
        };
        let signed = token.subject.as_bytes();
        let actual = digest_hex(&wire.body);
        if signed.len() != DIGEST_HEX_LEN || !bool::from(signed.ct_eq(actual.as_bytes())) {
            return Err(EnvelopeError::BodyMismatch);
        }

        let key = format!("envelope:{}:{id}", self.purpose);
        let expires_at = token.expires_at;
        let redelivery = match self.claims.claim(&key, delivery, now, expires_at).await? {
            Claim::First => false,
            Claim::Held => true,
            Claim::Taken => return Err(EnvelopeError::Replayed),
        };

        let principal = Principal::SignedToken(SignedTokenPrincipal {
            subject: token.subject,
            purpose: token.purpose,
            expires_at,
            id: Some(id.clone()),
            kid: token.kid.clone(),
        });
        let proof = Proof { mechanism: MECHANISM, principal_id: principal.id() };
        Ok(OpenedEnvelope {
            verified: Verified::new(principal, vec![proof]),
            body: wire.body,
            id,
            kid: token.kid,
            redelivery,
        })
    }
}

/// The envelope as sent: a JSON object with exactly the members `token` and `body`, each once
/// and a string. Nothing else is accepted (serde's derive would also take an array, and
/// `serde_json::Map` keeps the last of two equal keys).
struct Wire {
    token: String,
    body: String,
}

impl<'de> Deserialize<'de> for Wire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Wire;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with the members token and body")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wire, A::Error> {
                let (mut token, mut body) = (None, None);
                while let Some(name) = map.next_key::<String>()? {
                    let slot = match name.as_str() {
                        "token" => &mut token,
                        "body" => &mut body,
                        _ => return Err(de::Error::custom("an unknown member")),
                    };
                    if slot.is_some() {
                        return Err(de::Error::custom("a member twice"));
                    }
                    *slot = Some(map.next_value::<String>()?);
                }
                match (token, body) {
                    (Some(token), Some(body)) => Ok(Wire { token, body }),
                    _ => Err(de::Error::custom("a member missing")),
                }
            }
        }
        d.deserialize_map(Members)
    }
}

/// An envelope that verified: the proven sender and the body it signed.
///
/// The principal is a [`Principal::SignedToken`] whose purpose is `queue:<name>` and whose
/// subject is the body's SHA-256 (lowercase hex); its proof names the mechanism
/// `signed_envelope`. `Debug` shows the body's length, never its text.
pub struct OpenedEnvelope {
    verified: Verified<Principal>,
    body: String,
    id: String,
    kid: String,
    redelivery: bool,
}

impl OpenedEnvelope {
    /// The proven sender, to pass to storage functions.
    pub fn principal(&self) -> &Verified<Principal> {
        &self.verified
    }

    /// The body, exactly as signed.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The envelope's token id (22 characters of base64url): unique per envelope, the key
    /// under which storage should make the message's effect idempotent.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key id of the key that signed it.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Whether this delivery had opened this envelope before (the queue redelivered the same
    /// message, e.g. after a retry).
    pub fn is_redelivery(&self) -> bool {
        self.redelivery
    }

    /// The proof and the body, for storage that takes both by value.
    pub fn into_parts(self) -> (Verified<Principal>, String) {
        (self.verified, self.body)
    }
}

impl fmt::Debug for OpenedEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedEnvelope")
            .field("verified", &self.verified)
            .field("body_bytes", &self.body.len())
            .field("id", &self.id)
            .field("kid", &self.kid)
            .field("redelivery", &self.redelivery)
            .finish()
    }
}

/// Why an envelope was refused. Every variant but
/// [`StoreUnavailable`](Self::StoreUnavailable) is permanent ([`is_permanent`](Self::is_permanent)):
/// the same envelope will never verify, so a consumer acknowledges the message (as rejected)
/// rather than retrying it. `Display` and `Debug` never contain the envelope's text.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Larger than [`MAX_ENVELOPE_BYTES`]; refused before parsing.
    TooLarge {
        /// [`MAX_ENVELOPE_BYTES`].
        limit: usize,
    },
    /// Not an envelope: the JSON, the token's format or the delivery id. Says which.
    Malformed(&'static str),
    /// The token's key id is not in the ring (never was, or was rotated out).
    UnknownKey,
    /// The token's MAC does not match: forged, tampered with, or signed for another queue (the
    /// purpose is inside the MAC, so a token for another queue cannot be told from a forgery).
    BadSignature,
    /// The token is genuine but the body is not the one it signed: the body was changed, or
    /// swapped with another envelope's.
    BodyMismatch,
    /// The token's expiry has passed.
    Expired,
    /// The token's expiry is further away than a token may live (a minter bug).
    ExpiryTooFar,
    /// The envelope was already accepted in another message.
    Replayed,
    /// The claim store could not answer: refused for now, not permanently (retry later).
    StoreUnavailable(ReplayStoreError),
}

impl EnvelopeError {
    /// A stable code for logs and counters: `too_large`, `malformed`, `unknown_key`,
    /// `bad_signature`, `body_mismatch`, `expired`, `expiry_too_far`, `replayed`,
    /// `state_unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Malformed(_) => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::BodyMismatch => "body_mismatch",
            Self::Expired => "expired",
            Self::ExpiryTooFar => "expiry_too_far",
            Self::Replayed => "replayed",
            Self::StoreUnavailable(_) => "state_unavailable",
        }
    }

    /// Whether the same envelope can never verify (every error but
    /// [`StoreUnavailable`](Self::StoreUnavailable)).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::StoreUnavailable(_))
    }
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(f, "the envelope is larger than {limit} bytes"),
            Self::Malformed(what) => write!(f, "malformed envelope: {what}"),
            Self::UnknownKey => f.write_str("the envelope is signed with an unknown key"),
            Self::BadSignature => {
                f.write_str("the envelope's signature is invalid (forged, or for another queue)")
            }
            Self::BodyMismatch => f.write_str("the body is not the one the envelope signed"),
            Self::Expired => f.write_str("the envelope has expired"),
            Self::ExpiryTooFar => f.write_str("the envelope's expiry is too far in the future"),
            Self::Replayed => f.write_str("the envelope was already accepted in another message"),
            Self::StoreUnavailable(e) => write!(f, "the envelope claims are unavailable: {e}"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

impl From<HmacTokenError> for EnvelopeError {
    fn from(e: HmacTokenError) -> Self {
        match e {
            HmacTokenError::UnknownKey => Self::UnknownKey,
            HmacTokenError::BadSignature => Self::BadSignature,
            HmacTokenError::Expired => Self::Expired,
            HmacTokenError::ExpiryTooFar => Self::ExpiryTooFar,
            HmacTokenError::Malformed(what) => Self::Malformed(what),
            HmacTokenError::TooLong => Self::Malformed("token is too long"),
            // The purpose was checked when the verifier was made.
            HmacTokenError::InvalidPurpose => Self::Malformed("the queue's purpose"),
        }
    }
}

impl From<ReplayStoreError> for EnvelopeError {
    fn from(e: ReplayStoreError) -> Self {
        Self::StoreUnavailable(e)
    }
}

/// The longest holder (delivery id) a claim records, in bytes: [`MAX_DELIVERY_ID_LEN`].
pub const MAX_HOLDER_LEN: usize = MAX_DELIVERY_ID_LEN;

/// What [`EnvelopeClaims::claim`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// There was no live claim: the key is now held by the holder asked for.
    First,
    /// A live claim of the same holder: the same delivery again.
    Held,
    /// A live claim of another holder.
    Taken,
}

/// Claims on signed envelopes, shared by every consumer of a queue: the port
/// [`EnvelopeVerifier`] checks replays with. A claim holds a key for one holder (a delivery id)
/// until an expiry.
///
/// One operation, atomic check-and-claim: two deliveries of one envelope racing on two
/// consumers must not both see [`Claim::First`]. In memory a mutex ([`InMemoryClaims`]); at the
/// edge one step of a Durable Object; in Redis it would be a short Lua script (`GET`, then
/// `SET .. NX EXAT` when absent). Cloudflare KV is eventually consistent and therefore not a
/// claim store.
///
/// **Fail-safe behaviour.** A store that cannot answer (unreachable, timed out, full) returns
/// an error, never [`Claim::First`] or [`Claim::Held`]: the message is then retried later, not
/// accepted unchecked.
pub trait EnvelopeClaims: Send + Sync + fmt::Debug {
    /// Claims `key` for `holder` until `expires_at` (Unix seconds, inclusive) unless a live
    /// claim exists (one whose expiry is not before `now`), and says which case it was.
    fn claim<'a>(
        &'a self,
        key: &'a str,
        holder: &'a str,
        now: u64,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<Claim, ReplayStoreError>>;
}

/// Envelope claims in this process's memory: right for a single instance, and for tests (a
/// fleet needs a shared store, see [`EnvelopeClaims`]).
///
/// Bounded: when full, expired claims are dropped first; when every claim is still live the
/// store **fails closed** ([`ReplayStoreError::Full`], so the message is retried later) rather
/// than forgetting a claim whose envelope could then be replayed. Live claims are still
/// answered when full. Only envelopes that verified reach the store, so filling it takes the
/// key ring.
pub struct InMemoryClaims {
    capacity: usize,
    /// Key → (holder, last second the claim is live).
    claims: Mutex<HashMap<String, (String, u64)>>,
}

impl InMemoryClaims {
    /// Capacity of [`InMemoryClaims::default`]: 10 000 claims.
    pub const DEFAULT_CAPACITY: usize = 10_000;

    /// A store holding at most `capacity` claims. A capacity of 0 refuses every claim.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { capacity, claims: Mutex::new(HashMap::new()) }
    }

    /// Claims held now, expired ones included until they are evicted.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no claim is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, u64)>> {
        // No invariant spans two operations: a poisoned map is still consistent.
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_and_claim(
        &self,
        key: &str,
        holder: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<Claim, ReplayStoreError> {
        if holder.is_empty() || holder.len() > MAX_HOLDER_LEN {
            return Err(ReplayStoreError::Unavailable("a holder is 1 to 128 bytes".to_owned()));
        }
        let mut claims = self.lock();
        match claims.get(key) {
            Some((held_by, until)) if *until >= now => {
                return Ok(if held_by == holder { Claim::Held } else { Claim::Taken });
            }
            // An expired claim of the same key: replaced, no new slot needed.
            Some(_) => {}
            None if claims.len() >= self.capacity => {
                claims.retain(|_, (_, until)| *until >= now);
                if claims.len() >= self.capacity {
                    return Err(ReplayStoreError::Full { capacity: self.capacity });
                }
            }
            None => {}
        }
        claims.insert(key.to_owned(), (holder.to_owned(), expires_at));
        Ok(Claim::First)
    }
}

impl Default for InMemoryClaims {
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

impl fmt::Debug for InMemoryClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryClaims").field("capacity", &self.capacity).field("len", &self.len()).finish()
    }
}

impl EnvelopeClaims for InMemoryClaims {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        holder: &'a str,
        now: u64,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<Claim, ReplayStoreError>> {
        // Decided before the future is returned: the lock is never held across an await.
        let answer = self.check_and_claim(key, holder, now, expires_at);
        Box::pin(std::future::ready(answer))
    }
}

/// `queue:<name>` for a valid queue name.
fn queue_purpose(queue: &str) -> Option<String> {
    let valid = (1..=MAX_QUEUE_NAME_LEN).contains(&queue.len())
        && queue.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    valid.then(|| format!("queue:{queue}"))
}

/// Lowercase hex of the SHA-256 of `body`'s UTF-8 bytes.
fn digest_hex(body: &str) -> String {
    use std::fmt::Write;
    Sha256::digest(body.as_bytes()).iter().fold(String::with_capacity(DIGEST_HEX_LEN), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_lowercase_hex_sha256() {
        // FIPS 180-2 test vector.
        assert_eq!(digest_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"); // pragma: allowlist secret
        assert_eq!(digest_hex("").len(), DIGEST_HEX_LEN);
    }

    #[test]
    fn a_live_claim_answers_its_holder_and_an_expired_one_is_replaced() {
        let claims = InMemoryClaims::with_capacity(4);
        assert_eq!(claims.check_and_claim("k", "d1", 100, 200), Ok(Claim::First));
        assert_eq!(claims.check_and_claim("k", "d1", 150, 200), Ok(Claim::Held));
        assert_eq!(claims.check_and_claim("k", "d2", 200, 300), Ok(Claim::Taken));
        assert_eq!(claims.check_and_claim("k", "d2", 201, 300), Ok(Claim::First));
        assert_eq!(claims.check_and_claim("k", "d1", 202, 300), Ok(Claim::Taken));
        assert_eq!(claims.len(), 1);
    }

    #[test]
    fn a_full_store_evicts_expired_claims_and_otherwise_fails_closed() {
        let claims = InMemoryClaims::with_capacity(1);
        assert_eq!(claims.check_and_claim("a", "d1", 100, 150), Ok(Claim::First));
        assert_eq!(claims.check_and_claim("b", "d2", 120, 400), Err(ReplayStoreError::Full { capacity: 1 }));
        // Still answered while full.
        assert_eq!(claims.check_and_claim("a", "d1", 120, 150), Ok(Claim::Held));
        assert_eq!(claims.check_and_claim("b", "d2", 151, 400), Ok(Claim::First));
        assert!(claims.check_and_claim("c", "", 151, 400).is_err());
        assert!(claims.check_and_claim("c", &"d".repeat(129), 151, 400).is_err());
    }

    #[test]
    fn queue_names() {
        assert_eq!(queue_purpose("orders-v2.eu_1").as_deref(), Some("queue:orders-v2.eu_1"));
        assert_eq!(queue_purpose(&"q".repeat(58)).map(|p| p.len()), Some(64));
        for bad in ["", "a:b", "a b", "a/b", "é", &"q".repeat(59)] {
            assert_eq!(queue_purpose(bad), None, "{bad:?}");
        }
    }
}
