//! etcd 3.4's JSON gateway (grpc-gateway v1.9) on the client URLs: `POST /v3/kv/put`
//! with `{"key": "Zm9v", "value": "YmFy"}` and the rest of etcd's route table, as the
//! curl lines of etcd's "gRPC gateway" page use them.
//!
//! A request's JSON body is decoded into the prost request type (proto3 JSON with the
//! .proto field names, by the serde impls `proto`'s `json` feature generates), handed
//! in-process to the same service implementation gRPC calls ([`Api`]), and the answer is
//! encoded back as etcd's gateway writes it: the .proto field names, 64-bit integers as
//! strings, bytes as base64, enums by name, default values left out. The
//! `Authorization` header is the auth token, as etcd's gateway forwards it. Errors are
//! grpc-gateway's: the HTTP status its `HTTPStatusFromCode` maps the gRPC code to, and
//! `{"error":M,"message":M,"code":N}`. Streams (`/v3/watch`, `/v3/lease/keepalive`,
//! `/v3/maintenance/snapshot`, `/v3/election/observe`) answer with one
//! `{"result":{...}}` line per message over one chunked response; the request body of a
//! bidirectional stream is a sequence of JSON requests, the first of them usually all.
//!
//! Paths as etcd 3.4 serves them: `/v3beta/...` is `/v3/...`; an unknown path under
//! `/v3/` is grpc-gateway's `404 Not Found`, a known one with a method other than POST
//! its `405 Method Not Allowed` (text, as Go's `http.Error`). What gRPC does around a
//! call is done here too: a learner refuses what [`crate::learner::rule`] refuses, and
//! a request larger than the gRPC receive limit is refused with grpc-go's words.

use crate::etcd::Api;
use crate::http::Answer;
use crate::peer_guard::MemberTable;
use bytes::{BufMut, Bytes, BytesMut};
use http::StatusCode;
use http_body::Frame;
use http_body_util::BodyExt;
use proto::etcdserverpb::{
    auth_server::Auth, cluster_server::Cluster, kv_server::Kv, lease_server::Lease,
    maintenance_server::Maintenance, watch_server::Watch,
};
use proto::v3electionpb::election_server::Election;
use proto::v3lockpb::lock_server::Lock;
use raft::NodeId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

/// The content type of every JSON answer, as grpc-gateway's `JSONPb` marshaler's.
pub const JSON: &str = "application/json";
/// The header grpc-gateway adds to a successful answer: the gRPC call's content type.
const GRPC_CONTENT_TYPE: (&str, &str) = ("grpc-metadata-content-type", "application/grpc");
/// grpc-gateway's answer to a path under `/v3/` it has no route for.
pub const NOT_FOUND_BODY: &str = "Not Found\n";
/// etcd's answer, over TLS with auth on, to a gateway request whose client certificate
/// has a common name (etcd's gateway does not run as the certificate's user).
pub const COMMON_NAME_REFUSED: &str = "CommonName of client sending a request against \
                                       gateway will be ignored and not used as expected\n";
/// Go's decoder's error for a body that ends inside a JSON value.
const UNEXPECTED_EOF: &str = "unexpected EOF";
/// Requests of a bidirectional stream queued before the body is read no further.
const STREAM_REQUESTS_QUEUED: usize = 16;

/// Whether `path` is the gateway's: under `/v3/` or its deprecated alias `/v3beta/`.
pub fn serves(path: &str) -> bool {
    path.starts_with("/v3/") || path.starts_with("/v3beta/")
}

/// `path` with etcd's rewrite: a leading `/v3beta/` is `/v3/`.
fn normalized(path: &str) -> std::borrow::Cow<'_, str> {
    match path.strip_prefix("/v3beta/") {
        Some(rest) => format!("/v3/{rest}").into(),
        None => path.into(),
    }
}

