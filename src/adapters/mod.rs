//! Inbound adapters: how a request from a framework or platform reaches the one pipeline
//! (`gate::pipeline`). Each is thin: it reads the request the way its platform offers it and
//! hands the facts to the gate; none verifies or logs on its own.
//!
//! - `tower`: [`Gate`](crate::Gate) and [`RoutePolicies`](crate::RoutePolicies) as a Tower
//!   `Layer`, the [`IdentityService`](crate::IdentityService) it makes;
//! - `axum` (feature `axum`): `Verified<Principal>` as an extractor, `Rejection` as a response;
//! - `workers` (feature `workers`): a `worker::Request` → facts (`request.cf` client
//!   certificates included) → the pipeline.

#[cfg(feature = "axum")]
mod axum;
pub(crate) mod tower;
#[cfg(feature = "workers")]
pub(crate) mod workers;
