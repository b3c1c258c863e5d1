//! A member's place in a cluster whose membership changes: joining a running cluster
//! (`--initial-cluster-state existing` on an empty data dir), restarting after having
//! joined, refusing to start once removed, and refusing to bootstrap again on a lost
//! data dir (`refuse_bootstrapped`).
//!
//! Why here and not in `config`: the ids of a member that joined are not derived from
//! `--initial-cluster` (that is how the members of a new cluster get theirs); the leader
//! chose the member id when `etcdctl member add` ran, and the cluster id is the running
//! cluster's. A joining member learns both by asking the members its `--initial-cluster`
//! names (the peer RPC `Members`) and finding itself by its peer URLs, as etcd's
//! `GetClusterFromRemotePeers` does; it keeps them in its data dir's identity file and a
//! [`JOINED_FILE`] marker, so a restart needs nobody.
//!
//! A member removed from the cluster marks its data dir ([`REMOVED_FILE`]) before it
//! exits, and a data dir with the mark refuses to start: its member id is gone for good
//! (etcd keeps removed ids and refuses them), so running it again could only disturb
//! the cluster or mislead an operator.

use crate::config::{ConfigError, Member, ServerConfig, IDENTITY_FILE};
use proto::peer::peer_client::PeerClient;
use proto::peer::{MembersRequest, PeerMember};
use raft::NodeId;
use std::path::Path;
use std::time::{Duration, Instant};

/// In the data dir of a member that joined a running cluster: its ids come from the
/// identity file, not from `--initial-cluster`.
pub const JOINED_FILE: &str = "raftkv-joined";
/// In the data dir of a member that was removed from its cluster.
pub const REMOVED_FILE: &str = "raftkv-removed";
/// etcd's words when a member learns it was removed.
pub const REMOVED_MESSAGE: &str = "the member has been permanently removed from the cluster";

/// What a member is told when a peer refuses it as removed: its id and etcd's words
/// (the receiver stops when the reason contains [`REMOVED_MESSAGE`]).
pub fn removed_reason(member: NodeId) -> String {
    format!("member {member:x}: {REMOVED_MESSAGE}")
}
/// How long a joining member keeps asking the members `--initial-cluster` names for the
/// member list before it gives up (etcd: a few seconds per peer URL).
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `Members` call may take.
const MEMBERS_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a new member on an empty data dir waits for the other members to say
/// whether it already started (`refuse_bootstrapped`): etcd gives each peer 1 s, one
/// after the other; ours are asked at once, and 2 s leaves a loaded member time to
/// answer (a TLS handshake included) while a fresh cluster's first start never waits
/// that long unless a host does not answer at all.
pub const BOOTSTRAP_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two rounds over the peer URLs.
const DISCOVERY_RETRY: Duration = Duration::from_millis(500);
/// Rounds in which a member refused the TLS handshake (or we refused its certificate)
/// before a joining member gives up: a certificate from the wrong CA does not fix
/// itself, but three rounds (about a second) outlast a rotation caught half-way, whose
/// files are re-read at most [`tls::RELOAD_CHECK_INTERVAL`] apart.
pub const DISCOVERY_TLS_REFUSED_ROUNDS_MAX: u32 = 3;

/// Refuses a data dir whose member was removed from its cluster.
pub fn refuse_removed(data_dir: &Path) -> Result<(), ConfigError> {
    let path = data_dir.join(REMOVED_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ConfigError(format!("reading {}: {e}", path.display()))),
    };
    let field = |key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).unwrap_or("?").to_string()
    };
    Err(ConfigError(format!(
        "data dir {} belongs to member {} ({}), which was removed from cluster {}; remove the \
         data dir and `member add` again to rejoin",
        data_dir.display(),
        field("member_id"),
        field("name"),
        field("cluster_id"),
    )))
}

/// Marks `data_dir` as the data dir of a removed member (see [`refuse_removed`]).
pub fn mark_removed(
    data_dir: &Path,
    name: &str,
    member_id: NodeId,
    cluster_id: u64,
) -> Result<(), ConfigError> {
    let text = format!("name={name}\nmember_id={member_id:x}\ncluster_id={cluster_id:x}\n");
    write_synced(data_dir, REMOVED_FILE, &text)
}

