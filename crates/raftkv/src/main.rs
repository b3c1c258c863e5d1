//! `raftkv`: run a member, a local playground cluster, talk to a cluster, or benchmark
//! one (raftkv or etcd: both speak etcd's v3 API).

mod auth_flags;
mod bench;

/// The binary's allocator (the libraries leave the choice to the program that uses them):
/// jemalloc, built with its background thread on, which returns freed pages to the OS
/// after its 10 s decay even when the member is idle. Measured against glibc malloc and
/// mimalloc (README "Performance"): 19-26% less server CPU per operation than glibc, the
/// same peak and idle memory; mimalloc saved less CPU and peaked 14% higher.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod config_file;
mod etcd_flags;
mod exit;
mod playground;
mod snapshot;
mod tls_flags;
mod zap_log;

use clap::{CommandFactory, FromArgMatches, Subcommand};
use client::{Client, ClientOptions};
use exit::{Failure, OrExit};
use server::config::{
    parse_auto_compaction, parse_duration, parse_initial_cluster_with_token, parse_url,
    quota_bytes, ClientListener, ClusterState, GrpcLimits, ServerConfig,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `raftkv --version` and the server's first log line: the package version and the
/// commit built (`-dirty` when tracked files differed from it; `unknown` outside a git
/// checkout), from build.rs.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("RAFTKV_COMMIT"), ")");

/// Default client endpoints: the playground's three members.
const DEFAULT_ENDPOINTS: &str =
    "http://127.0.0.1:2379,http://127.0.0.1:22379,http://127.0.0.1:32379";

#[derive(clap::Parser)]
#[command(
    name = "raftkv",
    version = VERSION,
    about = "A Raft-replicated, linearizable key/value store with etcd's v3 API"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Endpoints {
    /// Comma-separated client URLs of the cluster's members.
    #[arg(long, default_value = DEFAULT_ENDPOINTS, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    #[command(flatten)]
    tls: tls_flags::ClientTlsArgs,
    #[command(flatten)]
    auth: auth_flags::AuthArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one member (etcd's flag names).
    Server(Box<ServerArgs>),
    /// Start a local 3-member cluster in one command; Ctrl-C stops it.
    Playground {
        /// Where the members keep their data (one subdirectory each).
        #[arg(long, default_value = "raftkv-playground")]
        data_dir: PathBuf,
        /// Wipe the data directory first.
        #[arg(long)]
        fresh: bool,
        /// Flags for every member's `raftkv server`, after `--` (for example
        /// `-- --quota-backend-bytes=16777216 --auto-compaction-retention=1h`).
        #[arg(last = true)]
        server_flags: Vec<String>,
        /// The members' client ports; each also uses the next two (peer, metrics).
        #[arg(long, default_value = playground::DEFAULT_CLIENT_PORTS, value_delimiter = ',')]
        client_ports: Vec<u16>,
        /// Mutual TLS on both ports: a throwaway CA and certificates are made in
        /// DATA_DIR/certs (kept for the next start), and the flags to use are printed.
        #[arg(long)]
        tls: bool,
    },
    /// Set a key.
    Put {
        #[command(flatten)]
        ep: Endpoints,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read a key (or a prefix).
    Get {
        #[command(flatten)]
        ep: Endpoints,
        /// The key (or prefix, with --prefix).
        key: String,
        /// Read every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        /// Serve from the contacted member's state, possibly stale, without a leader check.
        #[arg(long)]
        serializable: bool,
    },
    /// Delete a key (or a prefix).
    Del {
        #[command(flatten)]
        ep: Endpoints,
        /// The key (or prefix, with --prefix).
        key: String,
        /// Delete every key starting with KEY.
        #[arg(long)]
        prefix: bool,
    },
    /// Append to a key's value atomically.
    Append {
        #[command(flatten)]
        ep: Endpoints,
        /// The key.
        key: String,
        /// What to append.
        suffix: String,
    },
    /// Show each member's Raft status.
    Status {
        #[command(flatten)]
        ep: Endpoints,
    },
    /// Load-test a cluster over etcd's v3 API (raftkv or etcd).
    Bench(bench::BenchArgs),
    /// Save a member's state to a file, restore a new cluster from one, or check one
    /// (etcdctl's snapshot commands).
    Snapshot {
        #[command(subcommand)]
        cmd: snapshot::SnapshotCmd,
    },
}

#[derive(clap::Args)]
struct ServerArgs {
    /// This member's name (must appear in --initial-cluster).
    #[arg(long)]
    name: String,
    /// Where this member keeps its WAL and snapshots.
    #[arg(long)]
    data_dir: PathBuf,
    /// URL to listen on for peers.
    #[arg(long)]
    listen_peer_urls: String,
    /// URLs to listen on for clients (etcd v3 gRPC API, and /health, /metrics and
    /// /version), comma-separated; each https:// one with TLS (--cert-file, --key-file),
    /// each http:// one without.
    #[arg(long)]
    listen_client_urls: String,
    /// URL to serve /health and /metrics on.
    #[arg(long)]
    listen_metrics_urls: Option<String>,
    /// All members: name=peerURL,...
    #[arg(long)]
    initial_cluster: String,
    /// `new` to bootstrap; `existing` to join a running cluster after `etcdctl member
    /// add` (or to restart with this member's data).
    #[arg(long, default_value = "new")]
    initial_cluster_state: String,
    /// This member's peer URLs (default: its --initial-cluster URL); with
    /// --initial-cluster-state existing, how it finds itself in the running cluster.
    #[arg(long)]
    initial_advertise_peer_urls: Option<String>,
    /// Client URLs this member advertises in member lists, comma-separated, http://
    /// and https:// alike (default: its --listen-client-urls).
    #[arg(long)]
    advertise_client_urls: Option<String>,
    /// Mixed into the cluster and member ids unless it is etcd's default
    /// "etcd-cluster": clusters that differ by it refuse each other's members.
    #[arg(long)]
    initial_cluster_token: Option<String>,
    /// Length of a Raft tick in milliseconds (heartbeats every 5 ticks, elections after
    /// 20-40); default 50. etcd's --heartbeat-interval and --election-timeout set it
    /// instead (the tick becomes the heartbeat interval).
    #[arg(long)]
    tick_ms: Option<u64>,
    /// Snapshot the state every this many applied entries (etcd's default too).
    #[arg(long, default_value_t = 100_000)]
    snapshot_count: u64,
    /// Applied entries a member keeps in memory for followers that lag behind, past what
    /// the leader knows they need (etcd keeps 5000; etcd 3.5's flag). A follower behind
    /// them gets a snapshot. At least 1.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    experimental_snapshot_catchup_entries: u64,
    /// Log level: debug, info, warn, error (etcd's dpanic, panic and fatal: error).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Raise the NOSPACE alarm when the state would reach this many bytes (its size
    /// estimate: keys, values and history, leases); 0: the default, 2 GiB; negative:
    /// no quota.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    quota_backend_bytes: i64,
    /// How auth tokens are made: only `simple` (etcd's default; random tokens kept in
    /// the issuing member's memory).
    #[arg(long, default_value = "simple")]
    auth_token: String,
    /// Seconds an auth token stays valid after its last use (etcd's simple tokens).
    #[arg(long, default_value_t = server::auth::DEFAULT_TOKEN_TTL_SECS)]
    auth_token_ttl: u64,
    /// bcrypt cost of password hashes, 4 to 31.
    #[arg(long, default_value_t = server::auth::DEFAULT_BCRYPT_COST)]
    bcrypt_cost: u32,
    /// Auto compaction: `periodic` (keep a time of history) or `revision` (keep a
    /// number of revisions).
    #[arg(long, default_value = "periodic")]
    auto_compaction_mode: String,
    /// What auto compaction keeps: hours or a duration (1, 30m, 1h30m) in periodic mode,
    /// a number of revisions in revision mode; 0: off.
    #[arg(long, default_value = "0")]
    auto_compaction_retention: String,
    /// How often revision-mode auto compaction checks (etcd's fixed 5 minutes); for
    /// tests.
    #[arg(long, default_value = "5m", hide = true)]
    experimental_auto_compaction_revision_interval: String,
    /// Most gRPC calls one connection may have open at once; more wait for a free slot
    /// (etcd's default is unlimited; see the README for why ours is bounded).
    #[arg(long, default_value_t = GrpcLimits::DEFAULT_MAX_CONCURRENT_STREAMS)]
    max_concurrent_streams: u32,
    /// Accepted for etcd compatibility, not enforced (the HTTP/2 server has no ping
    /// policy). A duration such as 5s.
    #[arg(long, default_value = "5s")]
    grpc_keepalive_min_time: String,
    /// Ping a client (or peer) after this long without a frame from it (2h, 30s...).
    #[arg(long, default_value = "2h")]
    grpc_keepalive_interval: String,
    /// Close a connection whose ping is not answered within this (20s...).
    #[arg(long, default_value = "20s")]
    grpc_keepalive_timeout: String,
    /// etcd's YAML configuration file (etcd's keys); when given, the other flags and
    /// the ETCD_* variables are ignored, as with etcd.
    #[arg(long)]
    config_file: Option<PathBuf>,
    /// Stop (as on SIGTERM) when standard input closes: a supervisor holding the other
    /// end of a pipe (`raftkv playground` does) takes the member down with it.
    #[arg(long)]
    stop_when_stdin_closes: bool,
    #[command(flatten)]
    tls: tls_flags::TlsArgs,
    #[command(flatten)]
    etcd: etcd_flags::EtcdArgs,
}

/// The gRPC limit flags, checked.
fn grpc_limits(a: &ServerArgs) -> Result<GrpcLimits, String> {
    if a.max_concurrent_streams == 0 {
        return Err("--max-concurrent-streams must be at least 1".into());
    }
    let positive = |flag: &str, text: &str| match parse_duration(flag, text).map_err(|e| e.0)? {
        d if d.is_zero() => Err(format!("{flag} must be longer than 0")),
        d => Ok(d),
    };
    Ok(GrpcLimits {
        max_concurrent_streams: a.max_concurrent_streams,
        keepalive_min_time: parse_duration("--grpc-keepalive-min-time", &a.grpc_keepalive_min_time)
            .map_err(|e| e.0)?,
        keepalive_interval: positive("--grpc-keepalive-interval", &a.grpc_keepalive_interval)?,
        keepalive_timeout: positive("--grpc-keepalive-timeout", &a.grpc_keepalive_timeout)?,
    })
}

fn server_config(a: &ServerArgs) -> Result<ServerConfig, String> {
    let (named, initial_cluster_urls) = server::config::split_initial_cluster(&a.initial_cluster);
    let token = a.initial_cluster_token.as_deref();
    let (members, cluster_id) = parse_initial_cluster_with_token(&named, token).map_err(|e| e.0)?;
    if !members.iter().any(|m| m.name == a.name) {
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        return Err(format!(
            "--name {:?} is not in --initial-cluster (members: {}); add it there or fix the name",
            a.name,
            names.join(", ")
        ));
    }
    let state = match a.initial_cluster_state.as_str() {
        "new" => ClusterState::New,
        "existing" => ClusterState::Existing,
        other => return Err(format!("--initial-cluster-state {other:?}: use `new` or `existing`")),
    };
    if state == ClusterState::New && named.split(',').count() != initial_cluster_urls.len() {
        return Err(format!(
            "--initial-cluster {:?}: every member of a new cluster needs a name (NAME=URL); \
             entries without one (=URL) are for --initial-cluster-state existing",
            a.initial_cluster
        ));
    }
    let (tick_ms, raft_ticks) = etcd_flags::raft_timing(a.tick_ms, &a.etcd)?;
    let listen_client = listen_client_urls(&a.listen_client_urls)?;
    let auto_compaction =
        parse_auto_compaction(&a.auto_compaction_mode, &a.auto_compaction_retention)
            .map_err(|e| e.0)?;
    let interval_flag = "--experimental-auto-compaction-revision-interval";
    let revision_interval =
        parse_duration(interval_flag, &a.experimental_auto_compaction_revision_interval)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "{interval_flag} {:?}: give a positive duration such as 5m or 500ms",
                    a.experimental_auto_compaction_revision_interval
                )
            })?;
    let peer_urls: Vec<&str> = members.iter().map(|m| m.peer_url.as_str()).collect();
    let client_urls: Vec<&str> = listen_client.iter().map(|(url, _)| *url).collect();
    let (client_tls, peer_tls, peer_client_tls) =
        tls_flags::settings(&a.tls, &client_urls, &a.listen_peer_urls, &peer_urls)?;
    Ok(ServerConfig {
        name: a.name.clone(),
        data_dir: a.data_dir.clone(),
        listen_peer: parse_url("--listen-peer-urls", &a.listen_peer_urls).map_err(|e| e.0)?,
        listen_client: listen_client.into_iter().map(|(_, l)| l).collect(),
        listen_metrics: match &a.listen_metrics_urls {
            Some(u) => Some(parse_url("--listen-metrics-urls", u).map_err(|e| e.0)?),
            None => None,
        },
        advertise_client: a
            .advertise_client_urls
            .iter()
            .flat_map(|u| u.split(','))
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect(),
        state,
        cluster_id,
        tick_ms,
        snapshot_count: a.snapshot_count,
        snapshot_catchup_entries: a.experimental_snapshot_catchup_entries,
        quota_bytes: quota_bytes(a.quota_backend_bytes),
        auto_compaction,
        auto_compaction_revision_interval: revision_interval,
        grpc: grpc_limits(a)?,
        client_tls,
        peer_tls,
        peer_client_tls,
        auth: auth_config(a)?,
        initial_advertise_peer: initial_advertise_peer(a, &members)?,
        initial_cluster_urls,
        members,
        raft_ticks,
        limits: etcd_flags::request_limits(&a.etcd)?,
        cors: server::cors::Cors::parse(&a.etcd.cors).map_err(|e| e.0)?,
    })
}

