//! `etcdctl member list / add / add --learner / promote / update / remove` against
//! raftkv and against a real etcd 3.4, side by side: the same scenario on a 3-member
//! cluster of each (growing to 5 and back), and the transcripts (stdout, the `Error:`
//! line, the exit status) must be equal once member ids, the cluster id and ports are
//! replaced by names. New members start from exactly the lines `member add` prints.
//! A few calls etcdctl refuses before sending are made through gRPC, with their codes.
//! The learner's own endpoint is asked what it serves, before and after its promotion.
//!
//! Needs `etcd` and `etcdctl`; without them the test prints SKIPPED and passes.

mod common;

use common::{ClusterSpec, Server, TestCluster};
use proto::etcdserverpb as pb;
use proto::etcdserverpb::cluster_client::ClusterClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use proto::etcdserverpb::watch_client::WatchClient;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What the scenario learnt about names: member ids (hex), the cluster id and ports.
#[derive(Default)]
struct Names {
    words: BTreeMap<String, String>,
}

impl Names {
    /// Learns member ids from `member list` (a member is named by its peer port, so
    /// one that has not started yet is named too), the cluster id from its `-w fields`
    /// form, and every member's ports.
    fn learn(&mut self, c: &TestCluster) {
        for m in c.members() {
            self.words.insert(format!("127.0.0.1:{}", m.client_port), format!("{}-client", m.name));
            self.words.insert(format!("127.0.0.1:{}", m.peer_port), format!("{}-peer", m.name));
        }
        let (_, fields) = etcdctl(c, &["member", "list", "-w", "fields"]);
        let cluster = fields.lines().find_map(|l| l.strip_prefix("\"ClusterID\" : "));
        if let Some(cluster) = cluster.and_then(|n| n.trim().parse::<u64>().ok()) {
            self.words.insert(format!("{cluster:x}"), "CLUSTER".into());
        }
        let (_, list) = etcdctl(c, &["member", "list"]);
        for line in list.lines() {
            let fields: Vec<&str> = line.split(", ").collect();
            let (Some(id), Some(url)) = (fields.first(), fields.get(3)) else { continue };
            let owner = c.members().iter().find(|m| url.ends_with(&format!(":{}", m.peer_port)));
            if let Some(owner) = owner {
                self.words.insert(id.to_string(), owner.name.clone());
            }
        }
    }

    /// `line` with every known id, cluster id and address replaced by its name, runs of
    /// spaces collapsed (etcdctl pads ids to 16 columns) and comma lists of
    /// `ETCD_INITIAL_CLUSTER` sorted (etcdctl prints them in id order).
    fn mask(&self, line: &str) -> String {
        let mut out = line.to_string();
        for (word, name) in self.words.iter().filter(|(w, _)| w.contains(':')) {
            out = out.replace(word, name);
        }
        let mut masked = String::new();
        let mut run = String::new();
        for ch in out.chars().chain(std::iter::once(' ')) {
            if ch.is_ascii_hexdigit() {
                run.push(ch);
                continue;
            }
            masked.push_str(self.words.get(&run).map_or(&run, |n| n));
            run.clear();
            masked.push(ch);
        }
        masked.pop();
        let mut masked = masked.split_whitespace().collect::<Vec<_>>().join(" ");
        if let Some(list) = masked.strip_prefix("ETCD_INITIAL_CLUSTER=\"") {
            let mut parts: Vec<&str> = list.trim_end_matches('"').split(',').collect();
            parts.sort();
            masked = format!("ETCD_INITIAL_CLUSTER=\"{}\"", parts.join(","));
        }
        masked
    }
}

/// Runs etcdctl on the first three members; exit status and output (stdout, then the
/// `Error:` lines of stderr).
fn etcdctl(c: &TestCluster, args: &[&str]) -> (i32, String) {
    let endpoints = (0..3).map(|i| c.address(i)).collect::<Vec<_>>().join(",");
    let out = common::etcdctl()
        .args(["--endpoints", &endpoints, "--command-timeout=15s"])
        .args(args)
        .output()
        .expect("running etcdctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    for l in stderr.lines().filter(|l| l.starts_with("Error:")) {
        text.push_str(l);
        text.push('\n');
    }
    (out.status.code().unwrap_or(-1), text)
}

