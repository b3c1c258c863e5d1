//! # client: talk to a raftkv cluster
//!
//! A small client over etcd's v3 API (so the same code also talks to etcd) with the
//! clerk's behaviour: it remembers which member answered last and goes there first,
//! moves on to the next member when one is unreachable or has no leader, retries until a
//! deadline, and — against raftkv — tags writes with a session and sequence number so a
//! write retried after a timeout or a leader change executes exactly once.
//!
//! ```no_run
//! # async fn demo() -> Result<(), client::ClientError> {
//! let mut c = client::Client::connect(&["http://127.0.0.1:2379".into()], Default::default())?;
//! c.put(b"greeting", b"hello").await?;
//! let v = c.get(b"greeting", false).await?;
//! assert_eq!(v.map(|kv| kv.value.to_vec()), Some(b"hello".to_vec()));
//! # Ok(()) }
//! ```

use bytes::Bytes;
use node::{Clerk, RequestError};
use proto::etcdserverpb as pb;
use proto::etcdserverpb::auth_client::AuthClient;
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use proto::session::session_client::SessionClient;
use std::error::Error as _;
use std::fmt;
use std::time::{Duration, Instant};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

pub use proto::etcdserverpb::{DeleteRangeResponse, PutResponse, RangeResponse, StatusResponse};
pub use proto::mvccpb::KeyValue;

/// How the client behaves.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Give up on a request after this long.
    pub deadline: Duration,
    /// Give up on one attempt (one member) after this long: the connection to that
    /// member is rebuilt and the next member is tried, within `deadline`. A connection
    /// that never answers (a member that stopped mid-request, a channel that did not
    /// reconnect after its member restarted) then costs this, not the whole deadline.
    /// Writes tagged with a session (`exactly_once`) are safe to send again.
    pub attempt_timeout: Duration,
    /// Tag writes with a raftkv session so retries execute once (needs a raftkv server;
    /// turn off to talk to etcd).
    pub exactly_once: bool,
    /// Authenticate as this user (etcd's Auth service) before the first request and
    /// send its token with every request; against a cluster whose auth is off, requests
    /// go without a token, as etcd's clients do ([`Client::auth_not_enabled`] says so).
    pub credentials: Option<Credentials>,
}

/// A user name and password for etcd's authentication (etcdctl's `--user`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user's name.
    pub user: String,
    /// The user's password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password: options end up in logs and panic messages.
        f.debug_struct("Credentials").field("user", &self.user).finish_non_exhaustive()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(3),
            exactly_once: true,
            credentials: None,
        }
    }
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// An endpoint is not a valid URL.
    BadEndpoint(String),
    /// The server refused the request (bad input, compacted revision, ...): do not retry.
    Refused {
        /// gRPC code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// No member answered successfully before the deadline.
    Unavailable {
        /// The last error seen.
        last: String,
    },
    /// Every endpoint failed for a reason retrying cannot mend: a TLS handshake refused
    /// (a certificate or CA given wrong), or a URL whose scheme is not what the member
    /// serves (`http://` for a TLS port, or the reverse). One line per cause, naming
    /// the endpoints and the flag to check.
    Misconfigured(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::BadEndpoint(e) => write!(f, "bad endpoint: {e}"),
            ClientError::Refused { code, message } => write!(f, "{message} ({code})"),
            ClientError::Unavailable { last } => {
                write!(f, "no member answered in time; last error: {last}")
            }
            ClientError::Misconfigured(why) => f.write_str(why),
        }
    }
}
impl std::error::Error for ClientError {}

/// A lazily connecting channel to one endpoint (`http://`, `https://` or bare
/// `host:port`); an `https://` one needs `tls`.
pub fn channel(endpoint: &str, tls: Option<&tls::ClientTls>) -> Result<Channel, ClientError> {
    let url =
        if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") };
    let ep = Endpoint::from_shared(url.clone())
        .map_err(|_| ClientError::BadEndpoint(format!("{endpoint:?} is not a URL")))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true);
    if !tls::is_https(&url) {
        return Ok(ep.connect_lazy());
    }
    match tls {
        Some(tls) => Ok(ep.connect_with_connector_lazy(tls.connector())),
        None => Err(ClientError::BadEndpoint(format!(
            "{endpoint} is https:// but no CA is given; pass --cacert (the CA that signs the \
             server's certificate)"
        ))),
    }
}

