//! What ztgate counts, through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! ztgate records; the application chooses the exporter (Prometheus, StatsD, OpenTelemetry...)
//! by installing a `metrics` recorder. With none installed, each record is a no-op. The names
//! and labels are stable: every value of every label is one of a fixed, small set (mechanism
//! names, outcome names, rejection codes), never text from a request, so a caller cannot grow
//! the number of series.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | [`DECISIONS`] `ztgate_decisions_total` | counter | `mechanism`, `outcome`, `code` | one per request the pipeline decided |
//! | [`DECISION_SECONDS`] `ztgate_decision_duration_seconds` | histogram | `mechanism`, `outcome` | time spent in the identity layer for one request |
//! | [`JWKS_FETCHES`] `ztgate_jwks_fetches_total` | counter | `outcome` (`ok`, `error`) | fetches of the key set |
//! | [`JWKS_KEYS`] `ztgate_jwks_keys` | gauge | | usable keys in the last key set fetched |
//! | [`JWKS_REFRESHED`] `ztgate_jwks_last_refresh_timestamp_seconds` | gauge | | Unix time of the last successful fetch: the key set's age is `time() - ztgate_jwks_last_refresh_timestamp_seconds` |
//! | [`TOKEN_CACHE`] `ztgate_token_cache_lookups_total` | counter | `result` (`hit`, `miss`) | Access tokens looked up in the verified-token cache; a miss checks a signature |
//! | [`TOKEN_CACHE_ENTRIES`] `ztgate_token_cache_entries` | gauge | | about how many verified tokens are cached |
//!
//! Labels of [`DECISIONS`]:
//! - `outcome`: `verified`, `refused` (a credential was present and did not verify, was not
//!   allowed, or the request's shape was refused), `missing_credential`, `no_policy`;
//! - `code`: the [`Rejection::code`](crate::Rejection::code) (`invalid_token`, `forbidden`,
//!   `header_too_large`...), or `ok` when verified;
//! - `mechanism`: the mechanism that decided ([`Mechanism::name`](crate::identity::Mechanism::name):
//!   `access_jwt`, `api_key`, `public`...; those of an all-of joined by `+`, e.g.
//!   `access_jwt+client_cert`), `request` when the request layer refused the request before any
//!   mechanism ran, and `none` when no mechanism decided (no credential, or no policy).
//!
//! The duration is measured with the platform's monotonic clock natively; in Workers the clock
//! only advances across I/O, so a verification without a fetch records 0.
//!
//! ```
//! // The series a dashboard needs for "refusals per code, per mechanism":
//! //   sum by (mechanism, code) (rate(ztgate_decisions_total{outcome="refused"}[5m]))
//! assert_eq!(ztgate::metrics::DECISIONS, "ztgate_decisions_total");
//! ```

/// Counter: decisions of the pipeline, labelled `mechanism`, `outcome`, `code`.
pub const DECISIONS: &str = "ztgate_decisions_total";
/// Histogram (seconds): time in the identity layer per request, labelled `mechanism`, `outcome`.
pub const DECISION_SECONDS: &str = "ztgate_decision_duration_seconds";
/// Counter: JWKS fetches, labelled `outcome` (`ok` or `error`).
pub const JWKS_FETCHES: &str = "ztgate_jwks_fetches_total";
/// Gauge: usable keys in the last key set fetched.
pub const JWKS_KEYS: &str = "ztgate_jwks_keys";
/// Gauge: Unix time (seconds) of the last successful JWKS fetch.
pub const JWKS_REFRESHED: &str = "ztgate_jwks_last_refresh_timestamp_seconds";
/// Counter: verified-token cache lookups, labelled `result` (`hit` or `miss`).
pub const TOKEN_CACHE: &str = "ztgate_token_cache_lookups_total";
/// Gauge: about how many verified tokens are cached.
pub const TOKEN_CACHE_ENTRIES: &str = "ztgate_token_cache_entries";

/// Records one decision of the pipeline.
pub(crate) fn decision(mechanism: Mechanisms<'_>, outcome: &'static str, code: &'static str, seconds: f64) {
    let mechanism = mechanism.label();
    ::metrics::counter!(DECISIONS, "mechanism" => mechanism.clone(), "outcome" => outcome, "code" => code)
        .increment(1);
    ::metrics::histogram!(DECISION_SECONDS, "mechanism" => mechanism, "outcome" => outcome).record(seconds);
}

/// The mechanism label of a decision.
#[derive(Clone, Copy)]
pub(crate) enum Mechanisms<'a> {
    /// One fixed name (`request`, `none`, or the mechanism that refused).
    Named(&'static str),
    /// The mechanisms that proved a verified request.
    Proofs(&'a [crate::principal::Proof]),
}

impl Mechanisms<'_> {
    fn label(self) -> ::metrics::SharedString {
        match self {
            Self::Named(name) => name.into(),
            Self::Proofs([one]) => one.mechanism.into(),
            Self::Proofs([]) => "none".into(),
            Self::Proofs(many) => many.iter().map(|p| p.mechanism).collect::<Vec<_>>().join("+").into(),
        }
    }
}

/// Records a JWKS fetch: the number of usable keys and the time when it succeeded.
pub(crate) fn jwks_fetched(outcome: Result<(usize, u64), ()>) {
    match outcome {
        Ok((keys, now)) => {
            ::metrics::counter!(JWKS_FETCHES, "outcome" => "ok").increment(1);
            ::metrics::gauge!(JWKS_KEYS).set(keys as f64);
            ::metrics::gauge!(JWKS_REFRESHED).set(now as f64);
        }
        Err(()) => ::metrics::counter!(JWKS_FETCHES, "outcome" => "error").increment(1),
    }
}

/// Records a lookup of the verified-token cache, and about how many entries it holds.
pub(crate) fn token_cache_lookup(hit: bool, entries: u64) {
    let result = if hit { "hit" } else { "miss" };
    ::metrics::counter!(TOKEN_CACHE, "result" => result).increment(1);
    ::metrics::gauge!(TOKEN_CACHE_ENTRIES).set(entries as f64);
}
