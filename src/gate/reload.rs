//! Route policies that can be replaced while the service runs: a configuration reload swaps
//! the whole table at once, without a restart and without dropping a connection.
//!
//! ```
//! use ztgate::identity::Requirement;
//! use ztgate::{ReloadablePolicies, RoutePolicies};
//!
//! let open = RoutePolicies::new().route("GET", "/healthz", Requirement::public()).unwrap();
//! let policies = ReloadablePolicies::new(open);
//! // router.layer(policies.clone()); later, on SIGHUP, with a table built from the new file:
//! policies.replace(RoutePolicies::new());
//! assert_eq!(policies.current().rules().count(), 0);
//! ```

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::Method;

use super::pipeline::SelectGate;
use super::{Gate, RoutePolicies};
use crate::principal::NoClaims;

/// A [`RoutePolicies`] table behind one atomic pointer: every request reads the table current
/// when it arrives (one atomic load, no lock), and [`ReloadablePolicies::replace`] swaps in a
/// new one for the requests that follow. A request already in flight finishes under the gate
/// it selected. Clones share the table, so keep one clone to replace it and give the other
/// to the router as its layer.
///
/// The mechanisms inside the tables are whatever the caller built: to keep the JWKS and
/// verified-token caches across a reload, build the new table's Access mechanism with
/// [`AccessJwt::with_policy`](crate::identity::AccessJwt::with_policy) from the old one.
pub struct ReloadablePolicies<C = NoClaims> {
    table: Arc<ArcSwap<RoutePolicies<C>>>,
}

impl<C> Clone for ReloadablePolicies<C> {
    fn clone(&self) -> Self {
        Self { table: self.table.clone() }
    }
}

impl<C: 'static> fmt::Debug for ReloadablePolicies<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReloadablePolicies").field(&**self.table.load()).finish()
    }
}

impl<C: Send + Sync + 'static> ReloadablePolicies<C> {
    /// Starts with `initial`.
    pub fn new(initial: RoutePolicies<C>) -> Self {
        Self { table: Arc::new(ArcSwap::from_pointee(initial)) }
    }

    /// Replaces the table for every request that arrives from now on.
    pub fn replace(&self, next: RoutePolicies<C>) {
        self.table.store(Arc::new(next));
    }

    /// The table in force now.
    pub fn current(&self) -> RoutePolicies<C> {
        (**self.table.load()).clone()
    }
}

impl<C: Send + Sync + 'static> SelectGate for ReloadablePolicies<C> {
    type Claims = C;

    fn select(&self, method: &Method, path: &str) -> Option<Gate<C>> {
        self.table.load().select(method, path)
    }
}
