//! etcd's database layout in a bbolt file: what `etcdctl snapshot save` writes and
//! `etcdctl snapshot restore` reads, so data moves from etcd to raftkv and back.
//!
//! # Layout (etcd 3.4; 3.5 adds keys to `meta` that 3.4 ignores)
//!
//! | bucket | key | value |
//! | --- | --- | --- |
//! | `key` | revision: 8-byte big-endian main, `_`, 8-byte big-endian sub; a delete adds `t` | `mvccpb.KeyValue` (a delete's holds only the key) |
//! | `meta` | `consistent_index` | 8-byte big-endian applied log index |
//! | `meta` | `finishedCompactRev`, `scheduledCompactRev` | the compaction's revision (as above, sub 0) |
//! | `lease` | 8-byte big-endian lease id | `leasepb.Lease` (ID, TTL) |
//! | `alarm` | `etcdserverpb.AlarmMember` | empty |
//! | `auth`, `authUsers`, `authRoles` | auth state | |
//! | `cluster`, `members`, `members_removed` | membership | |
//!
//! The `key` bucket holds, after a compaction at `c`, each key's last put at or below
//! `c` and every change after it: [`kv::StateMachine::for_each_stored_change`].
//!
//! What is exported: every stored change, the leases, the compaction point and the
//! applied index (as `consistent_index`), the auth state (`authEnabled` `[1]`/`[0]` and
//! `authRevision` 8-byte big-endian in `auth`; `authpb.User` and `authpb.Role` keyed by
//! name in `authUsers` and `authRoles`, passwords as their bcrypt hashes, so they keep
//! working), `clusterVersion` 3.4.0; empty `alarm` and membership buckets. Alarms and
//! members belong to the old cluster's member ids, so neither direction carries them
//! (`etcdctl snapshot restore` also drops the members); an import reports alarms it
//! left behind (see [`Imported::skipped`]).

use bytes::Bytes;
use kv::{Config, Import, StateMachine, StoredChange};
use prost::Message;
use proto::mvccpb::KeyValue as PbKeyValue;
use std::io::{self, Write};

