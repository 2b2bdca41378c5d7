//! Secret values: bytes that are never printed.
//!
//! [`Secret`] holds key material (HMAC keys, webhook secrets, API keys). Its `Debug` shows
//! only the length, it has no `Display`, and equality is constant-time.

use std::fmt;

use subtle::ConstantTimeEq;

/// Secret bytes. `Debug` prints `Secret([redacted; N bytes])`.
#[derive(Clone)]
pub struct Secret(Box<[u8]>);

impl Secret {
    /// Wraps key material.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into().into_boxed_slice())
    }

    /// The raw bytes. Hand them to a MAC or hash; never to a log.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty (never a usable key).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret([redacted; {} bytes])", self.0.len())
    }
}

impl PartialEq for Secret {
    /// Constant-time in the contents (the length is not secret).
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret {}

impl From<Vec<u8>> for Secret {
    fn from(v: Vec<u8>) -> Self {
        Self::new(v)
    }
}

impl From<&[u8]> for Secret {
    fn from(v: &[u8]) -> Self {
        Self::new(v.to_vec())
    }
}

impl From<String> for Secret {
    fn from(v: String) -> Self {
        Self::new(v.into_bytes())
    }
}

impl From<&str> for Secret {
    fn from(v: &str) -> Self {
        Self::new(v.as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let s = Secret::from("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret([redacted; 19 bytes])");
        assert_eq!(s, Secret::from("hunter2-very-secret"));
        assert_ne!(s, Secret::from("hunter2-very-secreT"));
    }
}