/// Writes `name` in `dir` durably (temporary file, sync, rename, sync the directory).
fn write_synced(dir: &Path, name: &str, text: &str) -> Result<(), ConfigError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let io = |e: std::io::Error| ConfigError(format!("writing {}: {e}", path.display()));
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io)
}

/// The ids in an identity file: `(name, member id, cluster id)`.
fn read_identity(data_dir: &Path) -> Result<Option<(String, NodeId, u64)>, ConfigError> {
    let path = data_dir.join(IDENTITY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ConfigError(format!("reading {}: {e}", path.display()))),
    };
    let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='));
    let hex = |key: &str| field(key).and_then(|v| u64::from_str_radix(v, 16).ok());
    match (field("name"), hex("member_id"), hex("cluster_id")) {
        (Some(name), Some(id), Some(cluster)) => Ok(Some((name.to_string(), id, cluster))),
        _ => Err(ConfigError(format!(
            "{} is damaged (it must hold name=, member_id= and cluster_id= lines); restore it \
             or remove the data dir",
            path.display()
        ))),
    }
}

/// How this start relates to the cluster's membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Ids from `--initial-cluster` (a member of a new cluster, new or restarting).
    Bootstrap,
    /// A member that joined earlier restarts: ids from its data dir.
    Rejoined,
    /// A member joins now: ids from the running cluster, which has these members.
    Joining(Vec<PeerMember>),
}

/// Settles this member's ids before the data dir is checked: for a member that joined
/// earlier, from its identity file; for `--initial-cluster-state existing` on an empty
/// data dir, from the running cluster (asked at the peer URLs `--initial-cluster`
/// lists). Updates `cfg` (cluster id, this member's id, the members) accordingly.
pub async fn settle_identity(
    cfg: &mut ServerConfig,
    tls: Option<&tls::ClientTls>,
) -> Result<Start, ConfigError> {
    if cfg.data_dir.join(JOINED_FILE).exists() {
        let Some((name, id, cluster_id)) = read_identity(&cfg.data_dir)? else {
            return Err(ConfigError(format!(
                "{} has {JOINED_FILE} but no {IDENTITY_FILE}: the data dir is incomplete; \
                 remove it and `member add` again",
                cfg.data_dir.display()
            )));
        };
        if name != cfg.name {
            return Err(ConfigError(format!(
                "--data-dir {} belongs to member {name:?}, not {:?}; point --data-dir at this \
                 member's own directory",
                cfg.data_dir.display(),
                cfg.name
            )));
        }
        adopt(cfg, cluster_id, id, &[]);
        return Ok(Start::Rejoined);
    }
    let fresh = !cfg.data_dir.join(IDENTITY_FILE).exists();
    if cfg.state != crate::config::ClusterState::Existing || !fresh {
        if fresh && !holds_state(&cfg.data_dir) {
            refuse_bootstrapped(cfg, tls).await?;
        }
        return Ok(Start::Bootstrap);
    }
    let (cluster_id, members) = discover(cfg, tls).await?;
    let me = find_self(cfg, cluster_id, &members)?;
    adopt(cfg, cluster_id, me, &members);
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
        ConfigError(format!("--data-dir {}: cannot create: {e}", cfg.data_dir.display()))
    })?;
    crate::config::write_new_identity(&cfg.data_dir, cfg.me(), cluster_id)?;
    write_synced(&cfg.data_dir, JOINED_FILE, "")?;
    Ok(Start::Joining(members))
}

/// Whether `data_dir` holds any Raft state (its `member` directory has an entry): a
/// data dir from before identity files existed has state and no identity file.
fn holds_state(data_dir: &Path) -> bool {
    std::fs::read_dir(data_dir.join("member")).is_ok_and(|mut d| d.next().is_some())
}