/// `--listen-client-urls`: each URL with where it listens and whether with TLS. As
/// etcd's, `http://` and `https://` URLs may be mixed: each scheme decides for its URL.
fn listen_client_urls(flag: &str) -> Result<Vec<(&str, ClientListener)>, String> {
    let urls: Vec<&str> = flag.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    if urls.is_empty() {
        return Err("--listen-client-urls: give at least one URL".into());
    }
    let mut listeners: Vec<(&str, ClientListener)> = Vec::new();
    for u in urls {
        let addr = parse_url("--listen-client-urls", u).map_err(|e| e.0)?;
        if listeners.iter().any(|(_, l)| l.addr == addr) {
            return Err(format!(
                "--listen-client-urls {flag:?}: {addr} is listed twice; an address serves one \
                 URL, http:// or https://"
            ));
        }
        listeners.push((u, ClientListener { addr, https: tls::is_https(u) }));
    }
    Ok(listeners)
}

/// This member's peer URLs: `--initial-advertise-peer-urls`, or its `--initial-cluster`
/// entry's URL.
fn initial_advertise_peer(
    a: &ServerArgs,
    members: &[server::config::Member],
) -> Result<Vec<String>, String> {
    let Some(flag) = &a.initial_advertise_peer_urls else {
        let me = members.iter().filter(|m| m.name == a.name);
        return Ok(me.map(|m| m.peer_url.clone()).collect());
    };
    let urls: Vec<String> =
        flag.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
    for u in &urls {
        parse_url("--initial-advertise-peer-urls", u).map_err(|e| e.0)?;
    }
    Ok(urls)
}