/// Declares the route table once: [`ROUTES`] (for the tests, the learner rule and the
/// docs) and the dispatch of a unary call, so the two cannot disagree.
macro_rules! routes {
    (
        unary { $($path:literal => $grpc:literal, $service:ident :: $method:ident;)* }
        streams { $($spath:literal => $sgrpc:literal;)* }
    ) => {
        /// etcd 3.4's gateway routes (its `google.api.http` options): the HTTP path and
        /// the gRPC method it calls. etcd's `/v3/maintenance/hash` is `Hash` (the first
        /// of the two methods that claim it), and three lease paths have a `/v3/kv/lease`
        /// alias.
        pub const ROUTES: &[(&str, &str)] = &[$(($path, $grpc),)* $(($spath, $sgrpc),)*];

        /// Runs the unary call at `path` (a `/v3/` path) on `body`; `None` if `path` is
        /// not a unary route.
        async fn unary(
            api: &Api,
            path: &str,
            body: &[u8],
            metadata: MetadataMap,
        ) -> Option<Result<String, Status>> {
            let limit = receive_limit(api);
            Some(match path {
                $($path => call(body, metadata, limit, |r| $service::$method(api, r)).await,)*
                _ => return None,
            })
        }
    };
}

routes! {
    unary {
        "/v3/kv/range" => "/etcdserverpb.KV/Range", Kv::range;
        "/v3/kv/put" => "/etcdserverpb.KV/Put", Kv::put;
        "/v3/kv/deleterange" => "/etcdserverpb.KV/DeleteRange", Kv::delete_range;
        "/v3/kv/txn" => "/etcdserverpb.KV/Txn", Kv::txn;
        "/v3/kv/compaction" => "/etcdserverpb.KV/Compact", Kv::compact;
        "/v3/lease/grant" => "/etcdserverpb.Lease/LeaseGrant", Lease::lease_grant;
        "/v3/lease/revoke" => "/etcdserverpb.Lease/LeaseRevoke", Lease::lease_revoke;
        "/v3/kv/lease/revoke" => "/etcdserverpb.Lease/LeaseRevoke", Lease::lease_revoke;
        "/v3/lease/timetolive" =>
            "/etcdserverpb.Lease/LeaseTimeToLive", Lease::lease_time_to_live;
        "/v3/kv/lease/timetolive" =>
            "/etcdserverpb.Lease/LeaseTimeToLive", Lease::lease_time_to_live;
        "/v3/lease/leases" => "/etcdserverpb.Lease/LeaseLeases", Lease::lease_leases;
        "/v3/kv/lease/leases" => "/etcdserverpb.Lease/LeaseLeases", Lease::lease_leases;
        "/v3/cluster/member/add" => "/etcdserverpb.Cluster/MemberAdd", Cluster::member_add;
        "/v3/cluster/member/remove" =>
            "/etcdserverpb.Cluster/MemberRemove", Cluster::member_remove;
        "/v3/cluster/member/update" =>
            "/etcdserverpb.Cluster/MemberUpdate", Cluster::member_update;
        "/v3/cluster/member/list" => "/etcdserverpb.Cluster/MemberList", Cluster::member_list;
        "/v3/cluster/member/promote" =>
            "/etcdserverpb.Cluster/MemberPromote", Cluster::member_promote;
        "/v3/maintenance/alarm" => "/etcdserverpb.Maintenance/Alarm", Maintenance::alarm;
        "/v3/maintenance/status" => "/etcdserverpb.Maintenance/Status", Maintenance::status;
        "/v3/maintenance/defragment" =>
            "/etcdserverpb.Maintenance/Defragment", Maintenance::defragment;
        "/v3/maintenance/hash" => "/etcdserverpb.Maintenance/Hash", Maintenance::hash;
        "/v3/maintenance/transfer-leadership" =>
            "/etcdserverpb.Maintenance/MoveLeader", Maintenance::move_leader;
        "/v3/auth/enable" => "/etcdserverpb.Auth/AuthEnable", Auth::auth_enable;
        "/v3/auth/disable" => "/etcdserverpb.Auth/AuthDisable", Auth::auth_disable;
        "/v3/auth/authenticate" => "/etcdserverpb.Auth/Authenticate", Auth::authenticate;
        "/v3/auth/user/add" => "/etcdserverpb.Auth/UserAdd", Auth::user_add;
        "/v3/auth/user/get" => "/etcdserverpb.Auth/UserGet", Auth::user_get;
        "/v3/auth/user/list" => "/etcdserverpb.Auth/UserList", Auth::user_list;
        "/v3/auth/user/delete" => "/etcdserverpb.Auth/UserDelete", Auth::user_delete;
        "/v3/auth/user/changepw" =>
            "/etcdserverpb.Auth/UserChangePassword", Auth::user_change_password;
        "/v3/auth/user/grant" => "/etcdserverpb.Auth/UserGrantRole", Auth::user_grant_role;
        "/v3/auth/user/revoke" => "/etcdserverpb.Auth/UserRevokeRole", Auth::user_revoke_role;
        "/v3/auth/role/add" => "/etcdserverpb.Auth/RoleAdd", Auth::role_add;
        "/v3/auth/role/get" => "/etcdserverpb.Auth/RoleGet", Auth::role_get;
        "/v3/auth/role/list" => "/etcdserverpb.Auth/RoleList", Auth::role_list;
        "/v3/auth/role/delete" => "/etcdserverpb.Auth/RoleDelete", Auth::role_delete;
        "/v3/auth/role/grant" =>
            "/etcdserverpb.Auth/RoleGrantPermission", Auth::role_grant_permission;
        "/v3/auth/role/revoke" =>
            "/etcdserverpb.Auth/RoleRevokePermission", Auth::role_revoke_permission;
        "/v3/lock/lock" => "/v3lockpb.Lock/Lock", Lock::lock;
        "/v3/lock/unlock" => "/v3lockpb.Lock/Unlock", Lock::unlock;
        "/v3/election/campaign" => "/v3electionpb.Election/Campaign", Election::campaign;
        "/v3/election/proclaim" => "/v3electionpb.Election/Proclaim", Election::proclaim;
        "/v3/election/leader" => "/v3electionpb.Election/Leader", Election::leader;
        "/v3/election/resign" => "/v3electionpb.Election/Resign", Election::resign;
    }
    streams {
        "/v3/watch" => "/etcdserverpb.Watch/Watch";
        "/v3/lease/keepalive" => "/etcdserverpb.Lease/LeaseKeepAlive";
        "/v3/maintenance/snapshot" => "/etcdserverpb.Maintenance/Snapshot";
        "/v3/election/observe" => "/v3electionpb.Election/Observe";
    }
}

