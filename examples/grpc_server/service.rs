//! The `ztgate.admin.v1.Admin` service, written by hand as tonic's generated code would be: a
//! Tower service that dispatches on the method path and runs each unary handler through
//! `tonic::server::Grpc` with prost's codec.
//!
//! The handlers know nothing of tokens or metadata. Each takes the caller the interceptor
//! proved from the request extensions ([`caller`]; none there is `UNAUTHENTICATED`) and hands
//! the store an [`Actor`], which only a [`Verified`](ztgate::Verified) principal can make: the
//! store cannot be reached before identity ran. Who may call which method is declared per
//! method path, in `routes.rs`, not here.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::server::{Grpc, NamedService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower::Service;
use ztgate::storage::Actor;

use crate::auth::caller;
use crate::proto::{
    DELETE_USER, DeleteUserReply, DeleteUserRequest, LIST_USERS, ListUsersReply, ListUsersRequest, SERVICE,
    User, WHO_AM_I, WhoAmIReply, WhoAmIRequest,
};

/// Largest request message a method decodes: these requests hold at most one email.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;
/// Longest email `DeleteUser` accepts (RFC 5321's path limit).
const MAX_EMAIL_BYTES: usize = 254;

/// The users of the admin console, in memory. Every method takes the [`Actor`] it acts for.
#[derive(Debug, Default)]
pub struct UserStore {
    users: Mutex<Vec<User>>,
    /// Who deleted whom: `(email, actor id)`, oldest first.
    deletions: Mutex<Vec<(String, String)>>,
}

impl UserStore {
    /// A store holding `users` (`(email, role)`).
    pub fn new<'a>(users: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let users = users.into_iter().map(|(email, role)| User { email: email.into(), role: role.into() });
        Self { users: Mutex::new(users.collect()), deletions: Mutex::default() }
    }

    /// Every user.
    pub fn list(&self, _by: &Actor) -> Vec<User> {
        self.users.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Removes the user with `email` (ASCII case-insensitively), recording `by`; false when
    /// there is none.
    pub fn delete(&self, by: &Actor, email: &str) -> bool {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let Some(at) = users.iter().position(|u| u.email.eq_ignore_ascii_case(email)) else {
            return false;
        };
        let removed = users.remove(at);
        drop(users);
        self.deletions.lock().unwrap_or_else(|p| p.into_inner()).push((removed.email, by.id().to_owned()));
        true
    }

    /// Who deleted whom, oldest first: `(email, actor id)`.
    #[allow(dead_code, reason = "the audit trail tests/grpc.rs reads")]
    pub fn deletions(&self) -> Vec<(String, String)> {
        self.deletions.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The service: `Server::builder().layer(AuthLayer::new(..)).add_service(Admin::new(store))`.
#[derive(Clone, Debug)]
pub struct Admin {
    store: Arc<UserStore>,
}

impl Admin {
    /// The service over `store`.
    pub fn new(store: Arc<UserStore>) -> Self {
        Self { store }
    }
}

impl NamedService for Admin {
    const NAME: &'static str = SERVICE;
}

impl Service<http::Request<Body>> for Admin {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let store = self.store.clone();
        match request.uri().path() {
            WHO_AM_I => Box::pin(async move { Ok(unary(request, who_am_i).await) }),
            LIST_USERS => Box::pin(async move { Ok(unary(request, move |r| list_users(&store, r)).await) }),
            DELETE_USER => Box::pin(async move { Ok(unary(request, move |r| delete_user(&store, r)).await) }),
            _ => Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// Decodes one `M1` (at most [`MAX_MESSAGE_BYTES`]), runs `handler`, encodes its `M2` or status.
async fn unary<M1, M2, F>(request: http::Request<Body>, mut handler: F) -> http::Response<Body>
where
    M1: prost::Message + Default + Send + 'static,
    M2: prost::Message + Send + 'static,
    F: FnMut(Request<M1>) -> Result<Response<M2>, Status> + Send + 'static,
{
    let service = tower::service_fn(move |r| std::future::ready(handler(r)));
    let mut grpc = Grpc::new(ProstCodec::<M2, M1>::default()).max_decoding_message_size(MAX_MESSAGE_BYTES);
    grpc.unary(service, request).await
}

fn who_am_i(request: Request<WhoAmIRequest>) -> Result<Response<WhoAmIReply>, Status> {
    let who = caller(&request)?;
    Ok(Response::new(WhoAmIReply {
        principal_id: who.id(),
        kind: who.kind().to_owned(),
        proved_by: who.proofs().iter().map(|p| p.mechanism.to_owned()).collect(),
    }))
}

fn list_users(
    store: &UserStore,
    request: Request<ListUsersRequest>,
) -> Result<Response<ListUsersReply>, Status> {
    let who = caller(&request)?;
    Ok(Response::new(ListUsersReply { users: store.list(&Actor::from(who)) }))
}

fn delete_user(
    store: &UserStore,
    request: Request<DeleteUserRequest>,
) -> Result<Response<DeleteUserReply>, Status> {
    let by = Actor::from(caller(&request)?);
    let email = request.get_ref().email.trim();
    // The message never repeats the caller's text.
    if email.is_empty() || email.len() > MAX_EMAIL_BYTES || !email.contains('@') {
        return Err(Status::invalid_argument(format!("email: 1 to {MAX_EMAIL_BYTES} bytes with an @")));
    }
    if !store.delete(&by, email) {
        return Err(Status::not_found("no such user"));
    }
    Ok(Response::new(DeleteUserReply { email: email.to_owned(), deleted_by: by.id().to_owned() }))
}
