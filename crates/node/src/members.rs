//! Membership changes through the node: what a driver asks ([`MemberChange`]), what it
//! gets back ([`MemberChanged`] or a [`MemberFailure`] with etcd 3.4's text), and the
//! leader's checks before it proposes (etcd's rules: known id, peer URLs not in use,
//! at most one learner, a learner promoted only once in sync, and the strict
//! reconfiguration check on started members).
//!
//! The checks are pure functions of what the leader knows (the applied member table,
//! the configuration, which members it heard from recently), so they are tested one by
//! one here; `node.rs` wires them to the core and the state machine.

pub use kv::Member;
use raft::{ConfState, Index, NodeId, Term};
use std::collections::BTreeSet;
use std::fmt;

/// etcd 3.4's `maxLearners`: at most one learner in the cluster.
pub const LEARNERS_MAX: usize = 1;

/// etcd's `readyPercent`: a learner may be promoted once its log matches at least this
/// share of the leader's (here: of the leader's commit index), in percent.
pub const LEARNER_READY_PERCENT: u64 = 90;

/// A membership change a driver asks for (etcd's Cluster service).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a member at `peer_urls` (etcd's MemberAdd); the leader picks its id.
    Add {
        /// Where its peers reach it.
        peer_urls: Vec<String>,
        /// Add it as a learner (it receives the log, does not vote).
        is_learner: bool,
    },
    /// Remove a member (etcd's MemberRemove).
    Remove(NodeId),
    /// New peer URLs for a member (etcd's MemberUpdate): no configuration change, just
    /// the record.
    Update {
        /// The member.
        id: NodeId,
        /// Its new peer URLs.
        peer_urls: Vec<String>,
    },
    /// Make a learner a voter (etcd's MemberPromote).
    Promote(NodeId),
    /// A started member publishes its own name and client URLs (etcd's "publish").
    Publish {
        /// The member (normally the one publishing).
        id: NodeId,
        /// Its name.
        name: String,
        /// Its client URLs.
        client_urls: Vec<String>,
    },
}

/// The answer to a change that took effect: sent once its entry is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberChanged {
    /// The member the change was about, as it is now (for a removal: its last record).
    pub member: Option<Member>,
    /// Every member after the change.
    pub members: Vec<Member>,
}

/// Why a membership change did not happen. `Display` gives etcd 3.4's gRPC texts where
/// etcd has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberFailure {
    /// This member does not lead; the driver forwards to `leader` (as for writes).
    NotLeader {
        /// The leader this member knows of.
        leader: Option<NodeId>,
    },
    /// No such member (never was one, or removed).
    NotFound(NodeId),
    /// Another member already uses one of these peer URLs.
    PeerUrlExists,
    /// The learner's log is not caught up enough to be promoted.
    LearnerNotReady,
    /// The cluster already has its one learner.
    TooManyLearners,
    /// The change would leave fewer started members than a quorum (etcd's strict
    /// reconfiguration check).
    NotEnoughStarted,
    /// Promotion of a member that is not a learner.
    NotLearner,
    /// Another membership change is still under way; retry once it completes.
    InProgress,
    /// No outcome in time; the change may or may not have taken effect.
    Timeout,
    /// The request itself is wrong (bad URLs, a record over its bounds): what and why.
    Invalid(String),
}

impl fmt::Display for MemberFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemberFailure::NotLeader { .. } => write!(f, "etcdserver: not leader"),
            MemberFailure::NotFound(_) => write!(f, "etcdserver: member not found"),
            MemberFailure::PeerUrlExists => write!(f, "etcdserver: Peer URLs already exists"),
            MemberFailure::LearnerNotReady => write!(
                f,
                "etcdserver: can only promote a learner member which is in sync with leader"
            ),
            MemberFailure::TooManyLearners => {
                write!(f, "etcdserver: too many learner members in cluster")
            }
            MemberFailure::NotEnoughStarted => {
                write!(f, "etcdserver: re-configuration failed due to not enough started members")
            }
            MemberFailure::NotLearner => {
                write!(f, "etcdserver: can only promote a learner member")
            }
            MemberFailure::InProgress => write!(
                f,
                "etcdserver: another membership change is in progress; retry once it completes"
            ),
            MemberFailure::Timeout => write!(f, "etcdserver: request timed out"),
            MemberFailure::Invalid(why) => {
                write!(f, "etcdserver: given member URLs are invalid: {why}")
            }
        }
    }
}
impl std::error::Error for MemberFailure {}

