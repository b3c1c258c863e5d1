//! Server settings (etcd's flag names, so users can swap), member and cluster ids, and
//! the data directory's identity check.

use raft::NodeId;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whether this member starts a new cluster or rejoins an existing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    New,
    /// Rejoin a cluster this member already belongs to (its data dir must exist).
    Existing,
}

/// One member as named in `--initial-cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its name (`--name`).
    pub name: String,
    /// Its id, derived from the name and the cluster's member list.
    pub id: NodeId,
    /// Its peer URL.
    pub peer_url: String,
}

/// Everything a server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// This member's name.
    pub name: String,
    /// Where this member keeps its WAL and snapshots.
    pub data_dir: PathBuf,
    /// Address for peer traffic.
    pub listen_peer: SocketAddr,
    /// Where clients connect (`--listen-client-urls`, at least one): each serves etcd's
    /// v3 gRPC API, `/health`, `/metrics` and `/version`, with TLS or not by its scheme.
    pub listen_client: Vec<ClientListener>,
    /// Client URLs to advertise to other members and clients (`MemberList`); empty:
    /// every `listen_client` URL (see [`ClientListener::url`]).
    pub advertise_client: Vec<String>,
    /// Address for `GET /health` and `GET /metrics` (none: not served).
    pub listen_metrics: Option<SocketAddr>,
    /// All members of the cluster.
    pub members: Vec<Member>,
    /// New cluster or rejoin.
    pub state: ClusterState,
    /// The cluster's id, derived from its member list.
    pub cluster_id: u64,
    /// Length of one Raft tick.
    pub tick_ms: u64,
    /// Take a snapshot every this many applied entries.
    pub snapshot_count: u64,
    /// Applied entries kept in memory for followers that lag (`raft::Config::catch_up_entries`;
    /// etcd 3.5's `--experimental-snapshot-catchup-entries`).
    pub snapshot_catchup_entries: u64,
    /// The space quota (`--quota-backend-bytes`) in bytes of the state machine's size
    /// estimate; `None`: no quota. See [`quota_bytes`].
    pub quota_bytes: Option<u64>,
    /// `--auto-compaction-mode` and `--auto-compaction-retention`; `None`: off.
    pub auto_compaction: Option<AutoCompaction>,
    /// How often revision-mode auto-compaction checks (etcd 3.4: every 5 minutes; a
    /// hidden flag shortens it for tests).
    pub auto_compaction_revision_interval: Duration,
    /// Limits of the gRPC listeners.
    pub grpc: GrpcLimits,
    /// TLS of the `https://` `listen_client` URLs; `None` when all are `http://`.
    pub client_tls: Option<tls::ServerFiles>,
    /// TLS on the peer port (an `https://` `--listen-peer-urls`); `None`: plaintext.
    pub peer_tls: Option<tls::ServerFiles>,
    /// How this member dials `https://` peers (`--peer-trusted-ca-file`, and its peer
    /// certificate as the client certificate); `None`: no peer URL is `https://`.
    pub peer_client_tls: Option<tls::ClientFiles>,
    /// `--auth-token-ttl` and `--bcrypt-cost`.
    pub auth: crate::auth::AuthConfig,
    /// This member's peer URLs (`--initial-advertise-peer-urls`, by default its
    /// `--initial-cluster` URL): how a joining member finds itself in the member list.
    pub initial_advertise_peer: Vec<String>,
    /// Every peer URL `--initial-cluster` lists (also those without a name, which
    /// `etcdctl member add` prints for members that have not started): where a joining
    /// member asks for the member list.
    pub initial_cluster_urls: Vec<String>,
    /// The Raft heartbeat interval and election timeout in ticks, when etcd's
    /// `--heartbeat-interval` and `--election-timeout` set them; `None`: the Raft core's
    /// defaults (a heartbeat every 5 ticks, elections after 20).
    pub raft_ticks: Option<RaftTicks>,
    /// `--max-request-bytes` and `--max-txn-ops`.
    pub limits: RequestLimits,
    /// `--cors`: which origins get etcd's CORS headers on the client URLs' plain HTTP
    /// answers.
    pub cors: crate::cors::Cors,
}

