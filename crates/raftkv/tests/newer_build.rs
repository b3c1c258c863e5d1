//! A member whose log holds a committed command its build cannot decode (a newer build's,
//! used before every member was upgraded: README, Upgrading) stops before applying it,
//! exits non-zero saying what to do, and does the same at every start: it never answers
//! the command as malformed while newer members execute it, which would make its state
//! differ from theirs for good.
//!
//! A newer build's command is made as one would look to this build: a put whose op tag no
//! build knows, appended to a stopped member's log as committed, as its leader would have
//! had it replicated.

mod common;

use common::{ClusterSpec, TestCluster};

/// A put whose op tag this build does not know.
fn newer_command() -> Vec<u8> {
    let put = kv::PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() };
    let mut data = kv::Command::new(kv::Op::Put(put)).encode();
    // The format version byte, the flags byte, then the op's tag.
    data[2] = 0xEE;
    assert!(kv::Command::decode(&data).is_err(), "the tag must be unknown to this build");
    data
}

/// The log of the stopped member `i`, and what it recovered.
fn open_log(
    cluster: &TestCluster,
    i: usize,
) -> (storage::Storage<storage::RealDisk>, raft::Restored) {
    let dir = cluster.members()[i].dir.join("member");
    let disk = storage::RealDisk::open(&dir).unwrap();
    let (store, restored, _) = storage::Storage::open(disk, storage::Options::default()).unwrap();
    (store, restored)
}

/// Appends `data` to the log of the stopped member `i` as a committed entry of its
/// current term; returns its index.
fn append_committed(cluster: &TestCluster, i: usize, data: Vec<u8>) -> u64 {
    let (mut store, _) = open_log(cluster, i);
    let hard_state = store.hard_state();
    let index = store.last_index() + 1;
    let entry = raft::Entry {
        term: hard_state.term,
        index,
        kind: raft::EntryKind::Normal,
        data: data.into(),
    };
    let committed = raft::HardState { commit: index, ..hard_state };
    store.save(Some(&committed), None, &[entry]).unwrap();
    index
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_stops_at_a_newer_builds_command_at_every_start_and_keeps_its_data() {
    let mut cluster = TestCluster::start_spec(ClusterSpec::raftkv("newer", &[]).members(1));
    cluster.wait_ready().await;
    let mut c = cluster.client();
    c.put(b"before", b"1").await.unwrap();
    drop(c);
    cluster.terminate(0);
    let index = append_committed(&cluster, 0, newer_command());

    let stopped = format!("the committed entry at index {index} ");
    for start in 1..=2 {
        cluster.spawn(0);
        let status = cluster.wait_exit(0).await;
        assert!(!status.success(), "start {start}: it exits non-zero: {status}");
        let log = cluster.log(0);
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&stopped)).collect();
        assert_eq!(lines.len(), start, "start {start}: one line per start saying why:\n{log}");
        for part in ["cannot decode", "newer raftkv", "Upgrade this member's binary"] {
            assert!(lines[0].contains(part), "{part:?} not in {:?}", lines[0]);
        }
    }

    // Its data is as it was, the entry included. A build that reads the entry (here:
    // the entry replaced by a put this build knows, as the upgraded binary would read
    // the newer command) applies it and serves everything.
    let put = kv::PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() };
    let known = kv::Command::new(kv::Op::Put(put)).encode();
    let (mut store, restored) = open_log(&cluster, 0);
    let kept = restored.entries.last().expect("the log");
    assert_eq!(kept.index, index, "the entry is kept");
    let replaced = raft::Entry { data: known.into(), ..kept.clone() };
    store.save(None, None, &[replaced]).unwrap();
    drop(store);
    cluster.spawn(0);
    cluster.wait_ready().await;
    let mut c = cluster.client();
    for (key, value) in [(&b"before"[..], &b"1"[..]), (b"k", b"v")] {
        let got = c.get(key, true).await.unwrap().map(|kv| kv.value.to_vec());
        assert_eq!(got.as_deref(), Some(value), "{:?}", String::from_utf8_lossy(key));
    }
}
