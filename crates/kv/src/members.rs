//! The cluster's member table, as etcd's `MemberList` shows it: each member's id, name,
//! peer and client URLs and whether it is a learner, plus the ids of removed members.
//!
//! Why it lives in the replicated state: the Raft core only knows member *ids* (its
//! configuration), but every member must agree on the *records* (URLs to dial, names to
//! show), and a snapshot must carry them to a member that joins later. Changes arrive in
//! log order through two doors, both applied identically on every replica:
//! - Add, Remove and Promote ride in a Raft configuration change (the record is its
//!   context, etcd's `ConfChange.Context`), applied by [`StateMachine::apply_member_change`]
//!   when that entry is applied;
//! - Update (new peer URLs) and Publish (a started member's name and client URLs) are
//!   ordinary commands ([`crate::Op::Member`]), as etcd's.
//!
//! Removed ids are kept for the life of the cluster (etcd's `members_removed`), so a
//! removed member is recognised and refused, and an id is never handed out twice.
//!
//! [`StateMachine::apply_member_change`]: crate::StateMachine::apply_member_change

use imbl::{OrdMap, OrdSet};

/// Most peer or client URLs in one member record.
pub const MEMBER_URLS_MAX: usize = 16;
/// Longest URL in a member record, in bytes.
pub const MEMBER_URL_BYTES_MAX: usize = 1024;
/// Longest member name, in bytes.
pub const MEMBER_NAME_BYTES_MAX: usize = 256;

/// One member as etcd's `MemberList` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Member {
    /// The member's Raft id (never 0).
    pub id: u64,
    /// Its name; empty until the member has started and published it.
    pub name: String,
    /// URLs its peers reach it at.
    pub peer_urls: Vec<String>,
    /// URLs clients reach it at; empty until it has published them.
    pub client_urls: Vec<String>,
    /// True while it is a learner (receives the log, does not vote).
    pub is_learner: bool,
}

impl Member {
    /// Checks the record's bounds: what is wrong, in words, or `Ok`.
    pub fn check(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("member id 0 is not valid".into());
        }
        if self.name.len() > MEMBER_NAME_BYTES_MAX {
            return Err(format!(
                "member name of {} bytes exceeds the limit of {MEMBER_NAME_BYTES_MAX} bytes",
                self.name.len()
            ));
        }
        check_urls("peer", &self.peer_urls)?;
        check_urls("client", &self.client_urls)
    }
}

/// Checks a list of URLs against [`MEMBER_URLS_MAX`] and [`MEMBER_URL_BYTES_MAX`].
pub fn check_urls(what: &str, urls: &[String]) -> Result<(), String> {
    if urls.len() > MEMBER_URLS_MAX {
        return Err(format!(
            "{} {what} URLs given, at most {MEMBER_URLS_MAX} are allowed",
            urls.len()
        ));
    }
    if let Some(u) = urls.iter().find(|u| u.len() > MEMBER_URL_BYTES_MAX) {
        return Err(format!(
            "{what} URL of {} bytes exceeds the limit of {MEMBER_URL_BYTES_MAX} bytes",
            u.len()
        ));
    }
    if let Some(u) = urls.iter().find(|u| u.is_empty()) {
        return Err(format!("empty {what} URL {u:?}"));
    }
    Ok(())
}

/// A change to the member table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberOp {
    /// A new member (its id chosen by the proposing leader).
    Add(Member),
    /// A member leaves; its id is remembered as removed.
    Remove(u64),
    /// A learner becomes a voter.
    Promote(u64),
    /// New peer URLs for a member.
    Update {
        /// The member.
        id: u64,
        /// Its new peer URLs.
        peer_urls: Vec<String>,
    },
    /// A started member's name and client URLs (etcd's "publish").
    Publish {
        /// The member.
        id: u64,
        /// Its name.
        name: String,
        /// Its client URLs.
        client_urls: Vec<String>,
    },
}

impl MemberOp {
    /// The member the change is about.
    pub fn member_id(&self) -> u64 {
        match self {
            MemberOp::Add(m) => m.id,
            MemberOp::Remove(id) | MemberOp::Promote(id) => *id,
            MemberOp::Update { id, .. } | MemberOp::Publish { id, .. } => *id,
        }
    }
}

/// The member table and the removed ids. `Clone` is O(1) (persistent maps), as for
/// the rest of the state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    table: OrdMap<u64, Member>,
    removed: OrdSet<u64>,
}

