//! A cluster of real server processes for the integration tests (3 members, or as many
//! as asked): free ports, a data dir and a log file per member under one temporary
//! root, `kill -9`, restart with the same data, and waiting for a leader, for every
//! member to answer a linearizable read, or for every member to apply an index. A
//! cluster can be planned (names, ports, data dirs) before any member starts, so that
//! `raftkv snapshot restore` can write the data dirs it starts on.
//!
//! The servers are `raftkv server` processes (the binary under test) or, for the etcd
//! compatibility suite, real `etcd` processes started the same way. A member's log is
//! `<root>/<name>.log`, appended to across restarts. The root is removed when the
//! cluster is dropped, unless a test is failing: then data and logs stay for a look.
//!
//! It also runs the `raftkv` command line and `etcdctl` for the tests.
//!
//! Each test binary uses a different part of this module (`mod common;`), so unused
//! items are not dead code here.
#![allow(dead_code)]

use client::{Client, ClientOptions};
use proto::etcdserverpb as pb;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which server program the members run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Server {
    /// `raftkv server`, the binary of this crate.
    Raftkv,
    /// A real `etcd` on PATH (the compatibility suite's reference).
    Etcd,
}

/// How to start a cluster.
pub struct ClusterSpec {
    /// Names the temporary root: `<tmp>/raftkv-<tag>-<pid>`.
    pub tag: String,
    /// The program the members run.
    pub server: Server,
    /// Member names are this prefix followed by 1, 2, 3...
    pub name_prefix: &'static str,
    /// How many members.
    pub size: usize,
    /// Extra flags for every member, after the cluster flags.
    pub flags: Vec<String>,
    /// URL scheme of every client and peer URL: `http` or `https` (TLS flags in `flags`).
    pub scheme: &'static str,
}

impl ClusterSpec {
    /// A raftkv cluster with members `m1`..`m3` and these extra flags.
    pub fn raftkv(tag: &str, flags: &[&str]) -> ClusterSpec {
        ClusterSpec {
            tag: tag.to_string(),
            server: Server::Raftkv,
            name_prefix: "m",
            size: 3,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            scheme: "http",
        }
    }

    /// A cluster of real `etcd` processes with these extra flags.
    pub fn etcd(tag: &str, flags: &[&str]) -> ClusterSpec {
        ClusterSpec { server: Server::Etcd, ..ClusterSpec::raftkv(tag, flags) }
    }

    /// The same, with members named `prefix`1, `prefix`2...
    pub fn named(self, prefix: &'static str) -> ClusterSpec {
        ClusterSpec { name_prefix: prefix, ..self }
    }

    /// The same, with `https://` client and peer URLs (give the TLS flags too).
    pub fn https(self) -> ClusterSpec {
        ClusterSpec { scheme: "https", ..self }
    }

    /// The same, with `size` members.
    pub fn members(self, size: usize) -> ClusterSpec {
        assert!(size >= 1, "a cluster has members");
        ClusterSpec { size, ..self }
    }
}

/// One member: its name, ports, data dir and process (if running).
pub struct Member {
    /// The member's name in `--initial-cluster`.
    pub name: String,
    /// Port of the client (etcd API) listener.
    pub client_port: u16,
    /// Port of the peer (Raft) listener.
    pub peer_port: u16,
    /// Port of `/health` and `/metrics` (raftkv members only).
    pub metrics_port: u16,
    /// The member's data dir.
    pub dir: PathBuf,
    /// For a member added to the running cluster: the `ETCD_*` lines `member add`
    /// printed, which it starts with instead of the cluster's `--initial-cluster`.
    pub join_env: Option<Vec<(String, String)>>,
    /// Extra flags for this member instead of the cluster's (its own certificates).
    pub flags: Option<Vec<String>>,
    child: Option<Child>,
}

/// A cluster of member processes; dropping it kills every member.
pub struct TestCluster {
    root: PathBuf,
    server: Server,
    flags: Vec<String>,
    members: Vec<Member>,
    initial_cluster: String,
    scheme: &'static str,
    client_tls: Option<tls::ClientTls>,
}

