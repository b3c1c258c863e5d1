//! The stored history as etcd keeps it, out and in: what moving data between etcd and
//! raftkv needs from the state machine, without any of etcd's encodings (those live
//! with the server, which speaks etcd's formats).
//!
//! etcd's store is a map from revision `(main, sub)` to the key-value it wrote, a
//! tombstone for a delete. After a compaction at `c` it holds, of the revisions at or
//! below `c`, only each key's last put (its last change, if that is not a delete).
//! [`StateMachine::for_each_stored_change`] lists exactly that set, in revision order,
//! whatever pruning has got to, so an export (or a hash over it) is the same on every
//! member. [`Import`] builds a state machine from such a list.

use std::sync::Arc;

use crate::auth::{AuthState, Permission, User, ROOT_ROLE, ROOT_USER};
use crate::machine::{Config, StateMachine, INITIAL_REVISION};
use crate::mvcc::{Lease, Mvcc, MvccKey, PutMeta, Record, Version};
use crate::quota::Alarms;
use crate::session::Sessions;
use crate::types::KeyValue;

/// One stored change: the key-value a put wrote (`create_revision`, `mod_revision`,
/// `version`, `value`, `lease` set) or, for a delete, a tombstone (`tombstone` true, only
/// `key` and `mod_revision` set). `sub` is its position within revision `mod_revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChange {
    /// The key-value (for a tombstone: key and `mod_revision` only).
    pub kv: KeyValue,
    /// The change's sub-revision.
    pub sub: u64,
    /// Whether this is a delete.
    pub tombstone: bool,
}

impl StateMachine {
    /// Calls `f` with every change etcd would still hold at this state, in `(main, sub)`
    /// order (see the module docs), stopping at `f`'s first error. Reads a frozen copy:
    /// call it on a view off the apply thread.
    pub fn for_each_stored_change<E>(
        &self,
        f: &mut dyn FnMut(&StoredChange) -> Result<(), E>,
    ) -> Result<(), E> {
        let mvcc = &self.mvcc;
        for (rev, sub, key) in mvcc.changes.iter() {
            let k = MvccKey::new(key.clone(), *rev, *sub);
            let record = mvcc.entries.get(&k).expect("the change index mirrors the entries");
            if !mvcc.survives_compaction(&k, record) {
                continue;
            }
            let change = match record {
                Record::Tombstone => StoredChange {
                    kv: KeyValue { key: key.to_vec(), mod_revision: *rev, ..KeyValue::default() },
                    sub: *sub,
                    tombstone: true,
                },
                Record::Put(v) => StoredChange {
                    kv: KeyValue {
                        key: key.to_vec(),
                        create_revision: v.meta().create_revision,
                        mod_revision: *rev,
                        version: v.meta().version,
                        value: v.value().to_vec(),
                        lease: v.meta().lease,
                    },
                    sub: *sub,
                    tombstone: false,
                },
            };
            f(&change)?;
        }
        Ok(())
    }
}

/// Builds a state machine from stored changes (etcd's key bucket), leases and the
/// compaction point. Every change is checked; the first bad one is an error saying
/// what is wrong with it.
pub struct Import {
    config: Config,
    mvcc: Mvcc,
    max_revision: u64,
    auth: AuthState,
}

impl Import {
    /// An empty import for a cluster that runs with `config`.
    pub fn new(config: Config) -> Self {
        Import { config, mvcc: Mvcc::default(), max_revision: 0, auth: AuthState::default() }
    }

    /// Adds one stored change.
    pub fn change(&mut self, change: StoredChange) -> Result<(), String> {
        let kv = change.kv;
        let rev = kv.mod_revision;
        let at = format!("revision ({rev}, {})", change.sub);
        if kv.key.is_empty() || kv.key.len() as u64 > self.config.key_bytes_max {
            return Err(format!("{at}: key of {} bytes (1..={} allowed)", kv.key.len(), {
                self.config.key_bytes_max
            }));
        }
        if rev == 0 {
            return Err(format!("{at}: revision 0"));
        }
        let record = if change.tombstone {
            Record::Tombstone
        } else {
            if kv.create_revision == 0 || kv.create_revision > rev || kv.version == 0 {
                return Err(format!(
                    "{at}: a put with create revision {} and version {}",
                    kv.create_revision, kv.version
                ));
            }
            if kv.value.len() as u64 > self.config.value_bytes_max {
                return Err(format!(
                    "{at}: value of {} bytes, above raftkv's limit of {}",
                    kv.value.len(),
                    self.config.value_bytes_max
                ));
            }
            let meta = PutMeta {
                create_revision: kv.create_revision,
                version: kv.version,
                lease: kv.lease,
            };
            Record::Put(Version::new(&kv.value, meta))
        };
        let key = MvccKey::new(Arc::from(kv.key), rev, change.sub);
        if self.mvcc.entries.insert(key, record).is_some() {
            return Err(format!("{at}: the same key changed twice at one revision"));
        }
        self.max_revision = self.max_revision.max(rev);
        Ok(())
    }