/// One `--listen-client-urls` URL. As etcd's, each URL's scheme decides on its own: a
/// member may serve `http://` and `https://` client URLs side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientListener {
    /// The address to listen on.
    pub addr: SocketAddr,
    /// `https://`: TLS with [`ServerConfig::client_tls`]; `http://`: plaintext.
    pub https: bool,
}

impl ClientListener {
    /// The URL this listener is reached at, as advertised by default.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

/// Raft timing in ticks (see [`ServerConfig::raft_ticks`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftTicks {
    /// Ticks between heartbeats.
    pub heartbeat: u32,
    /// Ticks without a leader before an election.
    pub election: u32,
}

/// Limits on one client request, checked when it arrives (not on apply, so members may
/// differ, as etcd's may).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest put, delete or txn request, encoded (etcd's `--max-request-bytes`); at
    /// most [`crate::etcd::REQUEST_BYTES_MAX`], which the log and apply are sized for.
    pub request_bytes: usize,
    /// Most operations in a txn's compares or either branch (etcd's `--max-txn-ops`); at
    /// most [`crate::etcd::TXN_OPS_MAX`], what apply allows.
    pub txn_ops: u64,
}

impl RequestLimits {
    /// etcd's gRPC receive limit on every client service: the request limit plus 512 KiB
    /// of gRPC overhead (a request between the two gets etcd's "request is too large").
    pub fn receive_bytes(&self) -> usize {
        self.request_bytes + 512 * 1024
    }
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            request_bytes: crate::etcd::REQUEST_BYTES_MAX,
            txn_ops: crate::etcd::TXN_OPS_MAX,
        }
    }
}

/// etcd's default space quota: 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// etcd's suggested maximum quota (8 GiB); larger ones are accepted with a warning.
pub const MAX_SUGGESTED_QUOTA_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// `--quota-backend-bytes` as etcd reads it: 0 is the default (2 GiB), a negative
/// value turns the quota off.
pub fn quota_bytes(flag: i64) -> Option<u64> {
    match flag {
        0 => Some(DEFAULT_QUOTA_BYTES),
        n if n < 0 => None,
        n => Some(n as u64),
    }
}

/// etcd's automatic compaction of the key history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this much time of history (`--auto-compaction-mode periodic`).
    Periodic(Duration),
    /// Keep this many revisions of history (`--auto-compaction-mode revision`).
    Revision(u64),
}

/// Parses `--auto-compaction-mode` and `--auto-compaction-retention` as etcd 3.4
/// does: a bare number is hours in periodic mode and revisions in revision mode; a
/// Go duration (`30m`, `1h30m`, `1.5h`) is periodic only. Retention 0 turns it off.
pub fn parse_auto_compaction(
    mode: &str,
    retention: &str,
) -> Result<Option<AutoCompaction>, ConfigError> {
    let flag = "--auto-compaction-retention";
    let number = retention.trim().parse::<u64>().ok();
    let parsed = match (mode, number) {
        (_, Some(0)) => return Ok(None),
        ("periodic", Some(hours)) => {
            AutoCompaction::Periodic(Duration::from_secs(hours.saturating_mul(3600)))
        }
        ("periodic", None) => AutoCompaction::Periodic(parse_duration(flag, retention.trim())?),
        ("revision", Some(revisions)) => AutoCompaction::Revision(revisions),
        ("revision", None) => {
            return Err(ConfigError(format!(
                "{flag} {retention:?}: revision mode keeps a number of revisions; give a whole number (1000)"
            )))
        }
        (other, _) => {
            return Err(ConfigError(format!(
                "--auto-compaction-mode {other:?}: unknown auto-compaction-mode; use periodic or revision"
            )))
        }
    };
    if parsed == AutoCompaction::Periodic(Duration::ZERO) {
        return Ok(None);
    }
    Ok(Some(parsed))
}