/// A connection to a cluster. Requests take `&mut self`: one at a time per client (a
/// session has one write in flight); open several clients for concurrency.
pub struct Client {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    tls: Option<tls::ClientTls>,
    clerk: Clerk,
    opts: ClientOptions,
    auth: Auth,
}

/// Where the client stands with etcd's authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Auth {
    /// No credentials given.
    Off,
    /// Credentials given; authenticate before the next request.
    Pending,
    /// The token to send.
    Token(AsciiMetadataValue),
    /// The cluster's auth is off: requests go without a token.
    NotEnabled,
}

impl Auth {
    /// `message` as a request, with the token if there is one.
    fn request<M>(&self, message: M) -> tonic::Request<M> {
        let mut request = tonic::Request::new(message);
        if let Auth::Token(token) = self {
            attach_token(&mut request, token);
        }
        request
    }
}

/// An etcd auth token, as the `token` metadata of a request carries it.
pub type Token = AsciiMetadataValue;

/// Adds `token` to `request` where etcd reads it (the `token` gRPC metadata): for
/// callers that build their own gRPC clients on [`channel`]s, as `raftkv bench` does.
pub fn attach_token<M>(request: &mut tonic::Request<M>, token: &Token) {
    request.metadata_mut().insert(TOKEN_METADATA, token.clone());
}

/// Whether `status` refuses a request's token as invalid: it expired unused
/// (`--auth-token-ttl`), or the member restarted since it was issued (simple tokens
/// live in memory). etcd's clients then authenticate again, once
/// ([`Client::authenticate_again`]); another refusal is final.
pub fn is_invalid_token(status: &tonic::Status) -> bool {
    status.message() == INVALID_TOKEN
}

/// The metadata key etcd reads a client's auth token from.
const TOKEN_METADATA: &str = "token";
/// etcd's answer to a token that expired or that it never issued.
const INVALID_TOKEN: &str = "etcdserver: invalid auth token";
/// etcd's answer to Authenticate while auth is off.
const AUTH_NOT_ENABLED: &str = "etcdserver: authentication is not enabled";
/// Longest each check of why an endpoint failed may take (a probe connection of its
/// own, see [`Client::diagnose`]).
const DIAGNOSIS_TIMEOUT: Duration = Duration::from_secs(2);

/// What went wrong on one attempt.
enum Attempt {
    /// Retry elsewhere or later.
    Retry(RequestError, String),
    /// Do not retry.
    Fatal(ClientError),
}

fn classify(s: tonic::Status) -> Attempt {
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Aborted => {
            Attempt::Retry(RequestError::NotLeader { leader: None }, s.message().to_string())
        }
        Code::Cancelled => Attempt::Retry(RequestError::Timeout, s.message().to_string()),
        // A member with too much work queued proposed nothing: try again after a pause.
        Code::ResourceExhausted if s.message() == "etcdserver: too many requests" => {
            Attempt::Retry(RequestError::Busy, s.message().to_string())
        }
        code => Attempt::Fatal(ClientError::Refused {
            code: format!("{code:?}"),
            message: s.message().to_string(),
        }),
    }
}

impl Client {
    /// A client for the cluster at `endpoints` (`http://host:port`); connects lazily.
    pub fn connect(endpoints: &[String], opts: ClientOptions) -> Result<Client, ClientError> {
        Client::connect_tls(endpoints, opts, None)
    }