/// For a member of a new cluster starting on an empty data dir: refuses to start if a
/// member `--initial-cluster` lists answers that this member has already started (it
/// has published its client URLs), as etcd's `isMemberBootstrapped` does. A member
/// whose data dir was lost would otherwise start from nothing, vote and count towards
/// a quorum with an empty log, and acknowledged writes it held would be lost.
///
/// One round: every other member asked at once, and whoever has not answered within
/// [`BOOTSTRAP_CHECK_TIMEOUT`] counts as not answering. Members of a new cluster
/// starting together do not listen yet (each listens after this check), so they refuse
/// the connection at once and the start does not wait; only an unreachable host costs
/// the whole bound. A member that answers from another cluster is not asked about.
async fn refuse_bootstrapped(
    cfg: &ServerConfig,
    tls: Option<&tls::ClientTls>,
) -> Result<(), ConfigError> {
    let me = cfg.me().clone();
    let mine: Vec<String> = if cfg.initial_advertise_peer.is_empty() {
        vec![me.peer_url.clone()]
    } else {
        cfg.initial_advertise_peer.clone()
    };
    let mut asks = tokio::task::JoinSet::new();
    for url in cfg.initial_cluster_urls.iter().filter(|u| !mine.contains(u)) {
        let (url, own, tls) = (url.clone(), mine.clone(), tls.cloned());
        asks.spawn(async move {
            let answer = ask_members(&url, &own, tls.as_ref(), BOOTSTRAP_CHECK_TIMEOUT).await;
            (url, answer)
        });
    }
    let deadline = tokio::time::Instant::now() + BOOTSTRAP_CHECK_TIMEOUT;
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, asks.join_next()).await {
        let Ok((url, Ok((cluster_id, members)))) = done else { continue };
        if cluster_id != cfg.cluster_id {
            continue;
        }
        let started = members.iter().find(|m| {
            (m.id == me.id || m.peer_urls.iter().any(|u| mine.contains(u)))
                && !m.client_urls.is_empty()
        });
        if let Some(m) = started {
            return Err(ConfigError(format!(
                "member {:x} has already been bootstrapped: the member at {url} lists {:?} \
                 (id {:x}) as started, with client URLs {}, but --data-dir {} holds no data \
                 of it. Its data was lost: starting it empty could lose acknowledged writes. \
                 If its old data dir exists, start it on that; otherwise remove the member \
                 (`etcdctl member remove {:x}`) and add it again (`etcdctl member add`, then \
                 start with --initial-cluster-state existing on an empty data dir), or \
                 restore the cluster from a backup",
                me.id,
                m.name,
                m.id,
                m.client_urls.join(","),
                cfg.data_dir.display(),
                m.id
            )));
        }
    }
    // Dropping `asks` aborts the calls still running.
    Ok(())
}

/// For a member that joined and restarts before its first snapshot arrived (its data
/// dir has ids but no state): the member list again, from the running cluster, which
/// must still list this member.
pub async fn rediscover(
    cfg: &ServerConfig,
    tls: Option<&tls::ClientTls>,
) -> Result<Start, ConfigError> {
    let (cluster_id, members) = discover(cfg, tls).await?;
    let me = cfg.me().id;
    if cluster_id != cfg.cluster_id || !members.iter().any(|m| m.id == me) {
        return Err(ConfigError(format!(
            "member {:?} (id {me:x}) joined cluster {:x} but holds no data yet, and the cluster \
             at --initial-cluster ({cluster_id:x}) no longer lists it; remove the data dir and \
             `member add` again",
            cfg.name, cfg.cluster_id
        )));
    }
    Ok(Start::Joining(members))
}

/// The node's membership settings for this start: a joining member starts without a
/// configuration and with the running cluster's members (its first state comes by
/// snapshot); the others seed a new cluster's members from `--initial-cluster`, which
/// the node ignores when it has state.
pub fn configure(node_cfg: &mut node::NodeConfig, cfg: &ServerConfig, start: &Start) {
    node_cfg.initial_members = match start {
        Start::Joining(members) => {
            node_cfg.joining = true;
            members.iter().map(node_member).collect()
        }
        Start::Bootstrap | Start::Rejoined => cfg
            .members
            .iter()
            .map(|m| node::Member {
                id: m.id,
                name: m.name.clone(),
                peer_urls: vec![m.peer_url.clone()],
                client_urls: Vec::new(),
                is_learner: false,
            })
            .collect(),
    };
}

