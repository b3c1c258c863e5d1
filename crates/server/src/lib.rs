//! # server: one raftkv member as a process
//!
//! The thin, IO-heavy shell around the [`node`] driver: a dedicated node thread (see
//! [`runtime`]) that batches inputs and syncs the WAL once per batch; a peer transport
//! ([`peer`]: Raft messages on framed streams, [`peer_stream`]; cold calls on gRPC); etcd's v3 API for clients ([`etcd`]); `GET /health` and `GET /metrics`
//! ([`http`]). Everything that decides anything lives in `raft`, `kv`, `node` and `storage`,
//! which the simulator runs too; this crate only moves bytes and schedules work.

/// Implements `tokio::io::AsyncWrite` for a connection wrapper `$wrapper<IO>` by passing
/// every call to its `io` field: the listeners' wrappers (the client port's authority
/// rewrite, the peer port's preface sniff) change what they read, never what they write.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<IO> {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.io.is_write_vectored()
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
            }
        }
    };
}

pub mod accept;
pub mod auth;
pub mod authority;
pub mod backup;
pub mod cert_user;
pub mod client_http;
pub mod cluster;
pub mod compactor;
pub mod concurrency;
pub mod config;
pub mod cors;
pub mod etcd;
pub mod etcd_db;
pub mod gateway;
pub mod grpc_metrics;
pub mod hash;
pub mod http;
pub mod learner;
pub mod lease;
pub mod membership;
pub mod metrics;
pub mod peer;
pub mod peer_forward;
pub mod peer_frame;
pub mod peer_grpc;
pub mod peer_guard;
pub mod peer_stream;
pub mod runtime;
pub mod snapshot_source;
pub mod tokens;
pub mod watch;

use crate::config::{check_data_dir, ServerConfig};
use crate::metrics::Metrics;
use crate::peer::{ClientUrls, Identity, PeerService, Transport};
use node::{Node, NodeConfig};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Why the server stopped or could not start.
#[derive(Debug)]
pub struct ServerError(pub String);

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ServerError {}

async fn bind(flag: &str, addr: std::net::SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another process uses this port: stop it or choose another port)"
        } else {
            ""
        };
        ServerError(format!("{flag}: cannot listen on {addr}: {e}{hint}"))
    })
}

/// The file in a data dir that a running member holds locked (see [`lock_data_dir`]).
pub const LOCK_FILE: &str = "raftkv.lock";

