//! The axum adapter (feature `axum`): `Verified<Principal<C>>` is an extractor and
//! [`Rejection`] is a response.
//!
//! The extractor only reads what the [`Gate`](crate::Gate) layer inserted. If the layer is
//! missing on a route, extraction fails with [`Rejection::LayerMissing`] (500): a wiring bug is
//! refused, never served as anonymous access.

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;

use crate::error::Rejection;
use crate::principal::{Principal, Verified};

impl<S, C> FromRequestParts<S> for Verified<Principal<C>>
where
    S: Send + Sync,
    C: Clone + Send + Sync + 'static,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Self>() {
            Some(verified) => Ok(verified.clone()),
            None => {
                tracing::error!(
                    layer = "identity",
                    outcome = "layer_missing",
                    path = ?parts.uri.path(),
                    "a handler asked for Verified<Principal> but the Gate layer did not run"
                );
                Err(Rejection::LayerMissing)
            }
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        self.to_response()
    }
}
