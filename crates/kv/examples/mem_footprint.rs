//! Resident memory of the state machine for a history like `compare-etcd.sh`'s: 100k
//! keys with 256-byte values, then 300k overwrites, then 100k more overwrites with no
//! snapshot view and 100k while one is held (what a member does while its snapshot
//! thread streams a view to a file: every write copies the map nodes it touches).
//! Prints RSS after each phase and the size of an encoded put (what a Raft log entry
//! holds for it).
//!
//! Run: `cargo run --release -p kv --example mem_footprint`

use kv::{Command, Config, Op, PutRequest, StateMachine};

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = s.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn main() {
    let mut sm = StateMachine::new(Config::default());
    let base = rss_mib();
    let mut index = 0;
    let mut put = |sm: &mut StateMachine, k: u64, salt: u64| {
        index += 1;
        let mut value = format!("{k}-{salt}-").into_bytes();
        value.resize(256, b'v');
        let key = format!("bench/{k:08}").into_bytes();
        let cmd = Command::new(Op::Put(PutRequest { key, value, ..Default::default() }));
        sm.apply(index, &cmd.encode());
    };
    for k in 0..100_000 {
        put(&mut sm, k, 0);
    }
    let loaded = rss_mib();
    for i in 0..300_000u64 {
        put(&mut sm, (i * 7919) % 100_000, i);
    }
    let updated = rss_mib();
    for i in 300_000..400_000u64 {
        put(&mut sm, (i * 7919) % 100_000, i);
    }
    let no_view = rss_mib();
    let view = sm.snapshot_view();
    for i in 400_000..500_000u64 {
        put(&mut sm, (i * 7919) % 100_000, i);
    }
    let with_view = rss_mib();
    drop(view);
    let mut value = vec![b'v'; 256];
    value[0] = b'0';
    let key = format!("bench/{:08}", 0).into_bytes();
    let encoded = Command::new(Op::Put(PutRequest { key, value, ..Default::default() })).encode();
    println!(
        "next 100k overwrites: {:.0} MiB with no snapshot view, {:.0} MiB while a view is held; \
         an encoded put is {} B",
        no_view - updated,
        with_view - no_view,
        encoded.len()
    );
    println!(
        "rss: start {base:.0} MiB, 100k keys {loaded:.0} MiB ({:.0} B/version), +300k overwrites {updated:.0} MiB ({:.0} B/version)",
        (loaded - base) * 1048576.0 / 100_000.0,
        (updated - loaded) * 1048576.0 / 300_000.0
    );
}