/// `--auth-token`, `--auth-token-ttl` and `--bcrypt-cost`, checked as etcd checks them.
fn auth_config(a: &ServerArgs) -> Result<server::auth::AuthConfig, String> {
    if a.auth_token.split(',').next() != Some("simple") {
        return Err(format!(
            "--auth-token {:?}: only simple tokens are supported; use --auth-token simple",
            a.auth_token
        ));
    }
    if a.auth_token_ttl == 0 {
        return Err("--auth-token-ttl must be at least 1 (seconds)".into());
    }
    if !(4..=31).contains(&a.bcrypt_cost) {
        return Err(format!(
            "--bcrypt-cost {}: invalid bcrypt-cost; use a cost from 4 to 31 (default 10)",
            a.bcrypt_cost
        ));
    }
    Ok(server::auth::AuthConfig {
        token_ttl: std::time::Duration::from_secs(a.auth_token_ttl),
        bcrypt_cost: a.bcrypt_cost,
    })
}

fn init_logging(level: &str, output: etcd_flags::LogOutput, zap: bool) -> Result<(), String> {
    let level = etcd_flags::log_level(level)?;
    // A log reader that went away (`| head`, a restarted collector) costs the logs, not
    // the member: the subscriber's own report of a failed write went to stderr with
    // `eprintln!`, which panicked when stderr was that same closed pipe.
    let logs = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false)
        .log_internal_errors(false);
    let stdout = output == etcd_flags::LogOutput::Stdout;
    match (zap, stdout) {
        (true, true) => logs.event_format(zap_log::ZapFormat).with_writer(std::io::stdout).init(),
        (true, false) => logs.event_format(zap_log::ZapFormat).with_writer(std::io::stderr).init(),
        (false, true) => logs.with_writer(std::io::stdout).init(),
        (false, false) => logs.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

/// Exit status of a process a panic ended: 70, `EX_SOFTWARE` ("internal software
/// error") in sysexits.h, apart from the statuses etcdctl uses (`exit.rs`).
const PANIC_EXIT_STATUS: i32 = 70;

/// The panic policy: a panic on any thread (the node thread, a snapshot thread, a tokio
/// task, whose panics tokio would otherwise catch and keep running without) ends the
/// process at once with [`PANIC_EXIT_STATUS`] and one line on stderr, so a supervisor
/// sees a dead member instead of a live one that cannot serve. `RUST_BACKTRACE=1` adds
/// the standard report with its backtrace. Why a hook rather than `panic = "abort"`:
/// see docs/ARCHITECTURE.md, "The server's threads".
fn install_panic_hook() {
    let standard_report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            standard_report(info);
        }
        let thread = std::thread::current();
        let message = info.payload_as_str().unwrap_or("(a panic without a message)");
        let location = info.location().map_or("an unknown place".to_string(), |l| l.to_string());
        let line = panic_line(thread.name().unwrap_or("unnamed"), message, &location);
        // Not `eprintln!`: with stderr closed it panics again, inside the hook, and the
        // process aborts (SIGABRT) instead of exiting with the status promised.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "{line}");
        std::process::exit(PANIC_EXIT_STATUS);
    }));
}

