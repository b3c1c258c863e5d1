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
    /// Address for client traffic (etcd v3 gRPC API).
    pub listen_client: SocketAddr,
    /// Client URLs to advertise to other members and clients (`MemberList`); empty:
    /// `http://` and the client listen address.
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
    /// The space quota (`--quota-backend-bytes`) in bytes of the state machine's size
    /// estimate; `None`: no quota. See [`quota_bytes`].
    pub quota_bytes: Option<u64>,
    /// `--auto-compaction-mode` and `--auto-compaction-retention`; `None`: off.
    pub auto_compaction: Option<AutoCompaction>,
    /// How often revision-mode auto-compaction checks (etcd 3.4: every 5 minutes; a
    /// hidden flag shortens it for tests).
    pub auto_compaction_revision_interval: Duration,
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
        ("periodic", None) => AutoCompaction::Periodic(parse_go_duration(retention).map_err(
            |why| ConfigError(format!("{flag} {retention:?}: {why}; give hours (1) or a duration (30m, 1h30m)")),
        )?),
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

/// Parses a Go duration (`time.ParseDuration`): one or more decimal numbers each with a
/// unit (ns, us, µs, ms, s, m, h), such as `300ms`, `1.5h` or `2h45m`; not negative.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let value: f64 = number.parse().map_err(|_| format!("{number:?} is not a number"))?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit after {number}")),
            other => return Err(format!("unknown unit {other:?}")),
        };
        total += value * nanos;
        rest = tail;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err("duration too long".into());
    }
    Ok(Duration::from_nanos(total as u64))
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

/// Parses `http://host:port` (or `host:port`) into a socket address.
pub fn parse_url(flag: &str, url: &str) -> Result<SocketAddr, ConfigError> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if url.starts_with("https://") {
        return Err(ConfigError(format!("{flag}: {url}: TLS is not supported yet; use http://")));
    }
    let host_port = rest.trim_end_matches('/');
    let host_port = host_port.replace("localhost", "127.0.0.1");
    host_port.parse().map_err(|_| {
        ConfigError(format!("{flag}: {url:?} is not a URL of the form http://IP:PORT"))
    })
}

/// Parses `--initial-cluster n1=http://…,n2=http://…`.
pub fn parse_initial_cluster(spec: &str) -> Result<(Vec<Member>, u64), ConfigError> {
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
    let token: String =
        members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",");
    let cluster_id = fnv64(token.as_bytes()) | 1;
    for m in &mut members {
        m.id = fnv64(format!("{}/{}", m.name, cluster_id).as_bytes()).max(1);
    }
    Ok((members, cluster_id))
}

impl ServerConfig {
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
             cluster {:x}; point --data-dir at this member's own directory, or use an empty one \
             for a new cluster",
            dir.display(),
            found.trim().replace('\n', ", "),
            me.name,
            cfg.cluster_id
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if cfg.state == ClusterState::Existing {
                return Err(ConfigError(format!(
                    "--initial-cluster-state existing: {} holds no data of member {:?}; adding \
                     new members to a running cluster is not supported yet, so restart the \
                     member with its own data dir, or bootstrap with --initial-cluster-state new",
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
        assert!(p("periodic", "1x").unwrap_err().0.contains("unknown unit"));
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
    }
}