    /// Adds a lease with its granted TTL in seconds.
    pub fn lease(&mut self, id: i64, ttl_secs: i64) -> Result<(), String> {
        if id == 0 || ttl_secs < 1 {
            return Err(format!("lease {id:#x} with TTL {ttl_secs}: id 0 or TTL below 1"));
        }
        let lease = Lease { ttl_secs, ..Lease::default() };
        if self.mvcc.leases.insert(id, lease).is_some() {
            return Err(format!("lease {id:#x} twice"));
        }
        Ok(())
    }

    /// The state machine, at the last revision seen (or `compact_revision` if higher,
    /// as etcd restores), compacted at `compact_revision` (0: never), having applied up
    /// to log index `applied_index`.
    pub fn finish(
        mut self,
        compact_revision: u64,
        applied_index: u64,
    ) -> Result<StateMachine, String> {
        let revision = self.max_revision.max(compact_revision).max(INITIAL_REVISION);
        self.mvcc.revision = revision;
        self.mvcc.compact_revision = compact_revision;
        if compact_revision > 0 {
            self.mvcc.prune_cursor = Some(Arc::from(&[][..]));
        }
        self.mvcc.rebuild_indices();
        if let Some((rev, sub)) = self.mvcc.duplicate_revision() {
            return Err(format!("two keys changed at the same revision ({rev}, {sub})"));
        }
        Ok(StateMachine {
            config: self.config,
            applied_index,
            mvcc: self.mvcc,
            sessions: Sessions::default(),
            alarms: Alarms::default(),
            auth: self.auth,
            // An imported backup starts a new cluster: the node seeds its members.
            members: Arc::default(),
        })
    }

    /// Sets the auth state (etcd's `auth`, `authUsers` and `authRoles` buckets).
    /// Each role's permissions are sorted here; an empty name, a permission
    /// key above the key limit, a password hash above the snapshot's limit, two permissions on the same range, or auth on
    /// without a root user holding the root role is an error naming it.
    pub fn auth(&mut self, mut auth: AuthState) -> Result<(), String> {
        if auth.revision == 0 {
            return Err("auth revision 0 (a store's starts at 1)".into());
        }
        if auth.users.contains_key("") || auth.roles.contains_key("") {
            return Err("a user or role with an empty name".into());
        }
        let hash_max = crate::snapshot::PASSWORD_HASH_BYTES_MAX;
        let long = |u: &User| u.password_hash.as_ref().is_some_and(|h| h.len() as u64 > hash_max);
        if let Some((name, _)) = auth.users.iter().find(|(_, u)| long(u)) {
            return Err(format!("user {name:?}: password hash above {hash_max} bytes"));
        }
        for (name, perms) in Arc::make_mut(&mut auth.roles).iter_mut() {
            check_permissions(name, perms, self.config.key_bytes_max)?;
        }
        let root_ok = auth.users.get(ROOT_USER).is_some_and(|u| u.roles.contains(ROOT_ROLE));
        if auth.enabled && !root_ok {
            return Err("auth is enabled but user \"root\" lacks role \"root\"".into());
        }
        self.auth = auth;
        Ok(())
    }
}