/// Creates `data_dir` if need be and takes an exclusive lock on its [`LOCK_FILE`] for as
/// long as the returned file is open (the OS drops the lock when the process ends,
/// however it ends). A second member started on the same data dir would write the same
/// WAL and serve its own stale reads under the first one's id; etcd refuses it with its
/// bbolt file lock, and so does this. The file holds the holder's process id, for the
/// error message.
pub fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, ServerError> {
    use std::io::{Read, Seek, Write};
    let shown = data_dir.display();
    let err =
        |what: &str, e: std::io::Error| ServerError(format!("--data-dir {shown}: {what}: {e}"));
    std::fs::create_dir_all(data_dir).map_err(|e| err("cannot create", e))?;
    let path = data_dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| err(&format!("cannot open {LOCK_FILE}"), e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let pid = match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            return Err(ServerError(format!(
                "--data-dir {shown} is in use by another raftkv process{pid}, which holds \
                 {}: stop it first, or give this member a data dir of its own",
                path.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(err(&format!("cannot lock {LOCK_FILE}"), e))
        }
    }
    // Only the holder writes its pid; a failure to write it costs only the message.
    let _ = file.set_len(0).and_then(|()| file.rewind());
    let _ = writeln!(file, "{}", std::process::id());
    Ok(file)
}

/// Runs a member until Ctrl-C (or SIGTERM), or until it hits a fatal error.
pub async fn serve(cfg: ServerConfig) -> Result<(), ServerError> {
    serve_until(cfg, std::future::pending()).await
}

/// [`serve`], also stopping as on a signal when `stop` completes.
pub async fn serve_until(
    cfg: ServerConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let mut cfg = cfg;
    // Before anything reads or writes the data dir; held until this function returns.
    let _data_dir_lock = lock_data_dir(&cfg.data_dir)?;
    membership::refuse_removed(&cfg.data_dir).map_err(|e| ServerError(e.0))?;
    // Load the certificates before anything else: a wrong path is a start-up error.
    let tls_err = |e: tls::TlsError| ServerError(e.0);
    let client_tls =
        cfg.client_tls.clone().map(tls::ServerTls::new).transpose().map_err(tls_err)?;
    if let (None, Some(l)) = (&client_tls, cfg.listen_client.iter().find(|l| l.https)) {
        return Err(ServerError(format!(
            "--listen-client-urls {}: an https:// URL needs the client port's certificate \
             (--cert-file and --key-file)",
            l.url()
        )));
    }
    let peer_tls = cfg.peer_tls.clone().map(tls::ServerTls::new).transpose().map_err(tls_err)?;
    let peer_client_tls =
        cfg.peer_client_tls.clone().map(tls::ClientTls::new).transpose().map_err(tls_err)?;
    // A member that joins asks the cluster for its ids first (see `membership`).
    let start = membership::settle_identity(&mut cfg, peer_client_tls.as_ref())
        .await
        .map_err(|e| ServerError(e.0))?;
    let had_data = check_data_dir(&cfg).map_err(|e| ServerError(e.0))?;
    let me = cfg.me().clone();
    // Bind first: a port in use is the commonest start-up mistake, report it before work.
    let peer_listener = bind("--listen-peer-urls", cfg.listen_peer).await?;
    let mut client_listeners = Vec::new();
    for l in &cfg.listen_client {
        client_listeners.push((bind("--listen-client-urls", l.addr).await?, l.https));
    }
    let metrics_listener = match cfg.listen_metrics {
        Some(a) => Some(bind("--listen-metrics-urls", a).await?),
        None => None,
    };

    let member_dir = cfg.data_dir.join("member");
    let disk = storage::RealDisk::open(&member_dir)
        .map_err(|e| ServerError(format!("--data-dir {}: {e}", cfg.data_dir.display())))?;
    let (store, restored, report) = storage::Storage::open(disk, storage::Options::default())
        .map_err(|e| ServerError(e.to_string()))?;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(
        name = %me.name,
        id = format_args!("{:x}", me.id),
        cluster = format_args!("{:x}", cfg.cluster_id),
        restarted = had_data,
        last_index = store.last_index(),
        "starting member"
    );

    // A member that joined but crashed before its first snapshot arrived has nothing:
    // it joins again (the cluster still lists it, unstarted).
    let start = match start {
        membership::Start::Rejoined if store.last_index() == 0 => {
            membership::rediscover(&cfg, peer_client_tls.as_ref())
                .await
                .map_err(|e| ServerError(e.0))?
        }
        start => start,
    };
    let voters = cfg.members.iter().map(|m| m.id).collect();
    let mut node_cfg = NodeConfig::new(me.id, voters);
    membership::configure(&mut node_cfg, &cfg, &start);
    if let Some(ticks) = cfg.raft_ticks {
        node_cfg.raft.heartbeat_interval_ticks = ticks.heartbeat;
        node_cfg.raft.election_timeout_ticks = ticks.election;
    }
    node_cfg.raft.rng_seed = me.id ^ std::process::id() as u64;
    node_cfg.snapshot_interval_entries = cfg.snapshot_count;
    node_cfg.raft.catch_up_entries = cfg.snapshot_catchup_entries;
    node_cfg.request_timeout_ticks = (7_000 / cfg.tick_ms).max(10);
    node_cfg.background_snapshots = true;
    node_cfg.quota_bytes = cfg.quota_bytes;
    node_cfg.raft.max_snapshot_bytes = peer_guard::snapshot_bytes_max(cfg.quota_bytes);
    match cfg.quota_bytes {
        None => tracing::info!("disabled backend quota"),
        Some(q) if q > config::MAX_SUGGESTED_QUOTA_BYTES => tracing::warn!(
            quota_bytes = q,
            suggested_max_bytes = config::MAX_SUGGESTED_QUOTA_BYTES,
            "quota exceeds the maximum value etcd suggests"
        ),
        Some(q) => tracing::info!(quota_bytes = q, "enabled backend quota"),
    }
    // Reads are served from a view of the state on read workers (see `runtime`).
    node_cfg.hand_out_reads = true;
    // Committed entries are applied on their own thread (see `runtime`), so a large
    // apply never holds the thread that heartbeats.
    node_cfg.apply_apart = true;
    // etcd's minimum lease TTL: 1.5 election timeouts, in whole seconds rounded up.
    let election_ms = u64::from(node_cfg.raft.election_timeout_ticks) * cfg.tick_ms;
    let lease_ttl_min_secs = (election_ms * 3 / 2).div_ceil(1000).max(1) as i64;
    let request_timeout = Duration::from_millis(node_cfg.request_timeout_ticks * cfg.tick_ms);
    let election = Duration::from_millis(election_ms);
    let peer_limits = node_cfg.raft.peer_limits();
    let node = Node::new(node_cfg, store, restored).map_err(|e| ServerError(e.to_string()))?;

    let metrics = Arc::new(Metrics::default());
    metrics.quota_bytes.store(cfg.quota_bytes.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    let own_client_urls = if cfg.advertise_client.is_empty() {
        cfg.listen_client.iter().map(config::ClientListener::url).collect()
    } else {
        cfg.advertise_client.clone()
    };
    let client_urls = ClientUrls::default();
    client_urls.set(me.id, &own_client_urls);
    let identity = Identity {
        cluster_id: cfg.cluster_id,
        member_id: me.id,
        name: me.name.clone(),
        client_urls: own_client_urls,
    };
    // The peers and the members the guard accepts follow the applied member table.
    // A joining member has no members until the leader's snapshot arrives: until then
    // it knows (and accepts streams from) the members the cluster listed.
    let mut members: Vec<_> = node.members().iter().map(cluster::wire_member).collect();
    if let (true, membership::Start::Joining(listed)) = (members.is_empty(), &start) {
        members = listed.clone();
    }
    let member_table = peer_guard::MemberTable::new(members);
    let transport = Transport::start(
        identity.clone(),
        cluster::peers(&member_table.members()),
        metrics.clone(),
        client_urls.clone(),
        request_timeout,
        peer_client_tls,
    );
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // Tokens in the entries this member applies again at start are not recorded (a
    // restarted member has no tokens, as etcd's).
    let tokens = Arc::new(tokens::TokenKeeper::new(cfg.auth.token_ttl, node.raft().last_index()));
    let keeper = tokens.clone();
    let (handle, join) = runtime::spawn_with_hook(
        node,
        Duration::from_millis(cfg.tick_ms),
        transport.clone(),
        metrics.clone(),
        member_dir,
        move |e| {
            let _ = fatal_tx.send(e);
        },
        Box::new(move |applied| keeper.record(applied)),
    );

    let membership = cluster::Membership {
        node: handle.clone(),
        transport: transport.clone(),
        table: member_table.clone(),
        cluster_id: cfg.cluster_id,
        member_id: me.id,
        request_timeout,
    };
    cluster::follow_members(handle.membership(), membership.clone());
    let mut removed = transport.removed();
    tokio::spawn(cluster::publish(
        membership.clone(),
        me.name.clone(),
        identity.client_urls.clone(),
    ));
    let peer_service = Arc::new(PeerService {
        guard: peer_guard::Guard::new(me.id, peer_limits),
        me: identity,
        members: member_table.clone(),
        node: handle.clone(),
        metrics: metrics.clone(),
        cluster: membership.clone(),
    });
    let api = etcd::Api {
        node: handle.clone(),
        transport,
        metrics: metrics.clone(),
        cluster_id: cfg.cluster_id,
        member_id: me.id,
        membership,
        lease_ttl_min_secs,
        request_timeout,
        quota_bytes: cfg.quota_bytes,
        auth: Arc::new(auth::AuthGate::new(cfg.auth, tokens)),
        limits: cfg.limits,
    };

    use proto::etcdserverpb::maintenance_server::MaintenanceServer;
    use proto::etcdserverpb::{cluster_server::ClusterServer, kv_server::KvServer};
    use proto::etcdserverpb::{lease_server::LeaseServer, watch_server::WatchServer};
    if cfg.grpc.keepalive_min_time != config::GrpcLimits::default().keepalive_min_time {
        tracing::warn!("{}", config::GrpcLimits::KEEPALIVE_MIN_TIME_NOT_ENFORCED);
    }
    // `Stream` and `ForwardBatch` count their batches before decoding (see `peer_grpc`).
    let peer_router =
        grpc_server(&cfg.grpc).add_service(peer_grpc::CountedPeerServer::new(peer_service.clone()));
    let peer_connections = incoming(peer_listener, "--listen-peer-urls", &metrics);
    // One peer port: frame streams (the Raft messages) are served apart, the rest is
    // gRPC (see `peer_stream`).
    let peer_task = match &peer_tls {
        None => tokio::spawn(
            peer_router
                .serve_with_incoming(peer_stream::split_incoming(peer_connections, peer_service)),
        ),
        Some(tls) => {
            let decrypted = tls.accept_stream(peer_connections, "--listen-peer-urls");
            let h2 = peer_stream::split_incoming(decrypted, peer_service);
            tokio::spawn(peer_router.serve_with_incoming(h2))
        }
    };
    let recv_max = cfg.limits.receive_bytes();
    // HTTP/1.1 too, and `/health`, `/metrics`, `/version` and etcd's JSON gateway
    // (`/v3/...`, see `gateway`) before gRPC, as etcd (`client_http`).
    let client_router = grpc_server(&cfg.grpc)
        .accept_http1(true)
        .layer(client_http::HttpEndpointsLayer::new(
            handle.clone(),
            metrics.clone(),
            gateway::Gateway::new(api.clone(), member_table.clone(), me.id),
            cfg.cors.clone(),
        ))
        .layer(grpc_metrics::GrpcMetricsLayer::new(metrics.grpc.clone()))
        .layer(tower::util::MapResponseLayer::new(etcd_receive_limit_error))
        .layer(tower::util::MapRequestLayer::new(cert_user::with_connection_user))
        .layer(learner::LearnerLayer::new(member_table.clone(), me.id))
        .add_service(KvServer::new(api.clone()).max_decoding_message_size(recv_max))
        .add_service(MaintenanceServer::new(api.clone()).max_decoding_message_size(recv_max))
        .add_service(ClusterServer::new(api.clone()).max_decoding_message_size(recv_max))
        .add_service(WatchServer::new(api.clone()).max_decoding_message_size(recv_max))
        .add_service(LeaseServer::new(api.clone()).max_decoding_message_size(recv_max))
        .add_service(
            proto::etcdserverpb::auth_server::AuthServer::new(api.clone())
                .max_decoding_message_size(recv_max),
        )
        .add_service(
            proto::v3lockpb::lock_server::LockServer::new(api.clone())
                .max_decoding_message_size(recv_max),
        )
        .add_service(
            proto::v3electionpb::election_server::ElectionServer::new(api.clone())
                .max_decoding_message_size(recv_max),
        )
        .add_service(
            proto::session::session_server::SessionServer::new(api)
                .max_decoding_message_size(recv_max),
        );
    // etcdctl sends `http://host:port` as :authority on some connections; h2 would
    // reset those requests (see authority.rs). The fix reads plaintext, so TLS ends
    // below it, in the accept stream. The `http://` and the `https://` client URLs are
    // two streams of connections, each served by a copy of the one router.
    let mut plain_connections = tokio_stream::StreamMap::new();
    let mut tls_connections = tokio_stream::StreamMap::new();
    for (i, (listener, https)) in client_listeners.into_iter().enumerate() {
        let connections = incoming(listener, "--listen-client-urls", &metrics);
        if https {
            tls_connections.insert(i, connections);
        } else {
            plain_connections.insert(i, connections);
        }
    }
    let mut client_servers = tokio::task::JoinSet::new();
    if !plain_connections.is_empty() {
        let plain = tokio_stream::StreamExt::map(plain_connections, |(_, c)| c);
        let router = client_router.clone();
        client_servers.spawn(router.serve_with_incoming(authority::wrap_incoming(plain)));
    }
    if let (false, Some(tls)) = (tls_connections.is_empty(), &client_tls) {
        let encrypted = tokio_stream::StreamExt::map(tls_connections, |(_, c)| c);
        let decrypted = tls.accept_stream(encrypted, "--listen-client-urls");
        client_servers
            .spawn(client_router.serve_with_incoming(cert_user::wrap_incoming(decrypted)));
    }
    if let Some(mode) = cfg.auto_compaction {
        tracing::info!(?mode, "auto compaction on");
        let interval = cfg.auto_compaction_revision_interval;
        tokio::spawn(compactor::run(handle.clone(), mode, interval));
    }
    if let Some(l) = metrics_listener {
        tokio::spawn(http::serve(l, handle.clone(), metrics.clone()));
    }

    let result = tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("stopping on signal");
            hand_over_leadership(&handle, election).await;
            Ok(())
        }
        _ = stop => {
            tracing::info!("stopping: asked to");
            Ok(())
        }
        Some(e) = fatal_rx.recv() => Err(ServerError(format!("member stopped: {e}"))),
        Ok(_) = removed.wait_for(|r| *r) => {
            // etcd's words; then the data dir is marked so that it never starts again.
            tracing::error!("{}", membership::REMOVED_MESSAGE);
            let marked = membership::mark_removed(&cfg.data_dir, &me.name, me.id, cfg.cluster_id);
            if let Err(e) = &marked {
                tracing::error!(error = %e, "marking the data dir as removed failed");
            }
            Err(ServerError(format!(
                "{}; the data dir {} must be removed before this machine joins again \
                 (`etcdctl member add`)",
                membership::REMOVED_MESSAGE,
                cfg.data_dir.display()
            )))
        }
        r = peer_task => Err(ServerError(format!("peer server ended: {r:?}"))),
        Some(r) = client_servers.join_next() => {
            Err(ServerError(format!("client server ended: {r:?}")))
        }
    };
    handle.stop();
    let _ = tokio::task::spawn_blocking(move || join.join()).await;
    result
}

/// etcd (grpc-go) refuses a request over its receive limit with `ResourceExhausted` and
/// "grpc: received message larger than max (SIZE vs. LIMIT)"; tonic with `OutOfRange` and
/// words of its own. Rewrites tonic's answer (a trailers-only response, so the status is
/// in the headers) into etcd's, so clients that match on etcd's error see it.
fn etcd_receive_limit_error<B>(mut response: ::http::Response<B>) -> ::http::Response<B> {
    const TONIC_PREFIX: &str = "Error, decoded message length too large: found ";
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != tonic::Code::OutOfRange {
        return response;
    }
    let Some(rest) = status.message().strip_prefix(TONIC_PREFIX) else { return response };
    let mut numbers = rest.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty());
    let (Some(size), Some(limit)) = (numbers.next(), numbers.next()) else { return response };
    let etcd = gateway::too_large(size, limit);
    let headers = response.headers_mut();
    headers.remove("grpc-message");
    if etcd.add_header(headers).is_err() {
        tracing::warn!("could not rewrite a too-large request's status");
    }
    response
}