/// The transcript being built: masked lines.
struct Transcript<'a> {
    c: &'a TestCluster,
    names: Names,
    lines: Vec<String>,
}

impl Transcript<'_> {
    /// Runs `etcdctl args`; records its masked output (member list lines sorted).
    fn run(&mut self, args: &[&str]) -> (i32, String) {
        // Names first: a member removed by the command is no longer listed after it.
        self.names.learn(self.c);
        let (code, text) = etcdctl(self.c, args);
        self.record(args, code, &text);
        (code, text)
    }

    fn record(&mut self, args: &[&str], code: i32, text: &str) {
        self.names.learn(self.c);
        let mut lines: Vec<String> = text.lines().map(|l| self.names.mask(l)).collect();
        if args == ["member", "list"] {
            lines.sort();
        }
        self.lines.push(format!("$ etcdctl {}", self.names.mask(&args.join(" "))));
        self.lines.extend(lines);
        self.lines.push(format!("exit {code}"));
    }

    /// Runs `etcdctl args` until it does not fail with `retry_on` (at most 30 s), and
    /// records the last try only: etcd refuses membership changes until its members
    /// have been connected for 5 s, and a learner promotion until it caught up.
    fn run_until(&mut self, args: &[&str], retry_on: &str) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        self.names.learn(self.c);
        loop {
            let (code, text) = etcdctl(self.c, args);
            if !text.contains(retry_on) || Instant::now() > deadline {
                self.record(args, code, &text);
                return (code, text);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn note(&mut self, line: String) {
        self.lines.push(line);
    }
}

/// Waits (up to 30 s) until `member list` shows member `i` started (with its name).
fn wait_started(c: &TestCluster, i: usize) {
    let name = &c.members()[i].name;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = etcdctl(c, &["member", "list"]);
        if text.lines().any(|l| l.contains(&format!(", started, {name},"))) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} not started within 30 s: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (up to 30 s) until member `i`'s process exits by itself.
fn wait_exit(c: &mut TestCluster, i: usize) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = c.exited(i) {
            return status;
        }
        assert!(Instant::now() < deadline, "member {i} still runs 30 s after its removal");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Member `i`'s id, from the names learnt.
fn id_of(t: &Transcript<'_>, i: usize) -> String {
    let name = &t.c.members()[i].name;
    t.names.words.iter().find(|(_, n)| *n == name).map(|(id, _)| id.clone()).expect("id known")
}

/// Adds member `name` (`--learner` if asked), recording the answer; returns its index.
fn add(c: &mut TestCluster, name: &str, learner: bool) -> (usize, Vec<String>) {
    let i = c.plan_member(name);
    let peer = format!("--peer-urls={}", c.peer_url(i));
    let mut args = vec!["member", "add", name, &peer];
    if learner {
        args.push("--learner");
    }
    let mut t = Transcript { c, names: Names::default(), lines: Vec::new() };
    let (_, text) = t.run_until(&args, "unhealthy cluster");
    let lines = t.lines;
    c.set_join_env(i, common::member_add_env(&text));
    (i, lines)
}

/// What member `i`'s Status says of it being a learner, once it says `expected` or after
/// 10 s (a promotion reaches the member a moment after `member promote` answers).
async fn says_learner(c: &TestCluster, i: usize, expected: bool) -> bool {
    let mut m = MaintenanceClient::new(c.channel(i));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = m.status(pb::StatusRequest {}).await.map(|r| r.into_inner().is_learner);
        match status {
            Ok(says) if says == expected || Instant::now() > deadline => return says,
            Err(e) if Instant::now() > deadline => panic!("status of member {i}: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What member `i` answers on its own endpoint (`label`: "learner" or "voter"): etcdctl
/// put, linearizable and serializable get, lease grant, member list and endpoint status
/// (its IS LEADER and IS LEARNER columns), and a Watch stream opened through gRPC
/// (etcdctl watch retries a refused stream for ever). etcd 3.4 refuses all but Status
/// and serializable reads on a learner, with `Unavailable "etcdserver: rpc not supported
/// for learner"`, and serves everything once the member is promoted.
async fn answers_of(c: &TestCluster, i: usize, label: &str) -> Vec<String> {
    let endpoint = c.address(i);
    let mut lines = Vec::new();
    let calls: [&[&str]; 7] = [
        &["put", "learner-key", "v"],
        &["get", "learner-key"],
        &["get", "learner-key", "--consistency=s"],
        &["lease", "grant", "60"],
        &["member", "list"],
        &["endpoint", "status"],
        &["endpoint", "status", "-w", "fields"],
    ];
    for args in calls {
        let out = common::etcdctl()
            .args(["--endpoints", &endpoint, "--command-timeout=15s"])
            .args(args)
            .output()
            .expect("running etcdctl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Only what both servers must agree on: ids, sizes and versions differ.
        let shown: Vec<String> = match args[..2] {
            ["lease", "grant"] => {
                stdout.lines().map(|l| l.split(' ').skip(2).collect::<Vec<_>>().join(" ")).collect()
            }
            ["member", "list"] => vec![format!("{} members", stdout.lines().count())],
            ["endpoint", "status"] if args.len() == 2 => stdout
                .lines()
                .map(|l| l.split(", ").skip(4).take(2).collect::<Vec<_>>().join(", "))
                .collect(),
            ["endpoint", "status"] => stdout
                .lines()
                .filter(|l| l.starts_with("\"IsLearner\""))
                .map(String::from)
                .collect(),
            _ => stdout.lines().map(String::from).collect(),
        };
        lines.push(format!("{label} $ etcdctl {}", args.join(" ")));
        lines.extend(shown);
        lines.extend(stderr.lines().filter(|l| l.starts_with("Error:")).map(String::from));
        lines.push(format!("exit {}", out.status.code().unwrap_or(-1)));
    }
    let create = pb::WatchCreateRequest { key: "learner-key".into(), ..Default::default() };
    let union = pb::watch_request::RequestUnion::CreateRequest(create);
    let requests = vec![pb::WatchRequest { request_union: Some(union) }];
    let mut watch = WatchClient::new(c.channel(i));
    let opened = watch.watch(tonic::codegen::tokio_stream::iter(requests)).await;
    lines.push(format!("{label} {}", outcome("watch", opened)));
    lines
}

/// A gRPC call's outcome, as a line.
fn outcome<T>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) -> String {
    match r {
        Ok(_) => format!("{what}: ok"),
        Err(s) => format!("{what}: {:?} {}", s.code(), s.message()),
    }
}

/// The scenario on one cluster; its transcript.
async fn transcript(spec: ClusterSpec) -> Vec<String> {
    let server = spec.server;
    let mut c = TestCluster::start_spec(spec);
    c.wait_ready().await;
    let mut lines = Vec::new();
    let mut t = Transcript { c: &c, names: Names::default(), lines: Vec::new() };
    t.run(&["member", "list"]);
    lines.append(&mut t.lines);

    // A voter: added, unstarted, started from the printed lines.
    let (m4, mut added) = add(&mut c, "m4", false);
    lines.append(&mut added);
    let mut t = Transcript { c: &c, names: Names::default(), lines: Vec::new() };
    t.run(&["member", "list"]);
    lines.append(&mut t.lines);
    c.spawn(m4);
    wait_started(&c, m4);

    // A learner, and what cannot be done with it yet.
    let (m5, mut added) = add(&mut c, "m5", true);
    lines.append(&mut added);
    let mut t = Transcript { c: &c, names: Names::default(), lines: Vec::new() };
    t.run(&["member", "list"]);
    t.run(&["member", "add", "m6", "--peer-urls=http://127.0.0.1:9", "--learner"]);
    t.names.learn(&c);
    let (id1, id4, id5) = (id_of(&t, 0), id_of(&t, m4), id_of(&t, m5));
    t.run(&["member", "promote", &id5]);
    t.run(&["member", "promote", &id1]);
    t.run(&["member", "promote", "ffff"]);
    t.run(&["member", "update", "ffff", "--peer-urls=http://127.0.0.1:9"]);
    t.run(&["member", "update", &id4, &format!("--peer-urls={}", c.peer_url(0))]);
    t.run(&["member", "update", &id4, &format!("--peer-urls={}", c.peer_url(m4))]);
    lines.append(&mut t.lines);

    // The learner starts, catches up and is promoted; its own Status says which it is
    // (`endpoint status`'s IS LEARNER).
    c.spawn(m5);
    wait_started(&c, m5);
    lines.push(format!("m5 status says learner: {}", says_learner(&c, m5, true).await));
    lines.append(&mut answers_of(&c, m5, "learner").await);
    let mut t = Transcript { c: &c, names: Names::default(), lines: Vec::new() };
    t.run_until(&["member", "promote", &id5], "in sync with leader");
    t.note(format!("m5 status says learner: {}", says_learner(&c, m5, false).await));
    // Promoted: served at once (the status above said voter).
    t.lines.append(&mut answers_of(&c, m5, "voter").await);
    t.run(&["member", "list"]);
    t.run(&["member", "remove", "ffff"]);
    t.run_until(&["member", "remove", &id5], "unhealthy cluster");
    lines.append(&mut t.lines);
    let status = wait_exit(&mut c, m5);
    lines.push("m5 exited".into());
    let mut t = Transcript { c: &c, names: Names::default(), lines: Vec::new() };
    t.run_until(&["member", "remove", &id4], "unhealthy cluster");
    lines.append(&mut t.lines);
    wait_exit(&mut c, m4);
    lines.push("m4 exited".into());

    // What etcdctl refuses before sending, through gRPC.
    let mut t = Transcript { c: &c, names: Names::default(), lines: Vec::new() };
    t.run(&["member", "list"]);
    let mut cluster = ClusterClient::new(c.channel(1));
    let bad = pb::MemberAddRequest { peer_ur_ls: vec!["foo".into()], is_learner: false };
    t.note(outcome("add foo", cluster.member_add(bad).await));
    let none = pb::MemberAddRequest { peer_ur_ls: vec![], is_learner: false };
    t.note(outcome("add no URL", cluster.member_add(none).await));
    lines.append(&mut t.lines);
    if server == Server::Raftkv {
        // etcd exits 0 once removed; raftkv exits non-zero and says why (README).
        assert!(!status.success(), "a removed raftkv member exits non-zero: {status}");
        let log = std::fs::read_to_string(c.members()[m5].dir.with_extension("log")).unwrap();
        assert!(log.contains("the member has been permanently removed from the cluster"), "{log}");
    }
    lines
}

#[test]
fn member_commands_match_etcd() {
    if !common::have("etcd", "--version") || !common::have("etcdctl", "version") {
        println!("SKIPPED: etcd and etcdctl are not installed");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let etcd = rt.block_on(transcript(ClusterSpec::etcd("member-etcd", &[])));
    let raftkv = rt.block_on(transcript(ClusterSpec::raftkv("member-raftkv", &[])));
    for i in 0..etcd.len().max(raftkv.len()) {
        let e = etcd.get(i).map_or("", String::as_str);
        let r = raftkv.get(i).map_or("", String::as_str);
        println!("{}{e:<70} | {r}", if e == r { "  " } else { "! " });
    }
    assert_eq!(etcd, raftkv, "the transcripts differ (etcd left, raftkv right)");
    assert!(
        raftkv.iter().any(|l| l.starts_with("Member m5 promoted in cluster CLUSTER")),
        "{raftkv:?}"
    );
}
