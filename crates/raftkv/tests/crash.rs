//! Real processes, real disks, `kill -9`: acknowledged writes survive any member being
//! killed at any moment, including all of them at once.
//!
//! `cargo test --release -p raftkv --test crash` runs the short version (CI). The long
//! loop — hundreds of kill/restart cycles with a concurrent writer — is
//! `RAFTKV_CRASH_CYCLES=100 cargo test --release -p raftkv --test crash -- --ignored --nocapture`.

use client::{Client, ClientOptions};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

struct TestCluster {
    members: Vec<Member>,
    initial_cluster: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl TestCluster {
    fn start(tag: &str) -> TestCluster {
        let root = std::env::temp_dir().join(format!("raftkv-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let members: Vec<Member> = (1..=3)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                dir: root.join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = TestCluster { members, initial_cluster };
        for i in 0..3 {
            c.spawn(i);
        }
        c
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {} already running", m.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.dir.with_extension("log"))
            .or_else(|_| {
                std::fs::create_dir_all(m.dir.parent().unwrap())?;
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(m.dir.with_extension("log"))
            })
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_raftkv"))
            .arg("server")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.dir)
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{}", m.client_port)])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", m.peer_port)])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--tick-ms", "20", "--snapshot-count", "200"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting raftkv server");
        m.child = Some(child);
    }

    /// `kill -9`: no chance to flush or sync anything.
    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.client_port)).collect()
    }

    fn client(&self) -> Client {
        let opts = ClientOptions { deadline: Duration::from_secs(20), exactly_once: true };
        Client::connect(&self.endpoints(), opts).unwrap()
    }

    /// The member that leads, per the members' own status.
    async fn leader(&self) -> Option<usize> {
        let c = self.client();
        for i in 0..3 {
            if let Ok(s) = c.status(i).await {
                if s.leader != 0 && s.header.as_ref().is_some_and(|h| h.member_id == s.leader) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Waits until every member applied at least `index`.
    async fn wait_applied(&self, index: u64) {
        let c = self.client();
        let deadline = Instant::now() + Duration::from_secs(30);
        'members: for i in 0..3 {
            while Instant::now() < deadline {
                if c.status(i).await.is_ok_and(|s| s.raft_applied_index >= index) {
                    continue 'members;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("member {i} did not apply index {index} within 30 s");
        }
    }

    /// Every acknowledged write, read back from every member's own state.
    async fn check_all(&self, acked: &[(String, String)]) {
        let c = self.client();
        let mut max_commit = 0;
        for i in 0..3 {
            if let Ok(s) = c.status(i).await {
                max_commit = max_commit.max(s.raft_index);
            }
        }
        self.wait_applied(max_commit).await;
        for (i, ep) in self.endpoints().into_iter().enumerate() {
            let opts = ClientOptions { deadline: Duration::from_secs(20), exactly_once: false };
            let mut one = Client::connect(&[ep], opts).unwrap();
            for (k, v) in acked {
                let got = one.get(k.as_bytes(), true).await.unwrap();
                let got = got.map(|kv| String::from_utf8(kv.value.to_vec()).unwrap());
                assert_eq!(
                    got.as_deref(),
                    Some(v.as_str()),
                    "member {i} lost acknowledged write {k}"
                );
            }
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// Writes keys `prefix-N` one after another until stopped, recording acknowledged ones.
fn start_writer(
    cluster: &TestCluster,
    prefix: &'static str,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let mut c = cluster.client();
    tokio::spawn(async move {
        let mut failures = 0;
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let (k, v) = (format!("{prefix}-{n}"), format!("value-{n}"));
            match c.put(k.as_bytes(), v.as_bytes()).await {
                Ok(_) => acked.lock().unwrap().push((k, v)),
                Err(_) => failures += 1,
            }
            n += 1;
        }
        failures
    })
}

async fn crash_cycles(tag: &str, cycles: usize) {
    let mut cluster = TestCluster::start(tag);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = start_writer(&cluster, "w", acked.clone(), stop.clone());
    let mut rng = 0x9E37_79B9u64;
    for cycle in 0..cycles {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis(300 + (rng >> 33) % 500)).await;
        let victim = match cycle % 4 {
            // Followers, the leader, and every so often all members at once.
            0 | 2 => cluster.leader().await.map(|l| (l + 1) % 3).unwrap_or(0),
            1 => cluster.leader().await.unwrap_or(1),
            _ => usize::MAX,
        };
        if victim == usize::MAX {
            for i in 0..3 {
                cluster.kill(i);
            }
            for i in 0..3 {
                cluster.spawn(i);
            }
        } else {
            cluster.kill(victim);
            tokio::time::sleep(Duration::from_millis(200 + (rng >> 40) % 400)).await;
            cluster.spawn(victim);
        }
        eprintln!(
            "cycle {cycle}: killed {}; {} writes acknowledged",
            if victim == usize::MAX { "all".to_string() } else { format!("m{}", victim + 1) },
            acked.lock().unwrap().len()
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let failures = writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= cycles, "the writer made progress: {} acknowledged", acked.len());
    cluster.check_all(&acked).await;
    eprintln!("{} cycles: {} acknowledged writes all present on every member ({failures} writes failed and were not acknowledged)", cycles, acked.len());
}

/// Kill -9 a follower, then the leader, then all members, with a concurrent writer:
/// every acknowledged write is readable from every member afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    crash_cycles("crash", 4).await;
}

/// The long loop: RAFTKV_CRASH_CYCLES cycles (default 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn acknowledged_writes_survive_many_kill_9_cycles() {
    let cycles =
        std::env::var("RAFTKV_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    crash_cycles("crash-long", cycles).await;
}