/// A member record from the wire.
pub fn node_member(m: &PeerMember) -> node::Member {
    node::Member {
        id: m.id,
        name: m.name.clone(),
        peer_urls: m.peer_urls.clone(),
        client_urls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

/// Makes `cfg` name this member `me` of cluster `cluster_id`, with `members` (when known)
/// as the other members.
fn adopt(cfg: &mut ServerConfig, cluster_id: u64, me: NodeId, members: &[PeerMember]) {
    let own_url = cfg.initial_advertise_peer.first().cloned().unwrap_or_else(|| {
        cfg.members
            .iter()
            .find(|m| m.name == cfg.name)
            .map(|m| m.peer_url.clone())
            .unwrap_or_default()
    });
    let mut list = vec![Member { name: cfg.name.clone(), id: me, peer_url: own_url }];
    list.extend(members.iter().filter(|m| m.id != me).map(|m| Member {
        name: m.name.clone(),
        id: m.id,
        peer_url: m.peer_urls.first().cloned().unwrap_or_default(),
    }));
    cfg.cluster_id = cluster_id;
    cfg.members = list;
}

/// The member of `members` whose peer URLs are this member's.
fn find_self(
    cfg: &ServerConfig,
    cluster_id: u64,
    members: &[PeerMember],
) -> Result<NodeId, ConfigError> {
    let mine = &cfg.initial_advertise_peer;
    let found = members.iter().find(|m| m.peer_urls.iter().any(|u| mine.contains(u)));
    match found {
        None => Err(ConfigError(format!(
            "member {:?} (peer URLs {}) has not been added to the cluster {cluster_id:x}; run \
             `etcdctl member add {} --peer-urls={}` first",
            cfg.name,
            mine.join(","),
            cfg.name,
            mine.join(",")
        ))),
        Some(m) if !m.name.is_empty() => Err(ConfigError(format!(
            "member {:?} (id {:x}) has already been bootstrapped: it has started before; restart \
             it on its own data dir, or remove it and `member add` again to start afresh",
            m.name, m.id
        ))),
        Some(m) => Ok(m.id),
    }
}

/// Asks the members at `cfg.initial_cluster_urls` (not this member's own) for the
/// member list, round after round, until one answers or [`DISCOVERY_TIMEOUT`] passes.
async fn discover(
    cfg: &ServerConfig,
    tls: Option<&tls::ClientTls>,
) -> Result<(u64, Vec<PeerMember>), ConfigError> {
    let urls: Vec<&String> = cfg
        .initial_cluster_urls
        .iter()
        .filter(|u| !cfg.initial_advertise_peer.contains(u))
        .collect();
    if urls.is_empty() {
        return Err(ConfigError(
            "--initial-cluster-state existing: --initial-cluster names no other member to ask \
             for the member list; use the lines `etcdctl member add` prints"
                .into(),
        ));
    }
    let deadline = Instant::now() + DISCOVERY_TIMEOUT;
    let (mut errors, mut refusals, mut refused_rounds) = (Vec::new(), Vec::new(), 0);
    loop {
        errors.clear();
        refusals.clear();
        for url in &urls {
            match ask_members(url, &cfg.initial_advertise_peer, tls, MEMBERS_CALL_TIMEOUT).await {
                Ok(found) => return Ok(found),
                Err(Unanswered::Tls(why)) => refusals.push((url.as_str(), why)),
                Err(Unanswered::Other(e)) => errors.push(format!("{url}: {e}")),
            }
        }
        if !refusals.is_empty() {
            refused_rounds += 1;
            if refused_rounds >= DISCOVERY_TLS_REFUSED_ROUNDS_MAX {
                return Err(ConfigError(format!(
                    "joining: {}",
                    tls::join_by_cause(
                        refusals.iter().map(|(u, w)| (*u, w.as_str())),
                        "peer ",
                        "peers "
                    )
                )));
            }
        }
        if Instant::now() + DISCOVERY_RETRY >= deadline {
            return Err(ConfigError(format!(
                "--initial-cluster-state existing: no member listed in --initial-cluster \
                 answered with the member list within {DISCOVERY_TIMEOUT:?} ({}); check that \
                 the cluster runs and that --initial-cluster lists its peer URLs",
                errors.join("; ")
            )));
        }
        tokio::time::sleep(DISCOVERY_RETRY).await;
    }
}

/// Why a member did not answer a `Members` call.
#[derive(Debug)]
enum Unanswered {
    /// The TLS handshake failed on a certificate (theirs or ours), in TLS terms, with
    /// the flag to check: it does not get better by asking again.
    Tls(String),
    /// Anything else (not running, not reachable yet, not answering in time).
    Other(String),
}

/// One `Members` call to the member at `url`.
async fn ask_members(
    url: &str,
    own: &[String],
    tls: Option<&tls::ClientTls>,
    timeout: Duration,
) -> Result<(u64, Vec<PeerMember>), Unanswered> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| Unanswered::Other(e.to_string()))?
        .connect_timeout(timeout);
    let tls = tls.filter(|_| tls::is_https(url));
    let channel = match tls {
        Some(tls) => endpoint.connect_with_connector_lazy(tls.connector()),
        None => endpoint.connect_lazy(),
    };
    let mut client = PeerClient::new(channel);
    let mut request = tonic::Request::new(MembersRequest { peer_urls: own.to_vec() });
    request.set_timeout(timeout);
    match tokio::time::timeout(timeout, client.members(request)).await {
        Ok(Ok(answer)) => {
            let answer = answer.into_inner();
            if answer.cluster_id == 0 || answer.members.is_empty() {
                return Err(Unanswered::Other("answered without a cluster".into()));
            }
            Ok((answer.cluster_id, answer.members))
        }
        Ok(Err(status)) => {
            // gRPC keeps the TLS error's text, not its type: ask TLS itself why.
            if let Some(tls) = tls {
                if let Some(why) = tls.explain(&status) {
                    return Err(Unanswered::Tls(why));
                }
                if let Ok(uri) = url.parse::<http::Uri>() {
                    if let Some(why) = tls.probe(&uri, timeout).await {
                        return Err(Unanswered::Tls(why));
                    }
                }
            }
            Err(Unanswered::Other(proto::status_with_causes(&status)))
        }
        Err(_) => Err(Unanswered::Other(format!("no answer within {timeout:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("raftkv-membership-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_removed_members_data_dir_refuses_to_start_and_says_why() {
        let d = dir("removed");
        refuse_removed(&d).expect("no mark: starts");
        mark_removed(&d, "m3", 0xabc, 0x123).unwrap();
        let e = refuse_removed(&d).unwrap_err().0;
        assert!(e.contains("belongs to member abc (m3)"), "{e}");
        assert!(e.contains("removed from cluster 123"), "{e}");
        assert!(e.contains("`member add` again"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    fn member(id: NodeId, name: &str, url: &str) -> PeerMember {
        PeerMember { id, name: name.into(), peer_urls: vec![url.into()], ..Default::default() }
    }

    fn config(name: &str, own_url: &str) -> ServerConfig {
        let (members, cluster_id) =
            crate::config::parse_initial_cluster(&format!("a=http://127.0.0.1:1,{name}={own_url}"))
                .unwrap();
        let mut cfg = ServerConfig::for_tests(name, members, cluster_id);
        cfg.initial_advertise_peer = vec![own_url.into()];
        cfg
    }

    #[test]
    fn a_joining_member_finds_itself_by_its_peer_url_or_is_told_to_member_add() {
        let cfg = config("new", "http://127.0.0.1:9");
        let listed = [member(1, "a", "http://127.0.0.1:1"), member(7, "", "http://127.0.0.1:9")];
        assert_eq!(find_self(&cfg, 5, &listed), Ok(7));
        let e = find_self(&cfg, 5, &listed[..1]).unwrap_err().0;
        assert!(e.contains("has not been added to the cluster 5"), "{e}");
        assert!(e.contains("etcdctl member add new --peer-urls=http://127.0.0.1:9"), "{e}");
        let started = [member(7, "new", "http://127.0.0.1:9")];
        let e = find_self(&cfg, 5, &started).unwrap_err().0;
        assert!(e.contains("already been bootstrapped"), "{e}");
    }

    #[test]
    fn adopting_the_clusters_ids_names_this_member_by_the_leaders_id() {
        let mut cfg = config("new", "http://127.0.0.1:9");
        let listed = [member(1, "a", "http://127.0.0.1:1"), member(7, "", "http://127.0.0.1:9")];
        adopt(&mut cfg, 5, 7, &listed);
        assert_eq!((cfg.cluster_id, cfg.me().id), (5, 7));
        assert_eq!(cfg.me().peer_url, "http://127.0.0.1:9");
        assert_eq!(cfg.members.len(), 2);
    }
}
