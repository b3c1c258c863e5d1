//! Server settings (etcd's flag names, so users can swap), member and cluster ids, and
//! the data directory's identity check.

use raft::NodeId;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