/// The one line a panic logs: the thread, where, the message (on one line), and what
/// happens next.
fn panic_line(thread: &str, message: &str, location: &str) -> String {
    let message = message.trim().replace('\n', " | ");
    format!(
        "fatal: thread '{thread}' panicked at {location}: {message}; exiting with status \
         {PANIC_EXIT_STATUS} (a raftkv process never runs on after a panic)"
    )
}

/// The environment variable etcd reads a flag from: `ETCD_` and the flag's name
/// upper-cased with `-` as `_` (`--initial-cluster-state`: `ETCD_INITIAL_CLUSTER_STATE`).
fn etcd_env_var(long: &str) -> String {
    format!("ETCD_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// The command line, with every `raftkv server` flag also read from its `ETCD_*`
/// variable as etcd does (a flag given on the command line wins), so the lines
/// `etcdctl member add` prints, and etcd's container images' settings, work unchanged.
fn cli_command() -> clap::Command {
    server_command().mut_subcommand("server", |server| {
        server.mut_args(|arg| match arg.get_long().map(etcd_env_var) {
            Some(var) => arg.env(var),
            None => arg,
        })
    })
}

/// The command line without the variables: `raftkv server`'s switches also take
/// `=true` and `=false`, as etcd's.
fn server_command() -> clap::Command {
    Cli::command().mut_subcommand("server", etcd_flags::go_bools)
}

/// The value of `raftkv server`'s `--config-file` (or `ETCD_CONFIG_FILE`), if given.
fn config_file_arg(argv: &[String]) -> Option<String> {
    if argv.get(1).map(String::as_str) != Some("server") {
        return None;
    }
    let mut args = argv.iter().skip(2);
    while let Some(a) = args.next() {
        if let Some(v) = a.strip_prefix("--config-file=") {
            return Some(v.to_string());
        }
        if a == "--config-file" {
            return args.next().cloned();
        }
    }
    std::env::var("ETCD_CONFIG_FILE").ok().filter(|v| !v.is_empty())
}

/// `raftkv server --config-file FILE` as the command line the file stands for.
fn config_file_argv(path: &str) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--config-file {path}: cannot read: {e}"))?;
    let server = Cli::command().find_subcommand("server").cloned().expect("server command");
    let known = |flag: &str| {
        flag != "config-file" && server.get_arguments().any(|a| a.get_long() == Some(flag))
    };
    let mut argv = vec!["raftkv".to_string(), "server".to_string()];
    argv.extend(config_file::flags(path, &text, known)?);
    Ok(argv)
}

fn parse_cli() -> Cli {
    let argv: Vec<String> = std::env::args().collect();
    let matches = match config_file_arg(&argv) {
        None => cli_command().try_get_matches(),
        Some(path) => match config_file_argv(&path) {
            // etcd: with a config file, flags and variables are ignored.
            Ok(argv) => server_command().try_get_matches_from(argv),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(exit::ERROR.into());
            }
        },
    };
    matches.and_then(|m| Cli::from_arg_matches(&m)).unwrap_or_else(|e| usage_exit(e))
}