/// Where [`free_port`] looks: below Linux's default ephemeral range (32768-60999),
/// from which outgoing connections and `bind(0)` take their ports.
const TEST_PORTS: std::ops::Range<u16> = 20000..32000;

/// A port free now, released for a member to bind later; each call in a process gets
/// another one.
///
/// Not from the ephemeral range: between this check and the member's bind, an outgoing
/// connection (members dialing each other) could take such a port, and the member then
/// failed to start with "address already in use" (seen in the snapshot test). The start
/// is spread by the process id so that test processes running at once rarely meet; a
/// port another process holds fails the bind check and is skipped.
pub fn free_port() -> u16 {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let start = std::process::id().wrapping_mul(7919) % span;
    loop {
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        assert!(call < span, "no free port left in {TEST_PORTS:?}");
        let port = TEST_PORTS.start + ((start + call) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl TestCluster {
    /// A raftkv cluster (`m1`..`m3`) with these extra server flags, all members started.
    pub fn start(tag: &str, flags: &[&str]) -> TestCluster {
        TestCluster::start_spec(ClusterSpec::raftkv(tag, flags))
    }

    /// Starts every member of the cluster `spec` describes (a fresh root dir).
    pub fn start_spec(spec: ClusterSpec) -> TestCluster {
        let mut c = TestCluster::plan(spec);
        c.spawn_all();
        c
    }

    /// The cluster `spec` describes, with names, ports and data dir paths fixed (a
    /// fresh root dir, no data dir created) and no member started.
    pub fn plan(spec: ClusterSpec) -> TestCluster {
        let root = std::env::temp_dir().join(format!("raftkv-{}-{}", spec.tag, std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let members: Vec<Member> = (1..=spec.size)
            .map(|i| {
                let name = format!("{}{i}", spec.name_prefix);
                Member {
                    dir: root.join(&name),
                    name,
                    client_port: free_port(),
                    peer_port: free_port(),
                    metrics_port: free_port(),
                    join_env: None,
                    flags: None,
                    child: None,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}://127.0.0.1:{}", m.name, spec.scheme, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        TestCluster {
            root,
            server: spec.server,
            flags: spec.flags,
            members,
            initial_cluster,
            scheme: spec.scheme,
            client_tls: None,
        }
    }

    /// Starts every member that is not running.
    pub fn spawn_all(&mut self) {
        for i in 0..self.members.len() {
            if !self.is_running(i) {
                self.spawn(i);
            }
        }
    }

    /// Starts member `i` (again) on its data dir.
    pub fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {} already running", m.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.dir.with_extension("log"))
            .unwrap();
        let client = format!("{}://127.0.0.1:{}", self.scheme, m.client_port);
        let peer = format!("{}://127.0.0.1:{}", self.scheme, m.peer_port);
        let mut cmd = match self.server {
            Server::Raftkv => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_raftkv"));
                c.arg("server");
                c
            }
            Server::Etcd => Command::new("etcd"),
        };
        cmd.arg("--data-dir").arg(&m.dir);
        cmd.args(["--listen-client-urls", &client, "--listen-peer-urls", &peer]);
        if let Some(env) = &m.join_env {
            // Exactly what `member add` printed: name, cluster, peer URL and state.
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
        } else {
            cmd.args(["--name", &m.name, "--initial-cluster", &self.initial_cluster]);
        }
        if self.server == Server::Raftkv {
            cmd.args(["--listen-metrics-urls", &format!("http://127.0.0.1:{}", m.metrics_port)]);
        }
        if self.server == Server::Etcd {
            cmd.args(["--advertise-client-urls", &client]);
            if m.join_env.is_none() {
                cmd.args([
                    "--initial-advertise-peer-urls",
                    &peer,
                    "--initial-cluster-state",
                    "new",
                ]);
                cmd.args(["--initial-cluster-token", "compat"]);
            }
        }
        cmd.args(m.flags.as_ref().unwrap_or(&self.flags));
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().expect("starting a member");
        m.child = Some(child);
    }

    /// Plans one more member, `name`, with fresh ports and a data dir path (not
    /// created), not started and not in `--initial-cluster`: a member to `member add`.
    /// Returns its index.
    pub fn plan_member(&mut self, name: &str) -> usize {
        self.members.push(Member {
            dir: self.root.join(name),
            name: name.to_string(),
            client_port: free_port(),
            peer_port: free_port(),
            metrics_port: free_port(),
            join_env: None,
            flags: None,
            child: None,
        });
        self.members.len() - 1
    }

    /// Makes member `i` start from `env` (the lines `member add` printed) instead of
    /// the cluster's `--initial-cluster`.
    pub fn set_join_env(&mut self, i: usize, env: Vec<(String, String)>) {
        self.members[i].join_env = Some(env);
    }

    /// Makes member `i` start with `flags` instead of the cluster's extra flags.
    pub fn set_flags(&mut self, i: usize, flags: Vec<String>) {
        self.members[i].flags = Some(flags);
    }

    /// Member `i`'s log (stderr, appended to across restarts), as it is now.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.members[i].dir.with_extension("log")).unwrap_or_default()
    }

    /// Whether member `i`'s process has exited (it was started and ended by itself);
    /// its exit status then.
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let status = self.members[i].child.as_mut()?.try_wait().unwrap()?;
        self.members[i].child = None;
        Some(status)
    }

    /// Waits (up to 30 s) for member `i`'s process to exit by itself; its exit status.
    #[allow(dead_code)] // Not every test binary has a member that exits by itself.
    pub async fn wait_exit(&mut self, i: usize) -> std::process::ExitStatus {
        let (timeout, every) = (Duration::from_secs(30), Duration::from_millis(50));
        wait_for("the member exits by itself", timeout, every, || {
            std::future::ready(self.exited(i))
        })
        .await
    }

    /// `kill -9`: no chance to flush or sync anything. A no-op if it is not running.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then waits (up to 30 s) for the process to exit: a clean stop, as an
    /// operator's `kill` or a service manager's. A no-op if it is not running.
    pub fn terminate(&mut self, i: usize) {
        let Some(mut c) = self.members[i].child.take() else { return };
        let pid = c.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "member {i} did not exit within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGSTOP: member `i` stays up (its ports accept connections) but does nothing
    /// until [`TestCluster::resume`].
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// SIGCONT: member `i` goes on after [`TestCluster::pause`].
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.pid(i).unwrap_or_else(|| panic!("member {i} is not running")).to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    }

    /// Kills every member (`kill -9`); the data dirs and logs stay until the drop.
    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Whether member `i`'s process was started and not killed.
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// Member `i`'s process id, if it is running (for reading its /proc entries).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// The TLS that [`TestCluster::channel`], [`TestCluster::client`] and the waits use
    /// to reach `https://` members.
    pub fn set_client_tls(&mut self, tls: tls::ClientTls) {
        self.client_tls = Some(tls);
    }

    /// The members, in order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// How many snapshot files member `i`'s data dir holds: a member that joined has at
    /// least one once its first state arrived (it came by snapshot), before it wrote any
    /// of its own (every 100,000 entries by default).
    pub fn snapshot_files(&self, i: usize) -> usize {
        let dir = self.members[i].dir.join("member");
        let files =
            std::fs::read_dir(&dir).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
        files.iter().filter(|f| f.file_name().to_string_lossy().ends_with(".snap")).count()
    }

    /// The directory holding every member's data dir and log.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `--initial-cluster` flag's value: every member's name and peer URL.
    pub fn initial_cluster(&self) -> &str {
        &self.initial_cluster
    }

    /// Member `i`'s peer URL.
    pub fn peer_url(&self, i: usize) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.members[i].peer_port)
    }

    /// Member `i`'s client address without a scheme (`127.0.0.1:PORT`), as etcdctl takes it.
    pub fn address(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        format!("{}://{}", self.scheme, self.address(i))
    }

    /// `GET path` on member `i`'s metrics listener (`/health`, `/metrics`): the status
    /// line's code and the body, or `None` if it does not answer.
    pub fn http_get(&self, i: usize, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let addr = ("127.0.0.1", self.members[i].metrics_port);
        let mut sock = std::net::TcpStream::connect(addr)
            .map_err(|e| eprintln!("GET {path} on member {i}: {e}"))
            .ok()?;
        sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        // One write: the server reads the request with one read and closes, and a close
        // with unread bytes resets the connection, losing the answer.
        let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
        sock.write_all(request.as_bytes()).ok()?;
        let mut raw = Vec::new();
        if let Err(e) = sock.read_to_end(&mut raw) {
            eprintln!("GET {path} on member {i}: {e}");
            if raw.is_empty() {
                return None;
            }
        }
        let text = String::from_utf8_lossy(&raw);
        let Some(code) = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()) else {
            eprintln!("GET {path} on member {i}: not an HTTP answer: {text:?}");
            return None;
        };
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Some((code, body.to_string()))
    }

    /// Every member's client URL, in order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// A gRPC channel to member `i`, connecting at its first call.
    pub fn channel(&self, i: usize) -> tonic::transport::Channel {
        client::channel(&self.endpoint(i), self.client_tls.as_ref()).unwrap()
    }

    /// Waits (up to 30 s in all) until every running member answers a linearizable
    /// read: there is a leader and each member has caught up with it.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in (0..self.members.len()).filter(|&i| self.is_running(i)) {
            let mut kv = pb::kv_client::KvClient::new(self.channel(i));
            let probe = pb::RangeRequest { key: "ready".into(), ..Default::default() };
            while kv.range(probe.clone()).await.is_err() {
                assert!(Instant::now() < deadline, "member {i} not ready within 30 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// A client of every member, writing exactly once (sessions), with a 20 s deadline.
    pub fn client(&self) -> Client {
        self.client_with(ClientOptions {
            deadline: Duration::from_secs(20),
            exactly_once: true,
            ..ClientOptions::default()
        })
    }

    /// A client of every member with `opts`.
    pub fn client_with(&self, opts: ClientOptions) -> Client {
        Client::connect_tls(&self.endpoints(), opts, self.client_tls.as_ref()).unwrap()
    }

    /// The running member that leads by its own status, if one does right now.
    pub async fn leader_now(&self) -> Option<usize> {
        let c = self.client();
        for i in 0..self.members.len() {
            if !self.is_running(i) {
                continue;
            }
            if let Ok(s) = c.status(i).await {
                if s.leader != 0 && s.header.as_ref().is_some_and(|h| h.member_id == s.leader) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Waits (up to 30 s) for a running member that leads; returns its index.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(i) = self.leader_now().await {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader within 30 s");
    }

    /// Waits (up to 30 s in all) until every member applied at least `index`.
    pub async fn wait_applied(&self, index: u64) {
        let c = self.client();
        let deadline = Instant::now() + Duration::from_secs(30);
        'members: for i in 0..self.members.len() {
            while Instant::now() < deadline {
                if c.status(i).await.is_ok_and(|s| s.raft_applied_index >= index) {
                    continue 'members;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("member {i} did not apply index {index} within 30 s");
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        // Keep the data and logs of a failed test for a look.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// The next message on a gRPC stream (`None` once it ended), waited for up to 10 s: a
/// stream that goes quiet fails the test, naming `what`, instead of hanging it.
pub async fn next_message<T>(what: &str, stream: &mut tonic::Streaming<T>) -> Option<T> {
    match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
        Ok(m) => m.unwrap_or_else(|e| panic!("{what}: {e:?}")),
        Err(_) => panic!("{what}: no message within 10 s"),
    }
}

/// Polls `check` every `interval` until it returns `Some`, or panics naming `what`
/// once `timeout` has passed.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(interval).await;
    }
}

/// A writer running against a cluster (the membership and rolling restart tests): it
/// writes `k0`, `k1`... one after the other through one client, until stopped, and
/// records when each write was acknowledged.
pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u64, Instant)>>>,
    failed: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
    started: Instant,
}

impl Load {
    /// Starts writing through `client`; returns once 20 writes are acknowledged. The
    /// write outage is measured from then on.
    pub async fn start(client: Client) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(Load::write(client, stop.clone(), acked.clone(), failed.clone()));
        let mut load = Load { stop, acked, failed, task, started: Instant::now() };
        load.wait_more(20).await;
        load.started = Instant::now();
        load
    }

    async fn write(
        mut client: Client,
        stop: Arc<AtomicBool>,
        acked: Arc<Mutex<Vec<(u64, Instant)>>>,
        failed: Arc<Mutex<Vec<String>>>,
    ) {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("k{n}");
            let sent = Instant::now();
            match client.put(key.as_bytes(), b"v").await {
                Ok(_) => {
                    acked.lock().unwrap().push((n, Instant::now()));
                    n += 1;
                }
                Err(e) => {
                    failed.lock().unwrap().push(format!("k{n} after {:?}: {e}", sent.elapsed()))
                }
            }
        }
    }

    /// The writes that failed so far (the client gave up on them), with why and when.
    pub fn failures(&self) -> Vec<String> {
        self.failed.lock().unwrap().clone()
    }

    /// Waits (up to 30 s) for `n` more acknowledged writes.
    pub async fn wait_more(&self, n: usize) {
        let before = self.acked.lock().unwrap().len();
        let acked = self.acked.clone();
        wait_for("writes", Duration::from_secs(30), Duration::from_millis(10), || {
            let now = acked.lock().unwrap().len();
            async move { (now >= before + n).then_some(()) }
        })
        .await;
    }

    /// Stops the writer; the numbers of the acknowledged writes, and the longest wait
    /// between two acknowledgements since [`Load::start`] returned.
    pub async fn stop(self) -> (Vec<u64>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let acked = self.acked.lock().unwrap().clone();
        let since = acked.iter().map(|(_, t)| *t).filter(|t| *t > self.started);
        let times: Vec<Instant> = std::iter::once(self.started).chain(since).collect();
        let gap = times.windows(2).map(|w| w[1].saturating_duration_since(w[0])).max();
        (acked.iter().map(|(n, _)| *n).collect(), gap.unwrap_or_default())
    }
}

/// Runs the `raftkv` command line; returns whether it succeeded, its stdout and its
/// stderr. It must not panic, whatever the arguments.
pub fn raftkv(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "raftkv {args:?} does not panic: {stderr}");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// The `ETCD_*` lines `etcdctl member add` prints (`ETCD_NAME="m4"`...), as variables.
pub fn member_add_env(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("ETCD_"))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// Whether `program` is installed: `program version_arg` runs and succeeds.
pub fn have(program: &str, version_arg: &str) -> bool {
    Command::new(program).arg(version_arg).output().is_ok_and(|o| o.status.success())
}

/// `etcdctl` with the v3 API (etcd 3.4's default, set for clarity), no arguments yet.
pub fn etcdctl() -> Command {
    let mut c = Command::new("etcdctl");
    c.env("ETCDCTL_API", "3");
    c
}

/// Retries a gRPC call (`retry!(client.put(req))`) while the cluster answers
/// `Unavailable` (an election, or a forward racing a leader change), as etcd's clients
/// do; other answers, errors included, are returned for the test to check. Not after
/// "request timed out": that write may have been applied, and resending it could apply
/// it twice.
#[allow(unused_macros)]
macro_rules! retry {
    ($call:expr) => {{
        let mut tries = 0;
        loop {
            match $call.await {
                Err(s)
                    if s.code() == tonic::Code::Unavailable
                        && s.message() != "etcdserver: request timed out"
                        && tries < 50 =>
                {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => break other,
            }
        }
    }};
}
#[allow(unused_imports)]
pub(crate) use retry;