/// Limits of the gRPC listeners (client and peer): etcd's flags, and its defaults but one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcLimits {
    /// `--max-concurrent-streams`: HTTP/2 streams (calls) one connection may have open at
    /// once; a client over it waits for a free one (HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// `--grpc-keepalive-min-time`: accepted and checked, not enforced (see
    /// [`GrpcLimits::KEEPALIVE_MIN_TIME_NOT_ENFORCED`]).
    pub keepalive_min_time: Duration,
    /// `--grpc-keepalive-interval`: after this long without a frame from a client, the
    /// server pings it.
    pub keepalive_interval: Duration,
    /// `--grpc-keepalive-timeout`: a ping not answered within this closes the connection.
    pub keepalive_timeout: Duration,
}

impl GrpcLimits {
    /// etcd's default for `--max-concurrent-streams` is unlimited (2³² − 1). Ours is 1000:
    /// a stream holds memory (HTTP/2 buffers, a task, for a watch its queue) for as long
    /// as it is open, so one connection opening streams without end could exhaust the
    /// member. etcd's own clients multiplex every watch on one stream and every lease
    /// keep-alive on another, so a connection with 1000 open calls is a client bug or an
    /// attack; a legitimate one only waits. Raise it with the flag if needed.
    pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1000;

    /// Why `--grpc-keepalive-min-time` is not enforced: grpc-go (etcd) answers a client
    /// that pings more often than this with GOAWAY "too_many_pings"; the HTTP/2 server
    /// under tonic 0.14 (hyper 1, h2 0.4) has no such policy and no hook to add one
    /// without parsing the HTTP/2 frames ourselves. What it does instead bounds the cost
    /// of a ping flood: it keeps at most one pong pending per connection.
    pub const KEEPALIVE_MIN_TIME_NOT_ENFORCED: &'static str = "--grpc-keepalive-min-time is \
        accepted for etcd compatibility but not enforced: the HTTP/2 server raftkv uses \
        has no ping policy (it keeps at most one pong pending, so ping floods stay cheap)";
}