/// Prints clap's answer to a command line it did not run and exits with etcdctl's
/// status for it ([`exit::of_usage_error`]). Help shown because no command was given
/// goes to stdout with status 0, as etcdctl's.
fn usage_exit(e: clap::Error) -> ! {
    let status = exit::of_usage_error(&e);
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        print!("{}", e.render());
    } else {
        let _ = e.print();
    }
    std::process::exit(status.into())
}

fn main() -> ExitCode {
    install_panic_hook();
    let cli = parse_cli();
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = rt.block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.status)
        }
    }
}

/// A client for the command's endpoints, authenticated when --user is given (so a wrong
/// password fails before the command, as with etcdctl). Fails with etcdctl's statuses:
/// a TLS flag's mistake is bad arguments, failing to authenticate a bad connection.
async fn client(ep: &Endpoints) -> Result<Client, Failure> {
    let deadline = Duration::from_secs(ep.timeout_secs);
    let opts = ClientOptions {
        deadline,
        exactly_once: true,
        credentials: ep.auth.credentials(deadline)?,
        ..ClientOptions::default()
    };
    let tls = ep.tls.client_tls().or_exit(exit::BAD_ARGS)?;
    let mut c = Client::connect_tls(&ep.endpoints, opts, tls.as_ref()).or_exit(exit::BAD_ARGS)?;
    if ep.auth.user.is_some() {
        authenticate(&mut c).await?;
    }
    Ok(c)
}

