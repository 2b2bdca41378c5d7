//! Time, injected.
//!
//! Every time-dependent check in ztgate (token expiry, JWKS freshness, refetch cooldowns,
//! grace periods) reads a [`Clock`] instead of calling `SystemTime::now()` directly. Tests use a
//! [`FixedClock`] they can move forward. [`SystemClock`] reads the JS clock in a Workers build,
//! since `SystemTime::now()` panics on `wasm32-unknown-unknown`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A source of the current time, in whole seconds since the Unix epoch.
///
/// JWT `NumericDate` claims are whole seconds, so a finer resolution would buy nothing.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Seconds since 1970-01-01T00:00:00Z.
    fn now(&self) -> u64;
}

/// The platform's wall clock: the operating system's on native targets, the JS clock
/// (`Date.now()`) in a Workers build, where `SystemTime::now()` panics.
///
/// Its [`Clock`] impl is the runtime's (written in `src/runtime/mod.rs`), so this module names
/// no runtime.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

/// The system time in Unix seconds: shorthand for `SystemClock.now()`.
pub fn unix_now() -> u64 {
    SystemClock.now()
}

/// A clock that only moves when told to. For tests and reproducible fuzzing.
///
/// ```
/// use std::time::Duration;
/// use ztgate::clock::{Clock, FixedClock};
///
/// let clock = FixedClock::at(1_700_000_000);
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.now(), 1_700_000_090);
/// ```
#[derive(Debug, Default)]
pub struct FixedClock(AtomicU64);

impl FixedClock {
    /// A clock stopped at `unix_seconds`.
    pub fn at(unix_seconds: u64) -> Self {
        Self(AtomicU64::new(unix_seconds))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::SeqCst);
    }

    /// Sets the clock to an absolute time (it may go backwards, as real clocks sometimes do).
    pub fn set(&self, unix_seconds: u64) {
        self.0.store(unix_seconds, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