/// Sorts a role's permissions as apply keeps them and checks them.
fn check_permissions(role: &str, perms: &mut [Permission], key_max: u64) -> Result<(), String> {
    perms.sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
    for p in perms.iter() {
        if p.key.len() as u64 > key_max || p.range_end.len() as u64 > key_max {
            return Err(format!(
                "role {role:?}: permission key or range end above {key_max} bytes"
            ));
        }
    }
    if perms.windows(2).any(|w| (&w[0].key, &w[0].range_end) == (&w[1].key, &w[1].range_end)) {
        return Err(format!("role {role:?}: two permissions on the same key range"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Command, DeleteRangeRequest, Op, PutRequest, RangeRequest};

    fn put(key: &str, value: &str, lease: i64) -> Op {
        let (key, value) = (key.into(), value.into());
        Op::Put(PutRequest { key, value, lease, ..Default::default() })
    }

    fn del(key: &str) -> Op {
        Op::DeleteRange(DeleteRangeRequest { key: key.into(), ..Default::default() })
    }

    /// Puts, overwrites, deletes, a lease with keys, a compaction part-way, more writes.
    fn sample() -> StateMachine {
        let mut sm = StateMachine::new(Config::default());
        let ops = [
            put("a", "1", 0),
            put("b", "2", 0),
            put("a", "3", 0),
            del("b"),
            Op::LeaseGrant { id: 77, ttl_secs: 600 },
            put("c", "4", 77),
            put("d", "5", 0),
            del("d"),
            Op::Compact { revision: 6 },
            put("a", "6", 0),
            put("e", "7", 77),
        ];
        for (i, op) in ops.into_iter().enumerate() {
            sm.apply_command(i as u64 + 1, &Command::new(op));
        }
        sm
    }

    fn stored(sm: &StateMachine) -> Vec<StoredChange> {
        let mut out = Vec::new();
        sm.for_each_stored_change::<()>(&mut |c| {
            out.push(c.clone());
            Ok(())
        })
        .unwrap();
        out
    }

    fn all_at(sm: &StateMachine, revision: u64) -> Vec<KeyValue> {
        let r = RangeRequest { key: vec![0], range_end: vec![0], revision, ..Default::default() };
        sm.range(&r).unwrap().kvs
    }

    /// etcd's compaction at 6 leaves, of revisions up to 6, each key's last put: `a`@4
    /// and `c`@6 (`b` ends in a delete, `a`@2 is overwritten); everything after 6 stays,
    /// the delete of `d` included. What is listed does not depend on how far pruning got.
    #[test]
    fn stored_changes_are_what_etcd_keeps_after_compaction() {
        let sm = sample();
        let revs: Vec<_> = stored(&sm).iter().map(|c| (c.kv.mod_revision, c.tombstone)).collect();
        assert_eq!(revs, [(4, false), (6, false), (7, false), (8, true), (9, false), (10, false)]);
        let mut pruned = sm.clone();
        while pruned.mvcc.prune_cursor.is_some() {
            pruned.mvcc.prune_step(1);
        }
        assert_eq!(stored(&pruned), stored(&sm));
    }

    /// Import of the export gives the same reads at every readable revision, the same
    /// leases with their keys, compaction point and revision.
    #[test]
    fn import_of_the_stored_changes_reads_the_same() {
        let sm = sample();
        let mut import = Import::new(Config::default());
        for c in stored(&sm) {
            import.change(c).unwrap();
        }
        for (id, ttl) in sm.leases() {
            import.lease(id, ttl).unwrap();
        }
        let back = import.finish(sm.compact_revision(), 5).unwrap();
        assert_eq!((back.revision(), back.compact_revision()), (10, 6));
        for rev in 6..=10 {
            assert_eq!(all_at(&back, rev), all_at(&sm, rev), "at revision {rev}");
        }
        assert_eq!(back.leases(), sm.leases());
        let keys = |s: &StateMachine| s.lease_time_to_live(77, true).unwrap().keys;
        assert_eq!(keys(&back), keys(&sm));
        assert_eq!(stored(&back), stored(&sm));
    }

    /// Changes no write could make are refused, saying which and why.
    #[test]
    fn impossible_changes_are_refused() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            mod_revision: 3,
            create_revision: 4,
            version: 1,
            ..Default::default()
        };
        let e =
            Import::new(Config::default()).change(StoredChange { kv, sub: 0, tombstone: false });
        assert!(e.unwrap_err().contains("revision (3, 0): a put with create revision 4"));
        let mut import = Import::new(Config::default());
        let kv = KeyValue { key: b"k".to_vec(), mod_revision: 3, ..Default::default() };
        import.change(StoredChange { kv: kv.clone(), sub: 0, tombstone: true }).unwrap();
        let kv2 = KeyValue { key: b"j".to_vec(), ..kv };
        import.change(StoredChange { kv: kv2, sub: 0, tombstone: true }).unwrap();
        assert!(import.finish(0, 0).err().unwrap().contains("same revision (3, 0)"));
    }

    fn perm(key: &str, range_end: &str) -> Permission {
        let (key, range_end) = (key.into(), range_end.into());
        Permission { perm_type: crate::auth::PermissionType::Read, key, range_end }
    }

    /// Imported users and roles are the machine's, permissions sorted as apply
    /// keeps them.
    #[test]
    fn imported_auth_is_kept_with_permissions_sorted() {
        let root = User { password_hash: Some(b"h".to_vec()), roles: ["root".into()].into() };
        let roles =
            [("root".to_string(), vec![]), ("r".into(), vec![perm("b", ""), perm("a", "")])];
        let auth = AuthState {
            enabled: true,
            revision: 7,
            users: Arc::new([("root".to_string(), root)].into()),
            roles: Arc::new(roles.into()),
        };
        let mut import = Import::new(Config::default());
        import.auth(auth.clone()).unwrap();
        let sm = import.finish(0, 0).unwrap();
        assert_eq!(sm.auth().users, auth.users);
        assert_eq!(sm.auth().roles["r"], vec![perm("a", ""), perm("b", "")]);
        assert!(sm.auth().enabled && sm.auth().revision == 7);
    }

    /// Auth states apply could never reach are refused, saying why.
    #[test]
    fn impossible_auth_is_refused() {
        let enabled = AuthState { enabled: true, ..AuthState::default() };
        let e = Import::new(Config::default()).auth(enabled).unwrap_err();
        assert!(e.contains("lacks role \"root\""), "{e}");
        let roles = [("r".to_string(), vec![perm("a", ""), perm("a", "")])];
        let twice = AuthState { roles: Arc::new(roles.into()), ..AuthState::default() };
        let e = Import::new(Config::default()).auth(twice).unwrap_err();
        assert!(e.contains("two permissions on the same key range"), "{e}");
    }
}