/// A membership change proposed by this leader, waiting for its entry to apply.
#[derive(Clone, Debug)]
pub(crate) struct PendingMember {
    /// The driver's request id.
    pub id: crate::RequestId,
    /// The term the entry was proposed in (another leader's entry at the same index
    /// means it was lost).
    pub term: Term,
    /// The tick by which it is answered [`MemberFailure::Timeout`].
    pub deadline: u64,
    /// The member the change is about.
    pub member: NodeId,
}

/// What the leader knows when it checks a change.
pub(crate) struct LeaderView<'a> {
    /// The applied member table.
    pub members: &'a kv::Members,
    /// The configuration in force (the latest in the leader's log).
    pub conf: &'a ConfState,
    /// Members heard from within an election timeout, and the leader (etcd: "started").
    pub started: &'a BTreeSet<NodeId>,
    /// The leader's commit index.
    pub commit: Index,
}

impl LeaderView<'_> {
    fn member(&self, id: NodeId) -> Result<&Member, MemberFailure> {
        self.members.get(id).ok_or(MemberFailure::NotFound(id))
    }

    fn check_urls_free(&self, urls: &[String], except: NodeId) -> Result<(), MemberFailure> {
        check_peer_urls(urls)?;
        let wanted: BTreeSet<&String> = urls.iter().collect();
        let taken = self
            .members
            .list()
            .into_iter()
            .filter(|m| m.id != except)
            .any(|m| m.peer_urls.iter().any(|u| wanted.contains(u)));
        if taken {
            return Err(MemberFailure::PeerUrlExists);
        }
        Ok(())
    }

    /// etcd's `IsReadyToAddVotingMember` (and, counting the learner as started, its
    /// `IsReadyToPromoteMember`): the started voters after the change must be a quorum
    /// of the voters after it. A one-voter cluster may always grow to two (etcd's
    /// exception for restoring a cluster from one member).
    fn check_quorum_after_adding(&self, newcomer_started: bool) -> Result<(), MemberFailure> {
        let voters = self.conf.voters.len();
        let started = self.conf.voters.iter().filter(|v| self.started.contains(v)).count();
        let (voters_after, started_after) = (voters + 1, started + usize::from(newcomer_started));
        let one_grows_to_two = voters == 1 && started == 1;
        if !one_grows_to_two && started_after < voters_after / 2 + 1 {
            return Err(MemberFailure::NotEnoughStarted);
        }
        Ok(())
    }

    /// Checks an Add; `Ok` means it may be proposed.
    pub fn check_add(&self, peer_urls: &[String], is_learner: bool) -> Result<(), MemberFailure> {
        self.check_urls_free(peer_urls, 0)?;
        if is_learner {
            let learners = self.members.list().iter().filter(|m| m.is_learner).count();
            if learners >= LEARNERS_MAX {
                return Err(MemberFailure::TooManyLearners);
            }
            return Ok(());
        }
        self.check_quorum_after_adding(false)
    }

    /// Checks a Remove (etcd's `mayRemoveMember`): a learner or a member not started may
    /// always go; otherwise the started voters left must be a quorum of the voters left.
    pub fn check_remove(&self, id: NodeId) -> Result<(), MemberFailure> {
        self.member(id)?;
        if !self.conf.voters.contains(&id) || !self.started.contains(&id) {
            return Ok(());
        }
        let voters_left = self.conf.voters.len() - 1;
        let started_left =
            self.conf.voters.iter().filter(|v| **v != id && self.started.contains(v)).count();
        if started_left < voters_left / 2 + 1 {
            return Err(MemberFailure::NotEnoughStarted);
        }
        Ok(())
    }

    /// Checks a Promote: a learner whose log matches at least [`LEARNER_READY_PERCENT`]
    /// of the leader's commit index, and the strict check counting it as started.
    pub fn check_promote(&self, id: NodeId, learner_match: Index) -> Result<(), MemberFailure> {
        if !self.member(id)?.is_learner {
            return Err(MemberFailure::NotLearner);
        }
        if u128::from(learner_match) * 100 < u128::from(self.commit) * LEARNER_READY_PERCENT as u128
        {
            return Err(MemberFailure::LearnerNotReady);
        }
        self.check_quorum_after_adding(true)
    }

    /// Checks an Update: a known member, URLs valid and not used by another member.
    pub fn check_update(&self, id: NodeId, peer_urls: &[String]) -> Result<(), MemberFailure> {
        self.member(id)?;
        self.check_urls_free(peer_urls, id)
    }
}