impl Default for GrpcLimits {
    /// etcd's defaults (min time 5 s, interval 2 h, timeout 20 s), except
    /// [`GrpcLimits::DEFAULT_MAX_CONCURRENT_STREAMS`].
    fn default() -> Self {
        GrpcLimits {
            max_concurrent_streams: GrpcLimits::DEFAULT_MAX_CONCURRENT_STREAMS,
            keepalive_min_time: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(2 * 60 * 60),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// Parses a duration as etcd's flags take it (Go's syntax): a sequence of decimal
/// numbers, each with an optional fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`,
/// `h`), such as `5s`, `1.5h` or `2h45m`; `0` alone is zero.
pub fn parse_duration(flag: &str, text: &str) -> Result<Duration, ConfigError> {
    let bad = || {
        ConfigError(format!(
            "{flag}: {text:?} is not a duration; write a number and a unit (ns, us, ms, s, m, \
             h), such as 5s, 2h or 1m30s"
        ))
    };
    match text {
        "0" => return Ok(Duration::ZERO),
        "" => return Err(bad()),
        _ => {}
    }
    let mut rest = text;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(bad)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
        let mut part = whole.checked_mul(unit_nanos).ok_or_else(bad)?;
        let mut scale = unit_nanos;
        for digit in fraction.bytes().take(20) {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos.checked_add(part).ok_or_else(bad)?;
        rest = tail;
    }
    u64::try_from(total_nanos).map(Duration::from_nanos).map_err(|_| bad())
}

/// A configuration problem: what, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

/// FNV-1a 64: stable across versions and machines, so ids never change under a member.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Parses `http://host:port`, `https://host:port` (or `host:port`) into a socket
/// address; whether it asks for TLS is [`tls::is_https`].
pub fn parse_url(flag: &str, url: &str) -> Result<SocketAddr, ConfigError> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).unwrap_or(url);
    let host_port = rest.trim_end_matches('/');
    let host_port = host_port.replace("localhost", "127.0.0.1");
    host_port.parse().map_err(|_| {
        ConfigError(format!(
            "{flag}: {url:?} is not a URL of the form http://IP:PORT (or https://IP:PORT)"
        ))
    })
}

/// `--initial-cluster` without its unnamed entries (`=URL`: members that have not
/// started yet, as `etcdctl member add` prints them), and every URL it lists.
pub fn split_initial_cluster(spec: &str) -> (String, Vec<String>) {
    let parts: Vec<&str> = spec.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    let named: Vec<&str> = parts.iter().copied().filter(|p| !p.starts_with('=')).collect();
    let urls = parts.iter().filter_map(|p| p.split_once('=')).map(|(_, u)| u.trim().to_string());
    (named.join(","), urls.collect())
}

/// etcd's default `--initial-cluster-token`: with it (or none) the ids are those raftkv
/// always derived, so existing data dirs keep theirs.
pub const DEFAULT_CLUSTER_TOKEN: &str = "etcd-cluster";

/// Parses `--initial-cluster n1=http://…,n2=http://…`.
pub fn parse_initial_cluster(spec: &str) -> Result<(Vec<Member>, u64), ConfigError> {
    parse_initial_cluster_with_token(spec, None)
}

/// [`parse_initial_cluster`] for a cluster started with `--initial-cluster-token`: a
/// token other than [`DEFAULT_CLUSTER_TOKEN`] is mixed into the cluster id (and so into
/// every member id), as etcd does, so that two clusters on the same names and peer URLs
/// (a cluster restored from a backup and the old one) refuse each other's members. The
/// default token changes nothing: ids are derived at each start and checked against the
/// data dir's identity file, so existing data dirs keep their ids.
pub fn parse_initial_cluster_with_token(
    spec: &str,
    token: Option<&str>,
) -> Result<(Vec<Member>, u64), ConfigError> {
    let mut members: Vec<Member> = Vec::new();
    for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((name, url)) = part.split_once('=') else {
            return Err(ConfigError(format!(
                "--initial-cluster: {part:?} is not NAME=URL (example: n1=http://127.0.0.1:2380)"
            )));
        };
        let (name, url) = (name.trim(), url.trim());
        parse_url("--initial-cluster", url)?;
        if members.iter().any(|m| m.name == name) {
            return Err(ConfigError(format!("--initial-cluster: member {name:?} is listed twice")));
        }
        members.push(Member { name: name.to_string(), id: 0, peer_url: url.to_string() });
    }
    if members.is_empty() {
        return Err(ConfigError("--initial-cluster: no members given".into()));
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let mut key: String =
        members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",");
    if let Some(token) = token.filter(|t| !t.is_empty() && *t != DEFAULT_CLUSTER_TOKEN) {
        key.push_str("#token=");
        key.push_str(token);
    }
    let cluster_id = fnv64(key.as_bytes()) | 1;
    for m in &mut members {
        m.id = fnv64(format!("{}/{}", m.name, cluster_id).as_bytes()).max(1);
    }
    Ok((members, cluster_id))
}

impl ServerConfig {
    /// A configuration for unit tests: member `name` of `members`, defaults elsewhere.
    #[cfg(test)]
    pub fn for_tests(name: &str, members: Vec<Member>, cluster_id: u64) -> ServerConfig {
        let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
        ServerConfig {
            name: name.to_string(),
            data_dir: std::env::temp_dir(),
            listen_peer: localhost,
            listen_client: vec![ClientListener { addr: localhost, https: false }],
            advertise_client: Vec::new(),
            listen_metrics: None,
            initial_cluster_urls: members.iter().map(|m| m.peer_url.clone()).collect(),
            members,
            state: ClusterState::New,
            cluster_id,
            tick_ms: 50,
            snapshot_count: 100_000,
            snapshot_catchup_entries: 5_000,
            quota_bytes: None,
            auto_compaction: None,
            auto_compaction_revision_interval: Duration::from_secs(300),
            grpc: GrpcLimits::default(),
            client_tls: None,
            peer_tls: None,
            peer_client_tls: None,
            auth: crate::auth::AuthConfig::default(),
            initial_advertise_peer: Vec::new(),
            raft_ticks: None,
            limits: RequestLimits::default(),
            cors: crate::cors::Cors::default(),
        }
    }

