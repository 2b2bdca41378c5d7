//! The `jwt_simple` RS256 backend.
//!
//! jwt-simple only verifies whole tokens, and after the signature it parses and checks claims
//! of its own. This wrapper turns that into a pure signature check:
//!
//! 1. everything jwt-simple checks *before* the signature is checked here first, with jwt-simple's
//!    own code where it is public (`Token::decode_metadata` parses the header exactly as
//!    verification does), so an error that is not `JWTError::InvalidSignature` cannot come
//!    from the header or the signature encoding;
//! 2. the options switch off every claim rule jwt-simple can switch off (issuer, audience,
//!    subject, nonce, `iat`/`nbf`, token size), and pin the time at 0 so its always-on `exp`
//!    rule holds for every `exp` (its 8192-byte header limit stays, and `decode_metadata`
//!    applies the same one);
//! 3. what can still fail after the signature is decoding the payload (base64 or JSON, e.g.
//!    an `exp` that is a string): those errors mean "signature valid, claims unreadable to
//!    jwt-simple", and ztgate's own claim checks decide. Any other error is `false`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::JWTError;
use jwt_simple::algorithms::{RS256PublicKey, RSAPublicKeyLike};
use jwt_simple::claims::NoCustomClaims;
use jwt_simple::common::VerificationOptions;
use jwt_simple::reexports::{coarsetime, ct_codecs, serde_json};
use jwt_simple::token::Token;

fn verify(key: &RS256PublicKey, signing_input: &[u8], signature_b64: &str) -> bool {
    let Ok(signing_input) = std::str::from_utf8(signing_input) else { return false };
    let Some((header_b64, _payload_b64)) = signing_input.split_once('.') else { return false };
    if signing_input.matches('.').count() != 1 {
        return false;
    }
    // The same strict base64url as the jsonwebtoken backend (no padding, no non-canonical
    // trailing bits), then the decoder jwt-simple itself will use, so that neither can fail
    // later with an error that would be mistaken for one after the signature.
    if URL_SAFE_NO_PAD.decode(signature_b64).is_err() {
        return false;
    }
    use ct_codecs::Decoder as _;
    if ct_codecs::Base64UrlSafeNoPadding::decode_to_vec(signature_b64, None).is_err() {
        return false;
    }
    let token = format!("{signing_input}.{signature_b64}");
    let Ok(metadata) = Token::decode_metadata(&token) else { return false };
    if metadata.algorithm() != "RS256" || metadata.critical().is_some_and(|c| !c.is_empty()) {
        return false;
    }
    if metadata.signature_type().is_some_and(|t| {
        let t = t.to_uppercase();
        t != "JWT" && !t.ends_with("+JWT")
    }) {
        return false;
    }
    // A `salt` member is decoded before the signature; its errors would be ambiguous.
    let header_has_salt = ct_codecs::Base64UrlSafeNoPadding::decode_to_vec(header_b64, None)
        .ok()
        .and_then(|h| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&h).ok())
        .is_none_or(|h| h.contains_key("salt"));
    if header_has_salt {
        return false;
    }
    let options = VerificationOptions {
        accept_future: true,
        artificial_time: Some(coarsetime::UnixTimeStamp::from_secs(0)),
        time_tolerance: Some(coarsetime::Duration::from_secs(0)),
        max_token_length: None,
        max_header_length: None,
        ..VerificationOptions::default()
    };
    match key.verify_token::<NoCustomClaims>(&token, Some(options)) {
        Ok(_) => true,
        Err(e) => {
            if matches!(e.downcast_ref::<JWTError>(), Some(JWTError::InvalidSignature)) {
                return false;
            }
            // Only the payload is decoded with these after the checks above passed.
            e.downcast_ref::<serde_json::Error>().is_some() || e.downcast_ref::<ct_codecs::Error>().is_some()
        }
    }
}

pub(super) struct Key(RS256PublicKey);

impl Key {
    /// `None` for keys jwt-simple refuses: fewer than 2048 or more than 4096 bits, or a public
    /// exponent other than 65537.
    pub(super) fn new(n: &[u8], e: &[u8]) -> Option<Self> {
        RS256PublicKey::from_components(n, e).ok().map(Self)
    }

    /// Malformed signature encodings are `false`, and so are signing inputs jwt-simple cannot
    /// verify (see the module documentation).
    pub(super) fn verify(&self, signing_input: &[u8], signature_b64: &str) -> bool {
        verify(&self.0, signing_input, signature_b64)
    }
}