/// The gRPC method etcd's gateway calls for `path` (`/v3/` or `/v3beta/`), if any.
pub fn route(path: &str) -> Option<&'static str> {
    let path = normalized(path);
    ROUTES.iter().find(|(p, _)| *p == path).map(|(_, grpc)| *grpc)
}

/// grpc-gateway v1.9's `HTTPStatusFromCode`: the HTTP status of a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// JSON text as Go's encoder writes it: `<`, `>`, `&`, U+2028 and U+2029 escaped (they
/// can only occur inside strings, so escaping them keeps the JSON the same value).
fn go_escaped(json: String) -> String {
    if !json.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// `value` as etcd's gateway writes it (see the module docs).
fn to_json<T: Serialize>(value: &T) -> Result<String, Status> {
    serde_json::to_string(value)
        .map(go_escaped)
        .map_err(|e| Status::internal(format!("gateway: encoding the answer: {e}")))
}

/// grpc-gateway's error body: `{"error":M,"message":M,"code":N}`.
pub fn error_body(status: &Status) -> String {
    let message = to_json(&status.message()).unwrap_or_else(|_| "\"\"".into());
    format!("{{\"error\":{message},\"message\":{message},\"code\":{}}}", status.code() as i32)
}

/// The answer grpc-gateway gives a failed call.
pub fn error_answer(status: &Status) -> Answer {
    let mut answer = Answer::json(error_body(status));
    answer.status = http_status(status.code());
    answer
}

/// One JSON request of type `T` from `body`, as grpc-gateway's decoder reads it: an
/// empty body or `null` is the default request, unknown fields are ignored, and
/// anything after the first JSON value is not read. A body that is not one is
/// `InvalidArgument`, as etcd's gateway answers it.
pub fn decode<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    let text = body.trim_ascii();
    if text.is_empty() {
        return Ok(T::default());
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = serde_json::Value::deserialize(&mut de)
        .map_err(|e| Status::invalid_argument(decode_error(&e)))?;
    from_value(value).map_err(Status::invalid_argument)
}

/// A request of type `T` from a JSON value, read as Go's `jsonpb` reads one: a `null`
/// (the whole request, or any field's value) is the default, as if it were absent.
fn from_value<T: DeserializeOwned + Default>(mut value: serde_json::Value) -> Result<T, String> {
    if value.is_null() {
        return Ok(T::default());
    }
    drop_nulls(&mut value);
    T::deserialize(value).map_err(|e| e.to_string())
}

/// Removes every object member whose value is `null`, at any depth. Iterative, so a
/// deeply nested body cannot exhaust the stack (serde_json already bounds nesting at
/// 128 levels while parsing).
fn drop_nulls(value: &mut serde_json::Value) {
    let mut pending = vec![value];
    while let Some(v) = pending.pop() {
        match v {
            serde_json::Value::Object(members) => {
                members.retain(|_, m| !m.is_null());
                pending.extend(members.values_mut());
            }
            serde_json::Value::Array(items) => pending.extend(items.iter_mut()),
            _ => {}
        }
    }
}

/// A decoding error's text; a body that ends inside its value in Go's words, as etcd.
fn decode_error(e: &serde_json::Error) -> String {
    if e.is_eof() {
        UNEXPECTED_EOF.to_string()
    } else {
        e.to_string()
    }
}

/// The gRPC receive limit of the client services, which a gateway request passes
/// through in etcd too.
fn receive_limit(api: &Api) -> usize {
    api.limits.receive_bytes()
}

/// grpc-go's refusal of a message of `size` bytes over the receive limit `limit`: what
/// the gateway answers, and what `lib.rs` rewrites tonic's refusal into.
pub(crate) fn too_large(size: impl std::fmt::Display, limit: impl std::fmt::Display) -> Status {
    Status::resource_exhausted(format!(
        "grpc: received message larger than max ({size} vs. {limit})"
    ))
}

/// A unary call: decodes `body`, checks its size as gRPC would, calls `method` with
/// `metadata` (the auth token), and encodes the answer.
async fn call<Req, Resp, F, Fut>(
    body: &[u8],
    metadata: MetadataMap,
    limit: usize,
    method: F,
) -> Result<String, Status>
where
    Req: DeserializeOwned + Default + prost::Message,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    to_json(method(request_of(body, metadata, limit)?).await?.get_ref())
}