    /// This member's entry in the member list.
    pub fn me(&self) -> &Member {
        self.members.iter().find(|m| m.name == self.name).expect("validated at parse time")
    }
}

/// Name of the identity file in the data dir.
pub const IDENTITY_FILE: &str = "raftkv-member";

/// Checks (or, for a new member, writes) the data dir's identity, so a member never
/// starts on another member's or another cluster's data. Returns true if data existed.
pub fn check_data_dir(cfg: &ServerConfig) -> Result<bool, ConfigError> {
    let dir = &cfg.data_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| ConfigError(format!("--data-dir {}: cannot create: {e}", dir.display())))?;
    let path = dir.join(IDENTITY_FILE);
    let me = cfg.me();
    let expected = identity_text(me, cfg.cluster_id);
    match std::fs::read_to_string(&path) {
        Ok(found) if found == expected => Ok(true),
        Ok(found) => Err(ConfigError(format!(
            "--data-dir {} belongs to another member or cluster ({}), not to member {:?} of \
             cluster {:x}; point --data-dir at this member's own directory (with the \
             --initial-cluster-token it was started or restored with), or use an empty one for \
             a new cluster",
            dir.display(),
            found.trim().replace('\n', ", "),
            me.name,
            cfg.cluster_id
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if cfg.state == ClusterState::Existing {
                // `membership::settle_identity` joins such a member first.
                return Err(ConfigError(format!(
                    "--initial-cluster-state existing: {} holds no data of member {:?}; run \
                     `etcdctl member add` and start with the lines it prints",
                    dir.display(),
                    me.name
                )));
            }
            write_identity(dir, &path, &expected)?;
            Ok(false)
        }
        Err(e) => Err(ConfigError(format!("reading {}: {e}", path.display()))),
    }
}

fn identity_text(me: &Member, cluster_id: u64) -> String {
    format!("name={}\nmember_id={:x}\ncluster_id={:x}\n", me.name, me.id, cluster_id)
}

/// Marks `dir` as the data dir of member `me` of cluster `cluster_id` (what
/// [`check_data_dir`] then accepts), for a data dir written by other means than a first
/// start: a snapshot restore.
pub fn write_new_identity(dir: &Path, me: &Member, cluster_id: u64) -> Result<(), ConfigError> {
    write_identity(dir, &dir.join(IDENTITY_FILE), &identity_text(me, cluster_id))
}

fn write_identity(dir: &Path, path: &Path, content: &str) -> Result<(), ConfigError> {
    let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let io = |e: std::io::Error| ConfigError(format!("writing {}: {e}", path.display()));
    std::fs::write(&tmp, content).map_err(io)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_max_txn_ops_is_what_apply_allows() {
        assert_eq!(RequestLimits::default().txn_ops, kv::Config::default().txn_ops_max);
    }

    #[test]
    fn initial_cluster_parses_and_ids_are_stable() {
        let (a, ca) = parse_initial_cluster("n2=http://127.0.0.1:2,n1=http://127.0.0.1:1").unwrap();
        let (b, cb) = parse_initial_cluster("n1=http://127.0.0.1:1,n2=http://127.0.0.1:2").unwrap();
        assert_eq!(a, b, "order of the flag does not matter");
        assert_eq!(ca, cb);
        assert_ne!(a[0].id, a[1].id);
        let (_, other) =
            parse_initial_cluster("n1=http://127.0.0.1:1,n2=http://127.0.0.1:3").unwrap();
        assert_ne!(ca, other, "a different member list is a different cluster");
    }

    #[test]
    fn only_a_token_other_than_etcds_default_changes_the_ids() {
        let spec = "n1=http://127.0.0.1:1,n2=http://127.0.0.1:2";
        let with = |t| parse_initial_cluster_with_token(spec, t).unwrap();
        let none = with(None);
        assert_eq!(with(Some(DEFAULT_CLUSTER_TOKEN)), none, "existing data dirs keep their ids");
        assert_eq!(with(Some("")), none);
        let (a, ca) = with(Some("new-token"));
        let (b, cb) = with(Some("other-token"));
        assert_ne!(ca, none.1, "a restored cluster is another cluster");
        assert_ne!(ca, cb);
        for (x, y) in a.iter().zip(&none.0).chain(a.iter().zip(&b)) {
            assert_eq!(x.name, y.name);
            assert_ne!(x.id, y.id, "member {} gets another id", x.name);
        }
    }

    #[test]
    fn auto_compaction_flags_parse_as_etcd_reads_them() {
        use AutoCompaction::*;
        let p = |m: &str, r: &str| parse_auto_compaction(m, r);
        assert_eq!(p("periodic", "0"), Ok(None));
        assert_eq!(p("revision", "0"), Ok(None));
        assert_eq!(p("periodic", "2"), Ok(Some(Periodic(Duration::from_secs(7200)))));
        assert_eq!(p("periodic", "30m"), Ok(Some(Periodic(Duration::from_secs(1800)))));
        assert_eq!(p("periodic", "1h30m"), Ok(Some(Periodic(Duration::from_secs(5400)))));
        assert_eq!(p("periodic", "1.5s"), Ok(Some(Periodic(Duration::from_millis(1500)))));
        assert_eq!(p("revision", "1000"), Ok(Some(Revision(1000))));
        assert!(p("revision", "1h").unwrap_err().0.contains("whole number"));
        assert!(p("periodic", "1x").unwrap_err().0.contains("is not a duration"));
        assert!(p("periodic", "-1").is_err());
        assert!(p("hourly", "1").unwrap_err().0.contains("unknown auto-compaction-mode"));
    }

    #[test]
    fn quota_flag_zero_is_the_default_and_negative_is_off() {
        assert_eq!(quota_bytes(0), Some(DEFAULT_QUOTA_BYTES));
        assert_eq!(quota_bytes(-1), None);
        assert_eq!(quota_bytes(16 << 20), Some(16 << 20));
    }

    #[test]
    fn bad_flags_are_explained() {
        let e = parse_initial_cluster("n1").unwrap_err();
        assert!(e.0.contains("NAME=URL"), "{e}");
        let e = parse_initial_cluster("n1=http://127.0.0.1:1,n1=http://127.0.0.1:2").unwrap_err();
        assert!(e.0.contains("twice"), "{e}");
        let e = parse_url("--listen-client-urls", "http://nohost").unwrap_err();
        assert!(e.0.contains("http://IP:PORT"), "{e}");
        assert_eq!(parse_url("x", "http://localhost:80").unwrap().port(), 80);
        assert_eq!(parse_url("x", "https://127.0.0.1:443").unwrap().port(), 443);
    }

    #[test]
    fn durations_parse_as_go_writes_them() {
        let d = |t: &str| parse_duration("--grpc-keepalive-interval", t);
        assert_eq!(d("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(d("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(d("2h0m0s").unwrap(), Duration::from_secs(7200));
        assert_eq!(d("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(d("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(d("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(d(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(d("10us").unwrap(), Duration::from_micros(10));
        assert_eq!(d("0").unwrap(), Duration::ZERO);
        for bad in ["", "5", "s", "5x", "1.2.3s", "-5s", "5 s", ".s", "99999999999999999h"] {
            let e = d(bad).unwrap_err();
            assert!(e.0.starts_with("--grpc-keepalive-interval: ") && e.0.contains("2h"), "{e}");
        }
    }
}