/// Authenticates `c` with its credentials now, as etcdctl does before a command: a
/// failure (a wrong password, no member reached) is a bad connection.
async fn authenticate(c: &mut Client) -> Result<(), Failure> {
    c.authenticate().await.or_exit(exit::BAD_CONNECTION)?;
    if c.auth_not_enabled() {
        // etcdctl goes on silently; the note costs nothing and explains a role that
        // seems to have no effect.
        eprintln!("note: --user is not used: authentication is not enabled on the cluster");
    }
    Ok(())
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.cmd {
        Cmd::Server(a) => {
            let output = etcd_flags::check(&a.etcd)?;
            init_logging(&a.log_level, output, a.etcd.logger == "zap")?;
            // The first log line (before the flags' warnings), so every log names the
            // build that wrote it.
            tracing::info!("raftkv {VERSION}");
            let cfg = server_config(&a)?;
            let served = if a.stop_when_stdin_closes {
                server::serve_until(cfg, stdin_closed()).await
            } else {
                server::serve(cfg).await
            };
            served.or_exit(exit::ERROR)
        }
        Cmd::Playground { data_dir, fresh, client_ports, server_flags, tls } => {
            let opts = playground::Options { data_dir, fresh, client_ports, server_flags, tls };
            Ok(playground::run(opts).await?)
        }
        Cmd::Put { ep, key, value } => {
            let r = client(&ep)
                .await?
                .put(key.as_bytes(), value.as_bytes())
                .await
                .or_exit(exit::ERROR)?;
            println!("OK (revision {})", r.header.map_or(0, |h| h.revision));
            Ok(())
        }
        Cmd::Get { ep, key, prefix, serializable } => {
            let mut c = client(&ep).await?;
            let mut req = proto::etcdserverpb::RangeRequest {
                key: key.clone().into_bytes().into(),
                serializable,
                ..Default::default()
            };
            if prefix {
                req.range_end = client::prefix_end(key.as_bytes()).into();
            }
            let r = c.range(req).await.or_exit(exit::ERROR)?;
            for kv in r.kvs {
                println!("{}\n{}", show(&kv.key), show(&kv.value));
            }
            Ok(())
        }
        Cmd::Del { ep, key, prefix } => {
            let r = client(&ep).await?.delete(key.as_bytes(), prefix).await.or_exit(exit::ERROR)?;
            println!("{}", r.deleted);
            Ok(())
        }
        Cmd::Append { ep, key, suffix } => {
            let v = client(&ep)
                .await?
                .append(key.as_bytes(), suffix.as_bytes())
                .await
                .or_exit(exit::ERROR)?;
            println!("{}", show(&v));
            Ok(())
        }
        Cmd::Status { ep } => status(&ep).await,
        Cmd::Bench(a) => bench::run(a).await,
        Cmd::Snapshot { cmd } => snapshot::run(cmd).await,
    }
}

