//! Reading a JWKS response in Workers under the rules every fetcher applies, shared by the
//! network fetch and the Cache API's copy (its own module so both use it without a cycle).

use futures_core::Stream;

use crate::identity::FetchError;
use crate::identity::FetchedJwks;
use crate::identity::jwks::{append_capped, check_response, network_error};

/// A JWKS response read under the rules every fetcher applies (status, JSON, size cap declared
/// and while streaming): the network's, and the Cache API's copy alike.
pub(super) async fn read_checked(
    response: &mut worker::Response,
    max_bytes: usize,
) -> Result<FetchedJwks, FetchError> {
    let header = |name: &str| response.headers().get(name).ok().flatten();
    let (content_type, content_length, cache_control) =
        (header("content-type"), header("content-length"), header("cache-control"));
    let max_age = check_response(
        response.status_code(),
        content_type.as_deref(),
        content_length.as_deref(),
        cache_control.as_deref(),
        max_bytes,
    )?;
    let mut stream = response.stream().map_err(network_error)?;
    let mut body = Vec::new();
    while let Some(chunk) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx)).await {
        append_capped(&mut body, &chunk.map_err(network_error)?, max_bytes)?;
    }
    Ok(FetchedJwks { body, max_age, from_shared_cache: false })
}