/// The request a gateway call makes of `body`: decoded, checked against the gRPC
/// receive limit `limit` as gRPC would, with `metadata` (the auth token).
fn request_of<Req>(
    body: &[u8],
    metadata: MetadataMap,
    limit: usize,
) -> Result<tonic::Request<Req>, Status>
where
    Req: DeserializeOwned + Default + prost::Message,
{
    let req: Req = decode(body)?;
    let size = req.encoded_len();
    if size > limit {
        return Err(too_large(size, limit));
    }
    let mut request = tonic::Request::new(req);
    *request.metadata_mut() = metadata;
    Ok(request)
}

/// The metadata a gateway call carries: the `Authorization` header as etcd's `token`.
fn metadata_of(headers: &http::HeaderMap) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    let token = headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
    if let Some(value) = token.and_then(|t| tonic::metadata::MetadataValue::try_from(t).ok()) {
        metadata.insert(crate::auth::TOKEN_METADATA, value);
    }
    metadata
}

/// A response with `answer`, as the client port writes plain HTTP answers.
pub fn response(answer: Answer) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::new(answer.body));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(answer.content_type));
    for (name, value) in answer.headers {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    response
}

/// The gateway: etcd's JSON API over the services of [`Api`].
#[derive(Clone)]
pub struct Gateway {
    api: Api,
    members: MemberTable,
    me: NodeId,
}

/// A request body that can be read to its end.
pub trait RequestBody:
    http_body::Body<Data = Bytes, Error: Into<tower::BoxError>> + Send + Unpin + 'static
{
}
impl<B> RequestBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<tower::BoxError>> + Send + Unpin + 'static
{
}

impl Gateway {
    /// The gateway of member `me` (whose learner flag `members` has), calling `api`.
    pub fn new(api: Api, members: MemberTable, me: NodeId) -> Self {
        Gateway { api, members, me }
    }

    /// The largest JSON body read: a request at the gRPC receive limit, its bytes in
    /// base64 (4/3) and room for the field names; a larger body is refused unread.
    fn body_limit(&self) -> usize {
        receive_limit(&self.api) * 2
    }