/// Peer URLs must be present, within bounds, and look like URLs (scheme://host).
pub(crate) fn check_peer_urls(urls: &[String]) -> Result<(), MemberFailure> {
    if urls.is_empty() {
        return Err(MemberFailure::Invalid("no peer URL given".into()));
    }
    kv::members::check_urls("peer", urls).map_err(MemberFailure::Invalid)?;
    if let Some(u) = urls.iter().find(|u| !looks_like_url(u)) {
        return Err(MemberFailure::Invalid(format!(
            "{u:?} is not a URL (expected scheme://host:port, e.g. http://10.0.0.4:2380)"
        )));
    }
    Ok(())
}

fn looks_like_url(u: &str) -> bool {
    match u.split_once("://") {
        Some((scheme, rest)) => {
            !scheme.is_empty()
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '+')
                && !rest.is_empty()
        }
        None => false,
    }
}

/// The id of a member added at log `index` in `term` with `peer_urls`: FNV-1a (64-bit)
/// of the sorted URLs, the index and the term, then the next value that is not 0, not a
/// member and not removed. Deterministic, so a replayed or simulated run picks the same.
pub(crate) fn new_member_id(
    peer_urls: &[String],
    index: Index,
    term: Term,
    members: &kv::Members,
) -> NodeId {
    let mut urls: Vec<&String> = peer_urls.iter().collect();
    urls.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for u in urls {
        eat(u.as_bytes());
        eat(&[0]);
    }
    eat(&index.to_le_bytes());
    eat(&term.to_le_bytes());
    let mut id = h;
    while id == 0 || members.get(id).is_some() || members.is_removed(id) {
        id = id.wrapping_add(1);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: NodeId, url: &str, is_learner: bool) -> Member {
        Member { id, peer_urls: vec![url.into()], is_learner, ..Member::default() }
    }

    fn table(members: &[Member]) -> kv::Members {
        kv::Members::from_parts(members.iter().cloned(), &[9])
    }

    fn three() -> kv::Members {
        table(&[member(1, "http://a:1", false), member(2, "http://b:1", false), {
            member(3, "http://c:1", false)
        }])
    }

    fn view<'a>(
        members: &'a kv::Members,
        conf: &'a ConfState,
        started: &'a BTreeSet<NodeId>,
    ) -> LeaderView<'a> {
        LeaderView { members, conf, started, commit: 100 }
    }

    #[test]
    fn adding_a_voter_needs_a_quorum_of_started_members_after_the_add() {
        let (members, conf) = (three(), ConfState::from_voters([1, 2, 3].into()));
        let all = [1, 2, 3].into();
        assert_eq!(view(&members, &conf, &all).check_add(&["http://d:1".into()], false), Ok(()));
        // 2 of 3 started: after the add 2 of 4, below the quorum of 3.
        let two = [1, 2].into();
        let v = view(&members, &conf, &two);
        assert_eq!(
            v.check_add(&["http://d:1".into()], false),
            Err(MemberFailure::NotEnoughStarted)
        );
        assert_eq!(v.check_add(&["http://d:1".into()], true), Ok(()), "a learner never counts");
    }

    #[test]
    fn removing_needs_a_quorum_of_started_voters_left_unless_the_member_is_down() {
        let (members, conf) = (three(), ConfState::from_voters([1, 2, 3].into()));
        let two: BTreeSet<NodeId> = [1, 2].into();
        let v = view(&members, &conf, &two);
        assert_eq!(v.check_remove(3), Ok(()), "a member that is down may go");
        assert_eq!(v.check_remove(2), Err(MemberFailure::NotEnoughStarted));
        assert_eq!(v.check_remove(9), Err(MemberFailure::NotFound(9)), "removed ids are gone");
    }

    #[test]
    fn peer_urls_in_use_bad_urls_and_a_second_learner_are_refused() {
        let mut list = vec![member(1, "http://a:1", false), member(2, "http://b:1", false)];
        list.push(member(4, "http://d:1", true));
        let (members, conf) = (table(&list), ConfState::from_voters([1, 2].into()));
        let all = [1, 2, 4].into();
        let v = view(&members, &conf, &all);
        assert_eq!(v.check_add(&["http://b:1".into()], false), Err(MemberFailure::PeerUrlExists));
        assert_eq!(v.check_add(&["http://e:1".into()], true), Err(MemberFailure::TooManyLearners));
        assert!(matches!(v.check_add(&[], false), Err(MemberFailure::Invalid(_))));
        assert!(matches!(v.check_add(&["b:1".into()], false), Err(MemberFailure::Invalid(_))));
        assert_eq!(v.check_update(2, &["http://b:1".into()]), Ok(()), "its own URL is fine");
        assert_eq!(v.check_update(1, &["http://b:1".into()]), Err(MemberFailure::PeerUrlExists));
    }

    #[test]
    fn a_learner_is_promoted_only_once_in_sync_and_only_a_learner() {
        let list = [member(1, "http://a:1", false), member(4, "http://d:1", true)];
        let (members, conf) = (table(&list), ConfState::from_voters([1].into()));
        let all = [1, 4].into();
        let v = view(&members, &conf, &all);
        assert_eq!(v.check_promote(4, 89), Err(MemberFailure::LearnerNotReady));
        assert_eq!(v.check_promote(4, 90), Ok(()));
        assert_eq!(v.check_promote(1, 100), Err(MemberFailure::NotLearner));
        assert_eq!(v.check_promote(5, 100), Err(MemberFailure::NotFound(5)));
    }

    #[test]
    fn failures_read_as_etcd_3_4_says_them() {
        assert_eq!(MemberFailure::NotFound(1).to_string(), "etcdserver: member not found");
        assert_eq!(
            MemberFailure::LearnerNotReady.to_string(),
            "etcdserver: can only promote a learner member which is in sync with leader"
        );
        assert_eq!(
            MemberFailure::NotEnoughStarted.to_string(),
            "etcdserver: re-configuration failed due to not enough started members"
        );
    }

    #[test]
    fn new_ids_are_deterministic_and_skip_members_and_removed_ids() {
        let members = three();
        let urls = vec!["http://d:1".to_string()];
        let id = new_member_id(&urls, 10, 2, &members);
        assert_eq!(id, new_member_id(&urls, 10, 2, &members));
        assert_ne!(id, new_member_id(&urls, 11, 2, &members));
        let taken = kv::Members::from_parts([member(id, "http://x:1", false)], &[id + 1]);
        assert_eq!(new_member_id(&urls, 10, 2, &taken), id + 2);
    }
}