/// Accepted connections with Nagle off: Raft and client round trips are many small
/// messages, and Nagle plus delayed ACKs would add tens of milliseconds to each.
fn incoming(
    listener: TcpListener,
    flag: &'static str,
    metrics: &Arc<Metrics>,
) -> accept::BackoffIncoming<tonic::transport::server::TcpIncoming> {
    let tcp = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    with_accept_backoff(tcp, flag, metrics)
}

/// Failed accepts (EMFILE...) pause with a back-off instead of spinning (see [`accept`]).
fn with_accept_backoff<S>(
    connections: S,
    flag: &'static str,
    metrics: &Arc<Metrics>,
) -> accept::BackoffIncoming<S> {
    accept::BackoffIncoming::new(connections, flag, metrics.clone())
}

/// A gRPC server with the `--max-concurrent-streams` and keep-alive limits. Keep-alive
/// as etcd's: after `interval` without a frame from the other side, ping it; no answer
/// within `timeout` closes the connection (a client or peer that vanished without a FIN
/// no longer holds its streams and buffers until TCP gives up, minutes later).
fn grpc_server(limits: &config::GrpcLimits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
}

/// Before a member that leads stops on a signal, it hands leadership to the most
/// caught-up other voter (as etcd's does on SIGTERM), so the cluster does not wait an
/// election timeout to notice it is gone: a rolling restart costs no write outage of
/// that size. Bounded: the core gives up after one election timeout, and this waits
/// at most two.
async fn hand_over_leadership(handle: &runtime::NodeHandle, election: Duration) {
    if !handle.status().await.is_some_and(|s| s.is_leader) {
        return;
    }
    match tokio::time::timeout(2 * election, handle.transfer_leader(None)).await {
        Ok(Ok(to)) => tracing::info!(to = format_args!("{to:x}"), "leadership handed over"),
        // A single voter has nobody to hand over to; nothing went wrong.
        Ok(Err(node::TransferFailure::NoTransferee)) => {
            tracing::info!("no other voter to hand leadership to")
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "leadership not handed over; stopping anyway"),
        Err(_) => tracing::warn!("leadership hand-over took too long; stopping anyway"),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