    /// [`Client::connect`], reaching `https://` endpoints with `tls` (etcdctl's
    /// `--cacert --cert --key`).
    pub fn connect_tls(
        endpoints: &[String],
        opts: ClientOptions,
        tls: Option<&tls::ClientTls>,
    ) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::BadEndpoint("no endpoints given".into()));
        }
        let channels = endpoints.iter().map(|e| channel(e, tls)).collect::<Result<Vec<_>, _>>()?;
        let ids = (1..=endpoints.len() as u64).collect();
        let auth = if opts.credentials.is_some() { Auth::Pending } else { Auth::Off };
        Ok(Client {
            endpoints: endpoints.to_vec(),
            channels,
            tls: tls.cloned(),
            clerk: Clerk::new(ids, 0),
            opts,
            auth,
        })
    }

    /// Authenticates now with the credentials of [`ClientOptions::credentials`], if not
    /// done yet (requests otherwise do it first). Fails as etcd does on a wrong user or
    /// password: "etcdserver: authentication failed, invalid user ID or password".
    pub async fn authenticate(&mut self) -> Result<(), ClientError> {
        // Every attempt authenticates first when it has to: a call that does nothing
        // else is authentication alone, with the retries and diagnosis of any call.
        self.with_retries(|_, _| async { Ok(()) }).await
    }

    /// Forgets the token and authenticates again (with the retries of any call): what
    /// to do, once, when a token of [`Client::token`] is refused ([`is_invalid_token`]).
    /// Without credentials it does nothing.
    pub async fn authenticate_again(&mut self) -> Result<(), ClientError> {
        if matches!(self.auth, Auth::Token(_)) {
            self.auth = Auth::Pending;
        }
        self.authenticate().await
    }

    /// The token requests carry, once [`Client::authenticate`] got one; for gRPC clients
    /// of the caller's own ([`attach_token`]). `None` without credentials, before
    /// authenticating, or when the cluster's auth is off.
    pub fn token(&self) -> Option<&Token> {
        match &self.auth {
            Auth::Token(token) => Some(token),
            _ => None,
        }
    }

    /// Whether credentials were given but the cluster's auth turned out to be off, so
    /// requests go without a token (etcdctl says nothing of it).
    pub fn auth_not_enabled(&self) -> bool {
        self.auth == Auth::NotEnabled
    }

    /// Authenticates on `channel` if credentials are given and there is no token yet.
    async fn ensure_token(&mut self, channel: Channel) -> Result<(), tonic::Status> {
        let (Auth::Pending, Some(credentials)) = (&self.auth, &self.opts.credentials) else {
            return Ok(());
        };
        let request = pb::AuthenticateRequest {
            name: credentials.user.clone(),
            password: credentials.password.clone(),
        };
        match AuthClient::new(channel).authenticate(request).await {
            Ok(answer) => {
                let token = answer.into_inner().token;
                let token = AsciiMetadataValue::try_from(token.as_str()).map_err(|_| {
                    tonic::Status::internal(format!(
                        "the member sent a token {token:?} that \
                     cannot be sent back (not visible ASCII)"
                    ))
                })?;
                self.auth = Auth::Token(token);
                Ok(())
            }
            Err(s) if s.message() == AUTH_NOT_ENABLED => {
                self.auth = Auth::NotEnabled;
                Ok(())
            }
            Err(s) => Err(s),
        }
    }

    /// Why endpoint `i` failed with `status`, if the reason is one retrying cannot
    /// mend: its URL's scheme is not what it serves, or the TLS handshake is refused
    /// (our certificate by it, or its own by us). Reads after the endpoint. Asks on
    /// connections of its own, each within [`DIAGNOSIS_TIMEOUT`]: gRPC keeps an error's
    /// text, not its type.
    async fn diagnose(&self, i: usize, status: &tonic::Status) -> Option<String> {
        let endpoint = &self.endpoints[i];
        let url =
            if endpoint.contains("://") { endpoint.clone() } else { format!("http://{endpoint}") };
        let uri: tonic::codegen::http::Uri = url.parse().ok()?;
        let https = tls::is_https(&url);
        let host = uri.host()?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let timeout = DIAGNOSIS_TIMEOUT.min(self.opts.attempt_timeout);
        match tls::speaks_otherwise(host, port, https, timeout).await {
            Some(tls::Speaks::PlainHttp2) => {
                return Some(format!(
                    "serves plain HTTP/2, not TLS: use http://{host}:{port} in --endpoints"
                ))
            }
            Some(tls::Speaks::Tls) => {
                return Some(format!(
                    "serves TLS, not plain HTTP/2: use https://{host}:{port} in --endpoints, \
                     with --cacert (the CA that signs the members' certificates)"
                ))
            }
            None => {}
        }
        let tls = self.tls.as_ref().filter(|_| https)?;
        match tls.explain(status) {
            Some(why) => Some(why),
            None => tls.probe(&uri, timeout).await,
        }
    }

    /// The endpoint that answered last.
    pub fn current_endpoint(&self) -> &str {
        &self.endpoints[(self.clerk.target() - 1) as usize]
    }

    /// Runs `call` (given a channel and the authentication to build requests with)
    /// against members until one succeeds or the deadline passes; authenticates first
    /// when credentials are given and there is no token yet, and again once when a
    /// token is refused as invalid (it expired unused). Stops early when every endpoint
    /// failed for a reason retrying cannot mend ([`ClientError::Misconfigured`]).
    async fn with_retries<T, F, Fut>(&mut self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel, Auth) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + self.opts.deadline;
        let mut backoff = Duration::from_millis(20);
        let mut last = String::from("no attempt");
        let mut misconfigured: Vec<Option<String>> = vec![None; self.endpoints.len()];
        let mut authenticated_again = false;
        while Instant::now() < deadline {
            let target = self.clerk.target();
            let i = (target - 1) as usize;
            let channel = self.channels[i].clone();
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt_timeout = left.min(self.opts.attempt_timeout);
            let attempt = async {
                self.ensure_token(channel.clone()).await?;
                call(channel, self.auth.clone()).await
            };
            match tokio::time::timeout(attempt_timeout, attempt).await {
                Ok(Ok(v)) => {
                    self.clerk.on_success(target);
                    return Ok(v);
                }
                Ok(Err(status))
                    if is_invalid_token(&status)
                        && matches!(self.auth, Auth::Token(_))
                        && !authenticated_again =>
                {
                    self.auth = Auth::Pending;
                    authenticated_again = true;
                    continue;
                }
                Ok(Err(status)) => {
                    // A failure on our side of the connection (it carries the transport's
                    // error) may be a TLS or scheme mistake: find out once per endpoint.
                    if status.source().is_some() && misconfigured[i].is_none() {
                        misconfigured[i] = self.diagnose(i, &status).await;
                        if misconfigured.iter().all(Option::is_some) {
                            let causes = self.endpoints.iter().zip(&misconfigured);
                            let causes =
                                causes.filter_map(|(e, why)| Some((e.as_str(), why.as_deref()?)));
                            return Err(ClientError::Misconfigured(tls::join_by_cause(
                                causes, "", "",
                            )));
                        }
                    }
                    match classify(status) {
                        Attempt::Fatal(e) => return Err(e),
                        Attempt::Retry(err, msg) => {
                            last = match &misconfigured[i] {
                                Some(why) => format!("{} {why}", self.endpoints[i]),
                                None => format!("{}: {msg}", self.endpoints[i]),
                            };
                            self.clerk.on_error(target, &err);
                        }
                    }
                }
                Err(_) => {
                    let endpoint = &self.endpoints[(target - 1) as usize];
                    last = format!("{endpoint}: no answer within {:?}", self.opts.attempt_timeout);
                    // A fresh connection next time: the old one may never answer again.
                    if let Ok(fresh) = self::channel(endpoint, self.tls.as_ref()) {
                        self.channels[(target - 1) as usize] = fresh;
                    }
                    self.clerk.on_no_answer();
                }
            }
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                .await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
        Err(ClientError::Unavailable { last })
    }

    /// Metadata for a write: the session and a new sequence number, if exactly-once.
    async fn session_tag(&mut self) -> Result<Option<(u64, u64)>, ClientError> {
        if !self.opts.exactly_once {
            return Ok(None);
        }
        if self.clerk.session().is_none() {
            let id = self
                .with_retries(|ch, auth| async move {
                    let request = auth.request(proto::session::RegisterRequest {});
                    let r = SessionClient::new(ch).register(request).await?;
                    Ok(r.into_inner().client_id)
                })
                .await?;
            self.clerk.on_registered(id);
        }
        Ok(self.clerk.next_request_id().map(|r| (r.client_id, r.seq)))
    }

    async fn write<T, M, F, Fut>(&mut self, msg: M, call: F) -> Result<T, ClientError>
    where
        M: Clone,
        F: Fn(KvClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let tag = self.session_tag().await?;
        let r = self
            .with_retries(|ch, auth| {
                let mut req = auth.request(msg.clone());
                if let Some((client_id, seq)) = tag {
                    let md = req.metadata_mut();
                    md.insert("raftkv-client-id", client_id.to_string().parse().expect("digits"));
                    md.insert("raftkv-seq", seq.to_string().parse().expect("digits"));
                }
                call(KvClient::new(ch), req)
            })
            .await;
        if let Err(ClientError::Refused { message, .. }) = &r {
            if message.contains("session") {
                // Our session expired: open a new one next time.
                self.clerk.reset_session();
            }
        }
        r.map(|resp| resp.into_inner())
    }

    /// Sets `key` to `value`.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<PutResponse, ClientError> {
        let req = pb::PutRequest {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            ..Default::default()
        };
        self.write(req, |mut c, r| async move { c.put(r).await }).await
    }

    /// Reads one key (linearizable unless `serializable`).
    pub async fn get(
        &mut self,
        key: &[u8],
        serializable: bool,
    ) -> Result<Option<KeyValue>, ClientError> {
        let req = pb::RangeRequest {
            key: Bytes::copy_from_slice(key),
            serializable,
            ..Default::default()
        };
        Ok(self.range(req).await?.kvs.into_iter().next())
    }

    /// Any Range request.
    pub async fn range(&mut self, req: pb::RangeRequest) -> Result<RangeResponse, ClientError> {
        self.with_retries(|ch, auth| {
            let req = auth.request(req.clone());
            async move { Ok(KvClient::new(ch).range(req).await?.into_inner()) }
        })
        .await
    }

    /// Deletes `key` (or, with `prefix`, every key starting with it).
    pub async fn delete(
        &mut self,
        key: &[u8],
        prefix: bool,
    ) -> Result<DeleteRangeResponse, ClientError> {
        let range_end = if prefix { prefix_end(key) } else { Vec::new() };
        let req = pb::DeleteRangeRequest {
            key: Bytes::copy_from_slice(key),
            range_end: range_end.into(),
            ..Default::default()
        };
        self.write(req, |mut c, r| async move { c.delete_range(r).await }).await
    }

    /// Appends `suffix` to the value of `key` atomically (a compare-and-swap loop on the
    /// key's mod revision, so it works against etcd too). Returns the new value.
    pub async fn append(&mut self, key: &[u8], suffix: &[u8]) -> Result<Vec<u8>, ClientError> {
        loop {
            let cur = self.get(key, false).await?;
            let (old, mod_rev) =
                cur.map_or((Vec::new(), 0), |kv| (kv.value.to_vec(), kv.mod_revision));
            let mut new = old.clone();
            new.extend_from_slice(suffix);
            use pb::compare::{CompareResult, CompareTarget, TargetUnion};
            let txn = pb::TxnRequest {
                compare: vec![pb::Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Mod as i32,
                    key: Bytes::copy_from_slice(key),
                    range_end: Bytes::new(),
                    target_union: Some(TargetUnion::ModRevision(mod_rev)),
                }],
                success: vec![pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                        key: Bytes::copy_from_slice(key),
                        value: new.clone().into(),
                        ..Default::default()
                    })),
                }],
                failure: vec![],
            };
            let r = self.write(txn, |mut c, r| async move { c.txn(r).await }).await?;
            if r.succeeded {
                return Ok(new);
            }
        }
    }

    /// The status of the member at `endpoint` (an index into the endpoints given), with
    /// the token if [`Client::authenticate`] got one. A failure says why in TLS terms,
    /// or that the URL's scheme is wrong, when that is the cause.
    pub async fn status(&self, endpoint: usize) -> Result<StatusResponse, ClientError> {
        let mut maintenance = MaintenanceClient::new(self.channels[endpoint].clone());
        let call = maintenance.status(self.auth.request(pb::StatusRequest {}));
        let unavailable = |why: &str| ClientError::Unavailable {
            last: format!("{}: {why}", self.endpoints[endpoint]),
        };
        match tokio::time::timeout(self.opts.attempt_timeout, call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) if s.source().is_some() => match self.diagnose(endpoint, &s).await {
                Some(why) => Err(unavailable(&why)),
                None => Err(unavailable(&proto::status_with_causes(&s))),
            },
            Ok(Err(s)) => Err(unavailable(&proto::status_with_causes(&s))),
            Err(_) => {
                Err(unavailable(&format!("no answer within {:?}", self.opts.attempt_timeout)))
            }
        }
    }
}

/// The first key after every key starting with `prefix` (etcd's prefix range end).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
