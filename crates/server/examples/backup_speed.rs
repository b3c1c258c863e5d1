//! Time and size of a backup in etcd's format: stream the state of N keys (default
//! 200,000, 100-byte values, every tenth key overwritten) to a file as
//! `Maintenance.Snapshot` does, then read it back as `raftkv snapshot restore` does.
//! `cargo run --release -p server --example backup_speed -- 1000000`

use kv::{Command, Config, Op, PutRequest, StateMachine};
use std::io::Write;
use std::time::Instant;

fn main() {
    let keys: u64 = std::env::args().nth(1).map_or(200_000, |n| n.parse().expect("a number"));
    let mut sm = StateMachine::new(Config::default());
    let mut index = 0;
    for i in 0..keys + keys / 10 {
        let key = format!("key/{:010}", (i % keys)).into_bytes();
        let put = PutRequest { key, value: vec![b'v'; 100], ..Default::default() };
        index += 1;
        sm.apply_command(index, &Command::new(Op::Put(put)));
    }
    let path = std::env::temp_dir().join(format!("raftkv-backup-speed-{}.db", std::process::id()));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let started = Instant::now();
    server::backup::stream_backup(&sm.snapshot_view(), &mut |chunk, _| file.write_all(&chunk))
        .unwrap();
    file.flush().unwrap();
    let stream_ms = started.elapsed().as_millis();
    let bytes = std::fs::metadata(&path).unwrap().len();
    let started = Instant::now();
    let back = server::backup::read_backup(&path, false).unwrap();
    let read_ms = started.elapsed().as_millis();
    assert_eq!(back.state.revision(), sm.revision());
    println!(
        "{keys} keys, {} stored versions: {:.1} MB file, streamed in {stream_ms} ms (two \
         passes), read back and imported in {read_ms} ms",
        sm.history_len(),
        bytes as f64 / 1e6
    );
    std::fs::remove_file(&path).unwrap();
}
