//! Who may call which method, one rule per gRPC method path (deny by default), and the tonic
//! server that puts the interceptor in front of the service.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use ztgate::identity::{AccessJwt, ApiKeyAuth, ApiKeys, Requirement};
use ztgate::{ConfigError, Policy, RoutePolicies};

use crate::auth::AuthLayer;
use crate::proto::{DELETE_USER, LIST_USERS, SERVICE, WHO_AM_I};
use crate::service::{Admin, UserStore};

/// A call must be answered within this; the deadline a client sends can only shorten it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest header block (metadata) of a call; ztgate's own limits on a credential (16 KiB by
/// default) are checked inside it.
pub const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// Most calls in flight on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 64;

/// The table, added to `base` (whose limits, revocations and rate limit every rule shares):
///
/// | method | who |
/// |---|---|
/// | `WhoAmI`, `ListUsers` | an Access user among `admins` or `operators`, or an API key of `api_keys` |
/// | `DeleteUser` | an Access user among `admins` |
/// | any other method of `ztgate.admin.v1.Admin` | as `WhoAmI` without keys: identity first, then `UNIMPLEMENTED` |
/// | anything else | nobody (`PERMISSION_DENIED`, `no_policy`) |
///
/// `access` verifies the Access tokens; its own policy is not used: each rule shares its
/// verifier (keys, verified-token cache) under the rule's own policy.
pub fn policies(
    base: RoutePolicies,
    access: &AccessJwt,
    admins: &[&str],
    operators: &[&str],
    api_keys: Arc<ApiKeys>,
) -> Result<RoutePolicies, ConfigError> {
    let staff = Policy::new().allow_emails(admins.iter().chain(operators));
    let staff = Requirement::mechanism(access.with_policy(staff));
    let admin = Requirement::mechanism(access.with_policy(Policy::new().allow_emails(admins)));
    let staff_or_key =
        Requirement::any_of([staff.clone(), Requirement::mechanism(ApiKeyAuth::new(api_keys))]);
    base.route("POST", WHO_AM_I, staff_or_key.clone())?
        .route("POST", LIST_USERS, staff_or_key)?
        .route("POST", DELETE_USER, admin)?
        .route("POST", &format!("/{SERVICE}/{{*method}}"), staff)
}

/// Serves the admin service behind the interceptor on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    policies: RoutePolicies,
    store: Arc<UserStore>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .layer(AuthLayer::new(policies))
        .add_service(Admin::new(store))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown)
        .await
}