    /// etcd's 400 [`COMMON_NAME_REFUSED`] for a plain HTTP request `req` to a path
    /// [`serves`] accepts, over TLS with a client certificate that has a common name,
    /// while auth is on. etcd checks this before anything else (route, method,
    /// `OPTIONS`, its CORS headers), so the caller does too.
    pub fn refused_common_name<B>(
        &self,
        req: &http::Request<B>,
    ) -> impl Future<Output = Option<http::Response<tonic::body::Body>>> + Send + 'static {
        let named = serves(req.uri().path())
            && req
                .extensions()
                .get::<crate::cert_user::ClientCertificateUser>()
                .is_some_and(|u| u.0.is_some());
        let api = self.api.clone();
        async move {
            if named && api.auth_state().await.is_ok_and(|s| s.enabled) {
                let answer = Answer::error(StatusCode::BAD_REQUEST, COMMON_NAME_REFUSED);
                return Some(response(answer));
            }
            None
        }
    }

    /// The answer to `req`, a plain HTTP request to a path [`serves`] accepts (after
    /// [`Gateway::refused_common_name`]).
    pub async fn answer<B: RequestBody>(
        &self,
        req: http::Request<B>,
    ) -> http::Response<tonic::body::Body> {
        let path = normalized(req.uri().path()).into_owned();
        let Some(grpc) = route(&path) else {
            return response(Answer::error(StatusCode::NOT_FOUND, NOT_FOUND_BODY));
        };
        if req.method() != http::Method::POST {
            let answer =
                Answer::error(StatusCode::METHOD_NOT_ALLOWED, crate::http::METHOD_NOT_ALLOWED_BODY);
            return response(answer);
        }
        if crate::learner::rule(grpc) == crate::learner::LearnerRule::Refuse
            && self.members.is_learner(self.me)
        {
            return response(error_answer(&crate::learner::refused()));
        }
        let metadata = metadata_of(req.headers());
        let body = req.into_body();
        match path.as_str() {
            "/v3/watch" => return self.bidi(body, metadata, |r| Watch::watch(&self.api, r)).await,
            "/v3/lease/keepalive" => {
                return self.bidi(body, metadata, |r| Lease::lease_keep_alive(&self.api, r)).await
            }
            _ => {}
        }
        let body = match read_body(body, self.body_limit()).await {
            Ok(body) => body,
            Err(status) => return response(error_answer(&status)),
        };
        let limit = receive_limit(&self.api);
        let result = match path.as_str() {
            "/v3/maintenance/snapshot" => {
                let call = |r| Maintenance::snapshot(&self.api, r);
                return server_stream(&body, metadata, limit, call).await;
            }
            "/v3/election/observe" => {
                let call = |r| Election::observe(&self.api, r);
                return server_stream(&body, metadata, limit, call).await;
            }
            path => unary(&self.api, path, &body, metadata).await,
        };
        match result {
            Some(Ok(json)) => {
                let mut answer = Answer::json(json);
                answer.headers.push(GRPC_CONTENT_TYPE);
                response(answer)
            }
            Some(Err(status)) => response(error_answer(&status)),
            // A route the table lists but nothing here calls: not served, said so.
            None => response(error_answer(&Status::unimplemented(format!(
                "raftkv's gateway does not serve {path}"
            )))),
        }
    }

    /// A bidirectional stream: the body's JSON requests go to `method` as they arrive,
    /// its answers come back as `{"result":...}` lines.
    async fn bidi<B, Req, S, Resp, F, Fut>(
        &self,
        body: B,
        metadata: MetadataMap,
        method: F,
    ) -> http::Response<tonic::body::Body>
    where
        B: RequestBody,
        Req: DeserializeOwned + prost::Message + Default + Send + 'static,
        S: Stream<Item = Result<Resp, Status>> + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: FnOnce(tonic::Request<tonic::Streaming<Req>>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<S>, Status>>,
    {
        let mut requests = JsonRequests { body, buf: BytesMut::new(), limit: self.body_limit() };
        // grpc-gateway's: a first request that is not JSON fails the call (with the
        // decoder's error, as `Unknown`); after it, a bad request ends the requests.
        let first = match requests.next::<Req>().await {
            Some(Err(e)) => return response(error_answer(&Status::unknown(e))),
            first => first,
        };
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Status>>(STREAM_REQUESTS_QUEUED);
        tokio::spawn(async move {
            let mut next = first;
            while let Some(Ok(req)) = next {
                if tx.send(Ok(Frame::data(grpc_frame(&req)))).await.is_err() {
                    return;
                }
                next = requests.next::<Req>().await;
            }
        });
        let frames =
            http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let decoder = tonic_prost::ProstDecoder::<Req>::default();
        let limit = Some(receive_limit(&self.api));
        let inbound = tonic::Streaming::new_request(decoder, frames, None, limit);
        let mut request = tonic::Request::new(inbound);
        *request.metadata_mut() = metadata;
        match method(request).await {
            Ok(answers) => result_lines(answers.into_inner()).await,
            Err(status) => response(error_answer(&status)),
        }
    }
}