async fn status(ep: &Endpoints) -> Result<(), Failure> {
    let c = client(ep).await?;
    let header = ["ENDPOINT", "ID", "LEADER", "TERM", "COMMIT", "APPLIED", "VERSION"];
    println!(
        "{:<28} {:>16} {:>16} {:>6} {:>10} {:>10}  {}",
        header[0], header[1], header[2], header[3], header[4], header[5], header[6]
    );
    let mut failures = 0;
    for (i, e) in ep.endpoints.iter().enumerate() {
        // Bounded: an endpoint that never answers (a dropped SYN) must not hang the rest.
        let answer = tokio::time::timeout(Duration::from_secs(ep.timeout_secs), c.status(i))
            .await
            .unwrap_or_else(|_| {
                let last = format!("{e}: no answer within --timeout-secs {}", ep.timeout_secs);
                Err(client::ClientError::Unavailable { last })
            });
        match answer {
            Ok(s) => {
                let id = s.header.as_ref().map_or(0, |h| h.member_id);
                println!(
                    "{:<28} {:>16x} {:>16x} {:>6} {:>10} {:>10}  {}",
                    e, id, s.leader, s.raft_term, s.raft_index, s.raft_applied_index, s.version
                );
            }
            Err(err) => {
                failures += 1;
                let reason = match err {
                    client::ClientError::Unavailable { last } => {
                        last.strip_prefix(&format!("{e}: ")).unwrap_or(&last).to_string()
                    }
                    other => other.to_string(),
                };
                // As etcdctl's endpoint status: the reason on stderr, and exit 1 at the end.
                eprintln!("Failed to get the status of endpoint {e} ({reason})");
            }
        }
    }
    if failures > 0 {
        let how_many = format!("{failures} of {} endpoints did not answer", ep.endpoints.len());
        return Err(how_many.into());
    }
    Ok(())
}

