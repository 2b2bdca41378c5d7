//! `ztgate.admin.v1`: the messages and method paths of `admin.proto`, written by hand with
//! prost's derive (what `tonic-build` would generate, without `protoc` or a build script), and
//! a small typed client.
//!
//! The client is what a caller of the service writes: a credential goes on each call as
//! metadata ([`Credential::attach`]); gRPC metadata are HTTP/2 headers, so the gate reads them
//! as it reads any request's headers.

use http::uri::PathAndQuery;
use tonic::metadata::{AsciiMetadataValue, errors::InvalidMetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

/// The fully qualified service name: the first segment of every method path.
pub const SERVICE: &str = "ztgate.admin.v1.Admin";

/// `/ztgate.admin.v1.Admin/WhoAmI`.
pub const WHO_AM_I: &str = "/ztgate.admin.v1.Admin/WhoAmI";
/// `/ztgate.admin.v1.Admin/ListUsers`.
pub const LIST_USERS: &str = "/ztgate.admin.v1.Admin/ListUsers";
/// `/ztgate.admin.v1.Admin/DeleteUser`.
pub const DELETE_USER: &str = "/ztgate.admin.v1.Admin/DeleteUser";

/// Every method, as `admin.proto` declares it: name, request message, reply message.
#[allow(dead_code, reason = "tests/grpc.rs checks admin.proto against it")]
pub const METHODS: &[(&str, &str, &str)] = &[
    ("WhoAmI", "WhoAmIRequest", "WhoAmIReply"),
    ("ListUsers", "ListUsersRequest", "ListUsersReply"),
    ("DeleteUser", "DeleteUserRequest", "DeleteUserReply"),
];

/// `WhoAmI`'s request: nothing; the caller is the question.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WhoAmIRequest {}

/// `WhoAmI`'s reply: the verified principal.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WhoAmIReply {
    /// `user:<email>`, `api_key:<name>`, ...
    #[prost(string, tag = "1")]
    pub principal_id: String,
    /// `user`, `service`, `api_key`, ...
    #[prost(string, tag = "2")]
    pub kind: String,
    /// The mechanisms that proved it, e.g. `access_jwt`.
    #[prost(string, repeated, tag = "3")]
    pub proved_by: Vec<String>,
}

/// `ListUsers`'s request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListUsersRequest {}

/// A user of the admin console.
#[derive(Clone, PartialEq, prost::Message)]
pub struct User {
    /// The login email.
    #[prost(string, tag = "1")]
    pub email: String,
    /// `admin` or `operator`.
    #[prost(string, tag = "2")]
    pub role: String,
}

/// `ListUsers`'s reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListUsersReply {
    /// Every user, in the order they were added.
    #[prost(message, repeated, tag = "1")]
    pub users: Vec<User>,
}

/// `DeleteUser`'s request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteUserRequest {
    /// Whom to delete.
    #[prost(string, tag = "1")]
    pub email: String,
}

/// `DeleteUser`'s reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteUserReply {
    /// Who was deleted.
    #[prost(string, tag = "1")]
    pub email: String,
    /// The principal id of the admin who deleted them.
    #[prost(string, tag = "2")]
    pub deleted_by: String,
}

/// What a call presents as its credential, as metadata.
pub enum Credential {
    /// Nothing: the call is anonymous.
    None,
    /// `cf-access-jwt-assertion: <token>`, as Cloudflare Access forwards it.
    AccessJwt(String),
    /// `authorization: Bearer <key>`.
    ApiKey(String),
}

impl std::fmt::Debug for Credential {
    /// The kind only: a credential is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "Credential::None",
            Self::AccessJwt(_) => "Credential::AccessJwt(..)",
            Self::ApiKey(_) => "Credential::ApiKey(..)",
        })
    }
}

impl Credential {
    /// `message` as a request carrying this credential. Fails on bytes metadata cannot hold
    /// (a line break, a non-visible character), before anything is sent.
    pub fn attach<M>(&self, message: M) -> Result<Request<M>, InvalidMetadataValue> {
        let mut request = Request::new(message);
        match self {
            Self::None => {}
            Self::AccessJwt(token) => {
                let mut value: AsciiMetadataValue = token.parse()?;
                value.set_sensitive(true);
                request.metadata_mut().insert("cf-access-jwt-assertion", value);
            }
            Self::ApiKey(key) => {
                let mut value: AsciiMetadataValue = format!("Bearer {key}").parse()?;
                value.set_sensitive(true);
                request.metadata_mut().insert("authorization", value);
            }
        }
        Ok(request)
    }
}

/// A client of `ztgate.admin.v1.Admin` over one HTTP/2 connection (cheap to clone).
#[derive(Clone, Debug)]
pub struct AdminClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl AdminClient {
    /// Connects to `uri` (`http://127.0.0.1:50051`).
    pub async fn connect(uri: String) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(uri)?.connect().await?;
        Ok(Self { grpc: tonic::client::Grpc::new(channel) })
    }

    /// `WhoAmI`.
    pub async fn who_am_i(
        &mut self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIReply>, Status> {
        self.unary(request, WHO_AM_I).await
    }

    /// `ListUsers`.
    pub async fn list_users(
        &mut self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersReply>, Status> {
        self.unary(request, LIST_USERS).await
    }

    /// `DeleteUser`.
    pub async fn delete_user(
        &mut self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserReply>, Status> {
        self.unary(request, DELETE_USER).await
    }

    /// Any unary method by path, e.g. one the server does not have.
    pub async fn unary<M1, M2>(
        &mut self,
        request: Request<M1>,
        path: &'static str,
    ) -> Result<Response<M2>, Status>
    where
        M1: prost::Message + Send + Sync + 'static,
        M2: prost::Message + Default + Send + Sync + 'static,
    {
        self.grpc.ready().await.map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
        self.grpc.unary(request, PathAndQuery::from_static(path), ProstCodec::default()).await
    }
}