/// `body` whole, or `ResourceExhausted` once it is over `limit` bytes (not read further),
/// or `InvalidArgument` if it cannot be read.
async fn read_body<B: RequestBody>(body: B, limit: usize) -> Result<Bytes, Status> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Status::resource_exhausted(
            format!("gateway: request body larger than max ({limit} bytes)"),
        )),
        Err(e) => Err(Status::invalid_argument(format!("gateway: reading the request body: {e}"))),
    }
}

/// A server stream: one request, a stream of answers.
async fn server_stream<Req, S, Resp, F, Fut>(
    body: &[u8],
    metadata: MetadataMap,
    limit: usize,
    method: F,
) -> http::Response<tonic::body::Body>
where
    Req: DeserializeOwned + Default + prost::Message,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<S>, Status>>,
{
    let request = match request_of::<Req>(body, metadata, limit) {
        Ok(request) => request,
        Err(status) => return response(error_answer(&status)),
    };
    match method(request).await {
        Ok(answers) => result_lines(answers.into_inner()).await,
        Err(status) => response(error_answer(&status)),
    }
}

/// `message` as a gRPC frame: uncompressed, its length, its bytes.
fn grpc_frame<M: prost::Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Cannot fail: the buffer has room for the message.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// grpc-gateway's stream error chunk: `{"error":{"grpc_code":N,"http_code":H,
/// "message":M,"http_status":T}}`.
pub fn stream_error_line(status: &Status) -> String {
    let http = http_status(status.code());
    let message = to_json(&status.message()).unwrap_or_else(|_| "\"\"".into());
    format!(
        "{{\"error\":{{\"grpc_code\":{},\"http_code\":{},\"message\":{message},\"http_status\":\"{}\"}}}}",
        status.code() as i32,
        http.as_u16(),
        http.canonical_reason().unwrap_or("")
    )
}

/// The answers of a stream as grpc-gateway's `ForwardResponseStream` writes them: each
/// `{"result":...}` and a newline; an error ends it with its error chunk (and is the
/// status, if it comes before any answer). The status is sent with the first answer.
async fn result_lines<S, Resp>(answers: S) -> http::Response<tonic::body::Body>
where
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    let mut answers = Box::pin(answers);
    let first = answers.next().await;
    let status = match &first {
        Some(Err(status)) => http_status(status.code()),
        _ => StatusCode::OK,
    };
    let lines = tokio_stream::iter(first).chain(answers).map(|answer| match answer {
        Ok(message) => match to_json(&message) {
            Ok(json) => Ok(format!("{{\"result\":{json}}}\n")),
            Err(status) => Err(status),
        },
        Err(status) => Err(status),
    });
    // The error chunk ends the stream (grpc-gateway writes no delimiter after it).
    let mut ended = false;
    let chunks = lines.map_while(move |line| {
        if ended {
            return None;
        }
        Some(match line {
            Ok(line) => line,
            Err(status) => {
                ended = true;
                stream_error_line(&status)
            }
        })
    });
    let frames = chunks.map(|chunk| Ok::<_, Status>(Frame::data(Bytes::from(chunk))));
    let mut response =
        http::Response::new(tonic::body::Body::new(http_body_util::StreamBody::new(frames)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(JSON));
    headers.insert(GRPC_CONTENT_TYPE.0, http::HeaderValue::from_static(GRPC_CONTENT_TYPE.1));
    response
}

/// The JSON requests of a bidirectional stream's body, as they arrive.
struct JsonRequests<B> {
    body: B,
    buf: BytesMut,
    limit: usize,
}