impl Members {
    /// A table of `members` and the given removed ids (snapshot restore, seeding).
    pub fn from_parts(members: impl IntoIterator<Item = Member>, removed: &[u64]) -> Self {
        let table = members.into_iter().map(|m| (m.id, m)).collect();
        Members { table, removed: removed.iter().copied().collect() }
    }

    /// Every member, by id.
    pub fn list(&self) -> Vec<Member> {
        self.table.values().cloned().collect()
    }

    /// One member.
    pub fn get(&self, id: u64) -> Option<&Member> {
        self.table.get(&id)
    }

    /// Ids of removed members, ascending.
    pub fn removed(&self) -> Vec<u64> {
        self.removed.iter().copied().collect()
    }

    /// True if `id` was a member and has been removed.
    pub fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// True if nothing was ever recorded (a new cluster before seeding, or state from a
    /// build that kept no member table).
    pub fn is_empty(&self) -> bool {
        self.table.is_empty() && self.removed.is_empty()
    }

    /// Applies one change; returns the member's record afterwards (for a removal: the
    /// record it had), or `None` if the change does not apply to the table as it is
    /// (unknown member, an id in use or removed, promoting a voter): then nothing
    /// changes, on every replica alike.
    pub fn apply(&mut self, op: &MemberOp) -> Option<Member> {
        match op {
            MemberOp::Add(m) => {
                let known = self.table.contains_key(&m.id) || self.removed.contains(&m.id);
                if known || m.id == 0 {
                    return None;
                }
                self.table.insert(m.id, m.clone());
                Some(m.clone())
            }
            MemberOp::Remove(id) => {
                let m = self.table.remove(id)?;
                self.removed.insert(*id);
                Some(m)
            }
            MemberOp::Promote(id) => {
                let m = self.table.get_mut(id).filter(|m| m.is_learner)?;
                m.is_learner = false;
                Some(m.clone())
            }
            MemberOp::Update { id, peer_urls } => {
                let m = self.table.get_mut(id)?;
                m.peer_urls = peer_urls.clone();
                Some(m.clone())
            }
            MemberOp::Publish { id, name, client_urls } => {
                let m = self.table.get_mut(id)?;
                m.name = name.clone();
                m.client_urls = client_urls.clone();
                Some(m.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, url: &str) -> Member {
        Member { id, peer_urls: vec![url.into()], ..Member::default() }
    }

    #[test]
    fn a_removed_id_is_kept_and_never_added_again() {
        let mut t = Members::from_parts([member(1, "http://a:1")], &[]);
        assert_eq!(t.apply(&MemberOp::Remove(1)), Some(member(1, "http://a:1")));
        assert!(t.is_removed(1) && t.get(1).is_none());
        assert_eq!(t.apply(&MemberOp::Add(member(1, "http://b:1"))), None);
        assert_eq!(t.apply(&MemberOp::Remove(1)), None);
        assert!(t.list().is_empty());
    }

    #[test]
    fn promote_applies_to_learners_only_and_publish_fills_name_and_client_urls() {
        let learner = Member { is_learner: true, ..member(2, "http://b:1") };
        let mut t = Members::from_parts([member(1, "http://a:1"), learner], &[]);
        assert_eq!(t.apply(&MemberOp::Promote(1)), None);
        assert_eq!(t.apply(&MemberOp::Promote(2)).map(|m| m.is_learner), Some(false));
        let publish =
            MemberOp::Publish { id: 2, name: "m2".into(), client_urls: vec!["http://b:2".into()] };
        let m = t.apply(&publish).unwrap();
        assert_eq!((m.name.as_str(), m.client_urls.len()), ("m2", 1));
        assert_eq!(
            t.apply(&MemberOp::Publish { id: 9, name: "x".into(), client_urls: vec![] }),
            None
        );
    }

    #[test]
    fn records_over_their_bounds_are_refused_with_what_is_wrong() {
        let mut m = member(1, "http://a:1");
        assert_eq!(m.check(), Ok(()));
        m.peer_urls = vec!["u".repeat(MEMBER_URL_BYTES_MAX + 1)];
        assert!(m.check().unwrap_err().contains("peer URL of 1025 bytes"));
        m.peer_urls = vec!["http://a:1".into(); MEMBER_URLS_MAX + 1];
        assert!(m.check().unwrap_err().contains("17 peer URLs"));
        assert!(member(0, "http://a:1").check().is_err());
    }
}