/// etcd's `leasepb.Lease`, as stored in the `lease` bucket.
#[derive(Clone, PartialEq, Message)]
pub struct LeasePb {
    /// Lease id.
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// Granted TTL in seconds.
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    /// Remaining TTL when checkpointed (etcd 3.4's lease checkpoints); 0 if not.
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

/// etcd's `authpb.UserAddOptions`.
#[derive(Clone, PartialEq, Message)]
pub struct UserOptionsPb {
    /// The user cannot log in with a password.
    #[prost(bool, tag = "1")]
    pub no_password: bool,
}

/// etcd's `authpb.User`, as stored in the `authUsers` bucket.
#[derive(Clone, PartialEq, Message)]
pub struct UserPb {
    /// User name.
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    /// bcrypt hash of the password; empty for a user without one.
    #[prost(bytes = "vec", tag = "2")]
    pub password: Vec<u8>,
    /// Granted role names.
    #[prost(string, repeated, tag = "3")]
    pub roles: Vec<String>,
    /// Options (etcd 3.4 always writes them).
    #[prost(message, optional, tag = "4")]
    pub options: Option<UserOptionsPb>,
}

/// etcd's `authpb.Permission`.
#[derive(Clone, PartialEq, Message)]
pub struct PermissionPb {
    /// READ = 0, WRITE = 1, READWRITE = 2.
    #[prost(int32, tag = "1")]
    pub perm_type: i32,
    /// First key.
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
    /// End of the range (empty: the key alone; `[0]`: every key from `key` on).
    #[prost(bytes = "vec", tag = "3")]
    pub range_end: Vec<u8>,
}

/// etcd's `authpb.Role`, as stored in the `authRoles` bucket.
#[derive(Clone, PartialEq, Message)]
pub struct RolePb {
    /// Role name.
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    /// Its permissions.
    #[prost(message, repeated, tag = "2")]
    pub key_permission: Vec<PermissionPb>,
}

/// Bytes of a revision key; a tombstone's has one more (`t`).
pub const REVISION_KEY_BYTES: usize = 17;

/// etcd's bucket names, in the (byte) order bbolt keeps them.
const BUCKETS: [&[u8]; 10] = [
    b"alarm",
    b"auth",
    b"authRoles",
    b"authUsers",
    b"cluster",
    b"key",
    b"lease",
    b"members",
    b"members_removed",
    b"meta",
];

/// The `key` bucket's key for revision `(main, sub)`.
pub fn revision_key(main: u64, sub: u64, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(REVISION_KEY_BYTES + 1);
    k.extend_from_slice(&main.to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&sub.to_be_bytes());
    if tombstone {
        k.push(b't');
    }
    k
}

/// The `key` bucket's value for a change (etcd's encoding of its `mvccpb.KeyValue`).
pub fn change_value(c: &StoredChange) -> Vec<u8> {
    let kv = &c.kv;
    let pb = if c.tombstone {
        PbKeyValue { key: Bytes::copy_from_slice(&kv.key), ..Default::default() }
    } else {
        PbKeyValue {
            key: Bytes::copy_from_slice(&kv.key),
            create_revision: kv.create_revision as i64,
            mod_revision: kv.mod_revision as i64,
            version: kv.version as i64,
            value: Bytes::copy_from_slice(&kv.value),
            lease: kv.lease,
        }
    };
    pb.encode_to_vec()
}

/// Writes `state` as an etcd database (a bbolt file) to `out`, announcing its size to
/// `size` first. Streams: memory is a page or two plus one key per page of the `key`
/// bucket.
pub fn write_etcd_db(
    state: &StateMachine,
    out: &mut dyn Write,
    size: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<u64> {
    bbolt::write_db(out, 1, size, &mut |db| {
        for name in BUCKETS {
            db.bucket(name)?;
            match name {
                b"auth" => {
                    let auth = state.auth();
                    db.put(b"authEnabled", &[u8::from(auth.enabled)])?;
                    db.put(b"authRevision", &auth.revision.to_be_bytes())?;
                }
                b"authRoles" => {
                    for (name, perms) in state.auth().roles.iter() {
                        db.put(name.as_bytes(), &role_value(name, perms))?;
                    }
                }
                b"authUsers" => {
                    for (name, user) in state.auth().users.iter() {
                        db.put(name.as_bytes(), &user_value(name, user))?;
                    }
                }
                b"cluster" => db.put(b"clusterVersion", crate::etcd::CLUSTER_VERSION.as_bytes())?,
                b"key" => state.for_each_stored_change(&mut |c| {
                    let key = revision_key(c.kv.mod_revision, c.sub, c.tombstone);
                    db.put(&key, &change_value(c))
                })?,
                b"lease" => {
                    for (id, ttl) in state.leases() {
                        let pb = LeasePb { id, ttl, remaining_ttl: 0 };
                        db.put(&(id as u64).to_be_bytes(), &pb.encode_to_vec())?;
                    }
                }
                b"meta" => write_meta(db, state)?,
                _ => {}
            }
        }
        Ok(())
    })
}

/// The `authUsers` bucket's value for a user.
pub fn user_value(name: &str, user: &kv::User) -> Vec<u8> {
    let pb = UserPb {
        name: name.as_bytes().to_vec(),
        password: user.password_hash.clone().unwrap_or_default(),
        roles: user.roles.iter().cloned().collect(),
        options: Some(UserOptionsPb { no_password: user.password_hash.is_none() }),
    };
    pb.encode_to_vec()
}

/// The `authRoles` bucket's value for a role.
pub fn role_value(name: &str, perms: &[kv::Permission]) -> Vec<u8> {
    let perm = |p: &kv::Permission| PermissionPb {
        perm_type: match p.perm_type {
            kv::PermissionType::Read => 0,
            kv::PermissionType::Write => 1,
            kv::PermissionType::ReadWrite => 2,
        },
        key: p.key.clone(),
        range_end: p.range_end.clone(),
    };
    let pb =
        RolePb { name: name.as_bytes().to_vec(), key_permission: perms.iter().map(perm).collect() };
    pb.encode_to_vec()
}

fn write_meta(db: &mut bbolt::DbWriter, state: &StateMachine) -> io::Result<()> {
    db.put(b"consistent_index", &state.applied_index().to_be_bytes())?;
    let compacted = state.compact_revision();
    if compacted > 0 {
        let rev = revision_key(compacted, 0, false);
        db.put(b"finishedCompactRev", &rev)?;
        db.put(b"scheduledCompactRev", &rev)?;
    }
    Ok(())
}

/// What an import found besides the state.
#[derive(Debug)]
pub struct Imported {
    /// The state machine.
    pub state: StateMachine,
    /// What the file held that raftkv does not keep, one line each (alarms); empty
    /// when nothing was left behind.
    pub skipped: Vec<String>,
}

/// Reads an etcd database (bbolt, without the trailing hash) into a state machine.
/// Errors say what is wrong; the caller adds the file name.
pub fn read_etcd_db<S: bbolt::Source>(db: bbolt::Db<S>) -> Result<Imported, String> {
    let e = |e: bbolt::Error| e.to_string();
    let names = db.buckets().map_err(e)?;
    for name in &names {
        if !BUCKETS.contains(&name.as_slice()) {
            return Err(format!(
                "bucket {:?} is not one of etcd's (a bbolt file, but not an etcd database, or \
                 a newer etcd's): nothing imported",
                String::from_utf8_lossy(name)
            ));
        }
    }
    for needed in [&b"key"[..], b"meta"] {
        if !names.iter().any(|n| n == needed) {
            return Err(format!(
                "no {:?} bucket: a bbolt file, but not an etcd database",
                String::from_utf8_lossy(needed)
            ));
        }
    }
    let mut import = Import::new(Config::default());
    db.for_each(b"key", &mut |k, v| {
        let change = decode_change(k, v).map_err(bbolt::Error::Corrupt)?;
        import.change(change).map_err(bbolt::Error::Corrupt)
    })
    .map_err(|err| format!("bucket \"key\": {}", e(err)))?;
    db.for_each(b"lease", &mut |k, v| {
        let (id, ttl) = decode_lease(k, v).map_err(bbolt::Error::Corrupt)?;
        import.lease(id, ttl).map_err(bbolt::Error::Corrupt)
    })
    .map_err(|err| format!("bucket \"lease\": {}", e(err)))?;
    let (compacted, applied) = read_meta(&db)?;
    import.auth(read_auth(&db)?).map_err(|err| format!("auth: {err}"))?;
    let mut alarms = 0u64;
    db.for_each(b"alarm", &mut |_, _| {
        alarms += 1;
        Ok(())
    })
    .map_err(e)?;
    let mut skipped = Vec::new();
    if alarms > 0 {
        skipped.push(format!("{alarms} alarms not imported (they belong to the old members)"));
    }
    let state = import.finish(compacted, applied)?;
    Ok(Imported { state, skipped })
}

/// Decodes one entry of the `key` bucket.
pub fn decode_change(k: &[u8], v: &[u8]) -> Result<StoredChange, String> {
    let tombstone = match k.len() {
        REVISION_KEY_BYTES if k[8] == b'_' => false,
        18 if k[8] == b'_' && k[17] == b't' => true,
        _ => return Err(format!("key {k:02x?} is not a revision (8 bytes, '_', 8 bytes[, 't'])")),
    };
    let main = u64::from_be_bytes(k[..8].try_into().expect("8"));
    let sub = u64::from_be_bytes(k[9..17].try_into().expect("8"));
    let at = format!("revision ({main}, {sub})");
    let pb =
        PbKeyValue::decode(v).map_err(|err| format!("{at}: value is not a KeyValue: {err}"))?;
    if !tombstone && (pb.mod_revision as u64 != main || pb.create_revision < 1 || pb.version < 1) {
        return Err(format!(
            "{at}: KeyValue with mod revision {}, create revision {}, version {}",
            pb.mod_revision, pb.create_revision, pb.version
        ));
    }
    let kv = kv::KeyValue {
        key: pb.key.to_vec(),
        create_revision: pb.create_revision as u64,
        mod_revision: main,
        version: pb.version as u64,
        value: pb.value.to_vec(),
        lease: pb.lease,
    };
    Ok(StoredChange { kv, sub, tombstone })
}

fn decode_lease(k: &[u8], v: &[u8]) -> Result<(i64, i64), String> {
    let pb = LeasePb::decode(v).map_err(|err| format!("value is not a Lease: {err}"))?;
    if k != (pb.id as u64).to_be_bytes() {
        return Err(format!("key {k:02x?} does not match the lease id {:x}", pb.id));
    }
    Ok((pb.id, pb.ttl))
}

/// Reads the `auth`, `authUsers` and `authRoles` buckets (absent ones: auth off, no
/// users or roles).
fn read_auth<S: bbolt::Source>(db: &bbolt::Db<S>) -> Result<kv::AuthState, String> {
    let mut auth = kv::AuthState::default();
    db.for_each(b"auth", &mut |k, v| {
        match (k, v) {
            (b"authEnabled", [flag]) => auth.enabled = *flag == 1,
            (b"authRevision", _) => {
                let rev: [u8; 8] = v.try_into().map_err(|_| {
                    bbolt::Error::Corrupt(format!("authRevision of {} bytes, not 8", v.len()))
                })?;
                auth.revision = u64::from_be_bytes(rev).max(kv::auth::INITIAL_AUTH_REVISION);
            }
            _ => {}
        }
        Ok(())
    })
    .map_err(|e| format!("bucket \"auth\": {e}"))?;
    let users = std::sync::Arc::make_mut(&mut auth.users);
    db.for_each(b"authUsers", &mut |k, v| {
        let (name, user) = decode_user(k, v).map_err(bbolt::Error::Corrupt)?;
        users.insert(name, user);
        Ok(())
    })
    .map_err(|e| format!("bucket \"authUsers\": {e}"))?;
    let roles = std::sync::Arc::make_mut(&mut auth.roles);
    db.for_each(b"authRoles", &mut |k, v| {
        let (name, perms) = decode_role(k, v).map_err(bbolt::Error::Corrupt)?;
        roles.insert(name, perms);
        Ok(())
    })
    .map_err(|e| format!("bucket \"authRoles\": {e}"))?;
    Ok(auth)
}

/// A bucket key as a user or role name, which etcd keeps as UTF-8 strings.
fn auth_name(what: &str, k: &[u8], name: &[u8]) -> Result<String, String> {
    if k != name {
        return Err(format!("key {:?} holds the {what} {:?}", lossy(k), lossy(name)));
    }
    String::from_utf8(k.to_vec()).map_err(|_| format!("{what} name {k:02x?} is not UTF-8"))
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// Decodes one entry of the `authUsers` bucket.
pub fn decode_user(k: &[u8], v: &[u8]) -> Result<(String, kv::User), String> {
    let pb = UserPb::decode(v)
        .map_err(|err| format!("user {:?}: value is not a User: {err}", lossy(k)))?;
    let name = auth_name("user", k, &pb.name)?;
    // A user without a password (etcd's no_password, or an empty hash, which no
    // password matches) cannot log in with one.
    let no_password = pb.options.is_some_and(|o| o.no_password) || pb.password.is_empty();
    let password_hash = (!no_password).then_some(pb.password);
    Ok((name, kv::User { password_hash, roles: pb.roles.into_iter().collect() }))
}

/// Decodes one entry of the `authRoles` bucket.
pub fn decode_role(k: &[u8], v: &[u8]) -> Result<(String, Vec<kv::Permission>), String> {
    let pb = RolePb::decode(v)
        .map_err(|err| format!("role {:?}: value is not a Role: {err}", lossy(k)))?;
    let name = auth_name("role", k, &pb.name)?;
    let mut perms = Vec::with_capacity(pb.key_permission.len());
    for p in pb.key_permission {
        let perm_type = match p.perm_type {
            0 => kv::PermissionType::Read,
            1 => kv::PermissionType::Write,
            2 => kv::PermissionType::ReadWrite,
            t => return Err(format!("role {name:?}: permission type {t} (0..=2 known)")),
        };
        perms.push(kv::Permission { perm_type, key: p.key, range_end: p.range_end });
    }
    Ok((name, perms))
}

fn read_meta<S: bbolt::Source>(db: &bbolt::Db<S>) -> Result<(u64, u64), String> {
    let (mut finished, mut scheduled, mut applied) = (0, 0, 0);
    db.for_each(b"meta", &mut |k, v| {
        let rev = || -> Result<u64, bbolt::Error> {
            if v.len() != REVISION_KEY_BYTES {
                return Err(bbolt::Error::Corrupt(format!(
                    "meta {:?}: {} bytes, not a revision",
                    String::from_utf8_lossy(k),
                    v.len()
                )));
            }
            Ok(u64::from_be_bytes(v[..8].try_into().expect("8")))
        };
        match k {
            b"finishedCompactRev" => finished = rev()?,
            b"scheduledCompactRev" => scheduled = rev()?,
            b"consistent_index" if v.len() == 8 => {
                applied = u64::from_be_bytes(v.try_into().expect("8"))
            }
            _ => {}
        }
        Ok(())
    })
    .map_err(|e| format!("bucket \"meta\": {e}"))?;
    // A compaction scheduled but not finished is finished on restore, as etcd does.
    Ok((finished.max(scheduled), applied))
}

/// etcd's `snapshot status` of a bbolt file: CRC-32C over every bucket's name, keys
/// and values; the last revision in `key`; the number of keys in all buckets; the size.
pub fn db_status<S: bbolt::Source>(db: &bbolt::Db<S>) -> Result<(u32, u64, u64, u64), String> {
    let mut crc = crate::hash::Crc32c::new();
    let (mut revision, mut keys) = (0u64, 0u64);
    for name in db.buckets().map_err(|e| e.to_string())? {
        crc.update(&name);
        let is_key = name == b"key";
        db.for_each(&name, &mut |k, v| {
            crc.update(k);
            crc.update(v);
            if is_key && k.len() >= 8 {
                revision = u64::from_be_bytes(k[..8].try_into().expect("8"));
            }
            keys += 1;
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    }
    Ok((crc.finish(), revision, keys, db.pages() * db.page_size()))
}