impl<B: RequestBody> JsonRequests<B> {
    /// The next request; `None` at the body's end (or when it cannot be read, or a
    /// request is larger than the limit); an error if the next value is not one, or the
    /// body ends inside it.
    async fn next<T: DeserializeOwned + Default>(&mut self) -> Option<Result<T, String>> {
        loop {
            let text = self.buf.trim_ascii_start();
            let pending = !text.is_empty();
            if pending {
                let mut values =
                    serde_json::Deserializer::from_slice(text).into_iter::<serde_json::Value>();
                match values.next() {
                    Some(Ok(value)) => {
                        let used = self.buf.len() - text.len() + values.byte_offset();
                        let _ = self.buf.split_to(used);
                        return Some(from_value(value));
                    }
                    Some(Err(e)) if !e.is_eof() => return Some(Err(e.to_string())),
                    _ => {}
                }
            }
            if self.buf.len() > self.limit {
                return None;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) => return None,
                None if pending => return Some(Err(UNEXPECTED_EOF.into())),
                None => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::etcdserverpb as pb;

    #[test]
    fn routes_are_etcd_34s_with_the_v3beta_alias() {
        assert_eq!(route("/v3/kv/put"), Some("/etcdserverpb.KV/Put"));
        assert_eq!(route("/v3beta/kv/put"), Some("/etcdserverpb.KV/Put"));
        assert_eq!(route("/v3/kv/lease/timetolive"), Some("/etcdserverpb.Lease/LeaseTimeToLive"));
        assert_eq!(route("/v3/maintenance/hash"), Some("/etcdserverpb.Maintenance/Hash"));
        assert_eq!(route("/v3/watch"), Some("/etcdserverpb.Watch/Watch"));
        assert_eq!(route("/v3/kv/range/"), None);
        assert_eq!(route("/v3/kv/nothing"), None);
        assert_eq!(route("/v3alpha/kv/put"), None, "3.4 serves /v3beta only");
        assert!(serves("/v3/anything") && serves("/v3beta/kv/put"));
        assert!(!serves("/v3") && !serves("/health") && !serves("/v3alpha/kv/put"));
        // Each path once; every gRPC method etcd 3.4 routes, and only those.
        let mut paths: Vec<_> = ROUTES.iter().map(|(p, _)| *p).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ROUTES.len());
        assert_eq!(ROUTES.len(), 48);
    }

    #[test]
    fn http_status_is_grpc_gateway_v1s_mapping() {
        let cases = [
            (Code::Cancelled, 408),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, http) in cases {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn errors_are_grpc_gateways_json() {
        let s = Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        let answer = error_answer(&s);
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.content_type, JSON);
        assert_eq!(
            answer.body,
            "{\"error\":\"etcdserver: mvcc: required revision has been compacted\",\
             \"message\":\"etcdserver: mvcc: required revision has been compacted\",\"code\":11}"
        );
        let quoted = error_body(&Status::invalid_argument("a \"b\" <c>"));
        assert_eq!(
            quoted,
            r#"{"error":"a \"b\" \u003cc\u003e","message":"a \"b\" \u003cc\u003e","code":3}"#
        );
        assert_eq!(
            stream_error_line(&Status::unauthenticated("etcdserver: invalid auth token")),
            "{\"error\":{\"grpc_code\":16,\"http_code\":401,\
             \"message\":\"etcdserver: invalid auth token\",\"http_status\":\"Unauthorized\"}}"
        );
    }

    #[test]
    fn requests_decode_as_etcds_gateway_reads_them() {
        // Both field names, 64-bit numbers as strings or numbers, enums by name or number.
        let r: pb::RangeRequest = decode(
            br#"{"key": "Zm9v", "range_end": "AA==", "limit": "2", "revision": 3,
                 "sort_order": "DESCEND", "sortTarget": 2, "keysOnly": true, "bogus": 1}"#,
        )
        .unwrap();
        assert_eq!(&r.key[..], b"foo");
        assert_eq!(&r.range_end[..], b"\0");
        assert_eq!((r.limit, r.revision, r.sort_order, r.sort_target), (2, 3, 2, 2));
        assert!(r.keys_only);
        // Empty, null, and what follows the first value: as Go's decoder.
        assert_eq!(decode::<pb::RangeRequest>(b"").unwrap(), pb::RangeRequest::default());
        assert_eq!(decode::<pb::RangeRequest>(b" null ").unwrap(), pb::RangeRequest::default());
        let r: pb::PutRequest = decode(br#"{"key": "Zm9v"} trailing"#).unwrap();
        assert_eq!(&r.key[..], b"foo");
        // A null field is an absent one, as Go's jsonpb reads it, at any depth.
        let r: pb::RangeRequest = decode(br#"{"key": null, "limit": null}"#).unwrap();
        assert_eq!(r, pb::RangeRequest::default());
        let txn: pb::TxnRequest =
            decode(br#"{"success": [{"requestPut": {"key": "Zm9v", "lease": null}}]}"#).unwrap();
        assert_eq!(txn.success.len(), 1);
        let e = decode::<pb::RangeRequest>(b"{\"key\": ").unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "unexpected EOF"));
        for bad in [&b"[]"[..], b"{\"key\": \"!!!\"}", b"{\"limit\": 1.5}"] {
            let e = decode::<pb::RangeRequest>(bad).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn answers_are_written_as_etcds_gateway_writes_them() {
        let header = Some(pb::ResponseHeader {
            cluster_id: 7222109305586615858,
            member_id: 17767816877210000001,
            revision: 2,
            raft_term: 2,
        });
        let kv = proto::mvccpb::KeyValue {
            key: Bytes::from_static(b"foo"),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            value: Bytes::from_static(b"bar"),
            lease: 0,
        };
        let range = pb::RangeResponse { header, kvs: vec![kv], count: 1, more: false };
        // etcd 3.4.23's answer to the same range, byte for byte.
        assert_eq!(
            to_json(&range).unwrap(),
            "{\"header\":{\"cluster_id\":\"7222109305586615858\",\"member_id\":\
             \"17767816877210000001\",\"revision\":\"2\",\"raft_term\":\"2\"},\"kvs\":[{\"key\":\
             \"Zm9v\",\"create_revision\":\"2\",\"mod_revision\":\"2\",\"version\":\"1\",\
             \"value\":\"YmFy\"}],\"count\":\"1\"}"
        );
        let grant = pb::LeaseGrantResponse { ttl: 30, id: 1234, ..Default::default() };
        assert_eq!(to_json(&grant).unwrap(), "{\"ID\":\"1234\",\"TTL\":\"30\"}");
        let event = proto::mvccpb::Event { r#type: 1, ..Default::default() };
        assert_eq!(to_json(&event).unwrap(), "{\"type\":\"DELETE\"}");
    }

    #[test]
    fn a_grpc_frame_is_flag_length_message() {
        let req = pb::LeaseKeepAliveRequest { id: 7 };
        assert_eq!(&grpc_frame(&req)[..], [0, 0, 0, 0, 2, 0x08, 7]);
    }

    #[tokio::test]
    async fn stream_requests_are_read_as_they_come_and_a_bad_one_ends_them() {
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
            ["{\"ID\": 1}{\"I", "D\": \"2\"}\n  {\"ID\"", ": 3} {oops} {\"ID\": 4}"]
                .into_iter()
                .map(|c| Ok(Frame::data(Bytes::from(c))))
                .collect();
        let body = http_body_util::StreamBody::new(tokio_stream::iter(chunks));
        let mut requests = JsonRequests { body, buf: BytesMut::new(), limit: 1024 };
        let mut ids = Vec::new();
        while let Some(Ok(r)) = requests.next::<pb::LeaseKeepAliveRequest>().await {
            ids.push(r.id);
        }
        assert_eq!(ids, [1, 2, 3]);
        // A body that ends inside a request: Go's error, as etcd's first-request check.
        let body = http_body_util::Full::new(Bytes::from_static(b" {\"ID\": 5"));
        let mut requests = JsonRequests { body, buf: BytesMut::new(), limit: 1024 };
        let next = requests.next::<pb::LeaseKeepAliveRequest>().await;
        assert_eq!(next.unwrap().unwrap_err(), "unexpected EOF");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_not_read() {
        let body = http_body_util::Full::new(Bytes::from(vec![b' '; 100]));
        let e = read_body(body, 99).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert_eq!(http_status(e.code()), StatusCode::TOO_MANY_REQUESTS);
        let body = http_body_util::Full::new(Bytes::from_static(b"{}"));
        assert_eq!(&read_body(body, 99).await.unwrap()[..], b"{}");
    }
}