/// Completes when standard input reaches its end (or fails). Read on a thread of its
/// own: a blocking read must not hold up the runtime's shutdown.
async fn stdin_closed() {
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 512];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = closed_tx.send(());
    });
    let _ = closed_rx.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_args(argv: &[&str]) -> ServerArgs {
        let matches = cli_command().try_get_matches_from(argv).expect("parses");
        match Cli::from_arg_matches(&matches).expect("a command").cmd {
            Cmd::Server(a) => *a,
            _ => panic!("not a server command"),
        }
    }

    /// One test for every variable: the process environment is shared by the tests.
    #[test]
    fn server_flags_come_from_etcd_variables_and_the_command_line_wins() {
        assert_eq!(etcd_env_var("initial-cluster-state"), "ETCD_INITIAL_CLUSTER_STATE");
        let vars = [
            ("ETCD_NAME", "from-env"),
            ("ETCD_DATA_DIR", "/env/dir"),
            ("ETCD_INITIAL_CLUSTER_STATE", "existing"),
            ("ETCD_CLIENT_CERT_AUTH", "true"),
            ("ETCD_PEER_CERT_ALLOWED_CN", "peer-cn"),
        ];
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        let base = ["raftkv", "server", "--listen-peer-urls", "http://127.0.0.1:1"];
        let rest = ["--listen-client-urls", "http://127.0.0.1:2", "--initial-cluster", "a=x"];
        let argv: Vec<&str> = base.iter().chain(&rest).copied().collect();
        let a = server_args(&argv);
        assert_eq!(a.name, "from-env");
        assert_eq!(a.data_dir, PathBuf::from("/env/dir"));
        assert_eq!(a.initial_cluster_state, "existing");
        assert!(a.tls.client_cert_auth);
        assert_eq!(a.tls.peer_cert_allowed_cn.as_deref(), Some("peer-cn"));
        let mut argv = argv.clone();
        argv.extend(["--name", "from-flag", "--initial-cluster-state", "new"]);
        let a = server_args(&argv);
        assert_eq!((a.name.as_str(), a.initial_cluster_state.as_str()), ("from-flag", "new"));
        for (k, _) in vars {
            std::env::remove_var(k);
        }
    }

    #[test]
    fn cors_is_every_origin_by_default_a_list_of_origins_or_a_clear_error() {
        use server::cors::Cors;
        let cors = |extra: &[&str]| {
            let mut argv = vec!["raftkv", "server", "--name", "a", "--data-dir", "/d"];
            argv.extend(["--listen-peer-urls", "http://127.0.0.1:1", "--listen-client-urls"]);
            argv.extend(["http://127.0.0.1:2", "--initial-cluster", "a=http://127.0.0.1:1"]);
            argv.extend(extra);
            server_config(&server_args(&argv)).map(|c| c.cors)
        };
        assert_eq!(cors(&[]), Ok(Cors::Any), "etcd's default, *");
        assert_eq!(cors(&["--cors", "*"]), Ok(Cors::Any));
        let list = cors(&["--cors=http://a.example:80,http://b.example:8080"]);
        let origins = vec!["http://a.example:80".to_string(), "http://b.example:8080".into()];
        assert_eq!(list, Ok(Cors::Origins(origins)));
        let e = cors(&["--cors", "http://a.example"]).unwrap_err();
        assert!(e.starts_with("--cors \"http://a.example\": URL address does not have"), "{e}");
        assert!(e.contains("give * (every origin, the default)"), "{e}");
    }

    #[test]
    fn client_urls_may_mix_http_and_https_but_not_share_an_address() {
        let urls = listen_client_urls("http://127.0.0.1:2379, https://127.0.0.1:2381,").unwrap();
        let got: Vec<(&str, String)> = urls.iter().map(|(u, l)| (*u, l.url())).collect();
        assert_eq!(
            got,
            [
                ("http://127.0.0.1:2379", "http://127.0.0.1:2379".to_string()),
                ("https://127.0.0.1:2381", "https://127.0.0.1:2381".to_string())
            ]
        );
        let e = listen_client_urls("http://127.0.0.1:2379,https://127.0.0.1:2379").unwrap_err();
        assert!(
            e.ends_with(
                "127.0.0.1:2379 is listed twice; an address serves one URL, http:// or https://"
            ),
            "{e}"
        );
        assert!(listen_client_urls(" , ").unwrap_err().contains("at least one URL"));
        assert!(listen_client_urls("http://127.0.0.1:x").unwrap_err().contains("not a URL"));
    }

    #[test]
    fn a_panic_is_one_line_naming_the_thread_place_message_and_status() {
        let line = panic_line("raftkv-node", "left != right\n  left: 1\n right: 2\n", "a.rs:3:4");
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.starts_with("fatal: thread 'raftkv-node' panicked at a.rs:3:4: "), "{line}");
        assert!(line.contains("left != right |   left: 1 |  right: 2;"), "{line}");
        assert!(line.contains("exiting with status 70"), "{line}");
    }
}
