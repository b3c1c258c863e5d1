//! The etcd compatibility suite: one script of `etcdctl` 3.4 commands runs against a
//! 3-member raftkv cluster and against a real 3-member etcd 3.4 cluster, and the two
//! transcripts (stdout, error lines and exit status of every command) must agree line
//! by line after normalising only what must differ: cluster and member ids, ports,
//! lease ids (etcd's are random), timings, raft term and index, version strings, DB
//! sizes and hash values.
//!
//! Every other difference fails the test: there are no documented exceptions left
//! (README, "etcd compatibility"). The lock and election gRPC services, which `etcdctl` does not use (its
//! `lock` and `elect` run etcd's client-side recipe over KV, Lease and Watch), are
//! compared the same way through gRPC calls at the end, and so are etcd's errors
//! (gRPC code and message of requests too large, txns with too many operations or a
//! duplicate key, empty keys, compacted and future revisions, unknown leases, too
//! large TTLs: `etcd_errors/mod.rs`).
//!
//! Needs `etcd` and `etcdctl` (Debian: `etcd-server`, `etcd-client`); without them the
//! test prints SKIPPED and passes.
//!
//! `cargo test --release -p raftkv --test etcd_compat -- --nocapture` shows both
//! transcripts side by side where they differ.

mod common;
mod etcd_auth;
mod etcd_errors;

use common::{ClusterSpec, TestCluster};
use proto::etcdserverpb as pb;
use proto::{v3electionpb as epb, v3lockpb as lpb};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One step of the script. In arguments, `{e1}` `{e2}` `{e3}` `{all}` stand for
/// endpoints (`host:port`), `{url1}` `{url2}` `{url3}` `{urls}` for the same as URLs, `{lease1}`, `{lease2}`... for the leases granted so far (in hex), and
/// `{next-rev}` for the revision the next write will have.
#[derive(Clone, Copy)]
enum Step {
    /// Run `etcdctl ARGS` against member 1 (unless ARGS name `--endpoints`).
    Run(&'static str),
    /// The same, with this standard input.
    Stdin(&'static str, &'static str),
    /// Start `etcdctl ARGS` in the background under a name.
    Spawn(&'static str, &'static str),
    /// Interrupt (SIGINT) a background command unless it ended, and record its output.
    Stop(&'static str),
    /// Wait until this is seen (not part of the transcript).
    Until(Sign),
    /// `put PREFIX0`, `put PREFIX1`... with a [`FILL_VALUE_BYTES`] value on standard
    /// input until one is refused; the transcript shows the refusal, not how many were
    /// accepted (etcd counts its bolt file, raftkv its state: they trip at different
    /// keys, see the README).
    Fill(&'static str),
    /// Run `etcdctl ARGS`; the transcript shows only the exit status (for commands
    /// whose output counts what [`Fill`] wrote).
    Quiet(&'static str),
    /// Run `etcdctl ARGS`; the transcript shows the output with every number masked
    /// (revisions after a [`Fill`] differ).
    Masked(&'static str),
}
use Step::*;

/// The value [`Fill`] writes: 500 kB, a third of etcd's request limit.
const FILL_VALUE_BYTES: usize = 500_000;
/// Most writes a [`Fill`] tries before it gives up on a refusal.
const FILL_WRITES_MAX: usize = 200;
/// The space quota of the clusters [`QUOTA_SCRIPT`] runs on (16 MiB).
const QUOTA_BYTES: &str = "--quota-backend-bytes=16777216";

/// etcd's space quota procedure: write until NOSPACE, what is refused and what works
/// while the alarm is raised, then the recovery etcd documents (delete, compact,
/// defragment every member, disarm). `{rev}` is the current revision.
const QUOTA_SCRIPT: &[Step] = &[
    Fill("fill"),
    Run("alarm list"),
    Run("endpoint status"),
    Run("endpoint health"),
    Run("put k1 v1"),
    Run("lease grant 60"),
    Stdin("txn", "\n\nput t1 x\n\n"),
    Stdin("txn", "\n\nget nope\ndel nope\n\n"),
    Run("get fill0 --keys-only"),
    Run("del fill0"),
    Quiet("del fill --prefix"),
    Masked("compaction {rev}"),
    // Every member: etcd's members each measure their own file, which only shrinks at
    // defragmentation; one left out raises NOSPACE for itself at the next write.
    Run("defrag --endpoints={all}"),
    Run("put k1 v1"),
    Run("alarm list"),
    Run("alarm disarm"),
    Run("alarm list"),
    Run("alarm disarm"),
    Run("put k1 v1"),
    Run("get k1"),
    Run("endpoint status"),
    Run("lease grant 60"),
];

/// What an [`Until`] step waits for, up to [`UNTIL_TIMEOUT`]. The reference (etcd) must
/// show each; on raftkv a sign not seen is left to show as a transcript difference.
#[derive(Clone, Copy, Debug)]
enum Sign {
    /// The background command printed at least this many lines, or ended.
    Lines(&'static str, usize),
    /// The background command printed this line, or ended.
    Line(&'static str, &'static str),
    /// The background command ended by itself.
    Ended(&'static str),
    /// At least this many keys exist under this prefix (lock and election waiters
    /// queue by creating a key).
    Keys(&'static str, usize),
}
use Sign::*;

/// How long an [`Until`] step waits.
const UNTIL_TIMEOUT: Duration = Duration::from_secs(10);

const TXN_SUCCESS: &str =
    "value(\"t1\") = \"a\"\nmod(\"t1\") > \"0\"\n\nput t2 yes\nget t1\n\nput t2 no\n\n";
const TXN_FAILURE: &str =
    "version(\"t1\") = \"5\"\ncreate(\"t1\") = \"0\"\n\nput t2 yes\n\nput t2 no\ndel t1\nget t2\n\n";
const TXN_FIELDS: &str = "value(\"t2\") = \"no\"\n\nget t --prefix\n\n\n";
const TXN_NOT_EQUAL: &str = "value(\"t2\") != \"no\"\n\n\nput x y\n\n";
const TXN_BAD: &str = "bogus\n\n\n\n";

const SCRIPT: &[Step] = &[
    // put
    Run("put k1 v1"),
    Run("put k2 v2 --prev-kv"),
    Run("put k1 v1b --prev-kv"),
    Run("put k1 --ignore-value"),
    Run("put k1 x --ignore-value"),
    Run("put k3 v3 --lease=1234"),
    Run("lease grant 60"),
    Run("put k3 v3 --lease={lease1}"),
    Run("put k3 v3b --ignore-lease"),
    Run("put k3 v3c --prev-kv -w json"),
    // get
    Run("get k1"),
    Run("get k --prefix"),
    Run("get k1 --from-key"),
    Run("get k --prefix --limit 1"),
    Run("get k --prefix --limit 1 -w json"),
    Run("get k1 --rev 2"),
    Run("get k1 --rev 100"),
    Run("get k --prefix --sort-by=MODIFY --order=DESCEND"),
    Run("get k --prefix --sort-by=VERSION --order=ASCEND"),
    Run("get k --prefix --sort-by=CREATE --order=DESCEND --keys-only"),
    Run("get k --prefix --sort-by=VALUE"),
    Run("get k --prefix --keys-only"),
    Run("get k --prefix --print-value-only"),
    Run("get k1 --consistency=s"),
    Run("get k k3"),
    Run("get k1 -w json"),
    Run("get k3 -w json"),
    Run("get k --prefix -w fields"),
    Run("get k --prefix -w table"),
    Run("get nope"),
    Run("get nope -w json"),
    // leases
    Run("lease timetolive {lease1} --keys"),
    Run("lease keep-alive --once {lease1}"),
    Run("lease grant 1"),
    Run("lease list"),
    Run("lease revoke {lease1}"),
    Run("get k3"),
    Run("lease revoke 123"),
    Run("lease timetolive 123"),
    Run("lease keep-alive --once 123"),
    Run("lease grant 9000000001"),
    // del
    Run("del nope"),
    Run("del k2 --prev-kv"),
    Run("del k --prefix"),
    Run("put a 1"),
    Run("put b 2"),
    Run("del a --from-key --prev-kv -w json"),
    Run("del"),
    // txn
    Run("put t1 a"),
    Stdin("txn -i", TXN_SUCCESS),
    Stdin("txn -w json", TXN_FAILURE),
    Stdin("txn -w fields", TXN_FIELDS),
    Stdin("txn", TXN_NOT_EQUAL),
    Stdin("txn", TXN_BAD),
    // watch: history, then live events. The live watches start at the next revision,
    // so the events they print do not depend on when etcdctl gets its watch created;
    // once the first event is printed, the watches are caught up and the rest come live.
    Spawn("replay", "watch t --prefix --rev 1 --prev-kv"),
    Until(Lines("replay", 16)),
    Stop("replay"),
    Spawn("live", "watch w --prefix --prev-kv --rev {next-rev}"),
    Spawn("live-key", "watch w1 -w json --rev {next-rev}"),
    Run("put w1 a"),
    Until(Lines("live", 3)),
    Until(Lines("live-key", 1)),
    Run("put w2 b"),
    Run("put w1 c"),
    Run("del w --prefix"),
    Until(Lines("live", 21)),
    Until(Lines("live-key", 3)),
    Stop("live"),
    Stop("live-key"),
    // compaction
    Run("compaction 20"),
    Run("get t2 --rev 19"),
    Run("get t2 --rev 20"),
    Run("compaction 19"),
    Run("compaction 1000"),
    Run("compaction --physical 21"),
    Spawn("compacted", "watch t2 --rev 19"),
    Until(Ended("compacted")),
    Stop("compacted"),
    // A later write shows that whatever the watch at the compact revision replays (or
    // that it was refused) has been printed.
    Spawn("at-compact", "watch w1 --rev 21"),
    Run("put w1 probe"),
    Until(Line("at-compact", "probe")),
    Stop("at-compact"),
    // cluster and maintenance
    Run("member list"),
    Run("endpoint status --endpoints={all}"),
    Run("endpoint status --endpoints={all} -w json"),
    Run("endpoint health --endpoints={e1}"),
    Run("endpoint health --endpoints={e1} -w json"),
    Run("endpoint hashkv --endpoints={all}"),
    Run("endpoint hashkv --endpoints={e2} -w json"),
    Run("alarm list"),
    Run("defrag"),
    Run("snapshot save {dir}/snapshot.db"),
    Run("member list -w json"),
    // Every Maintenance command with endpoints written as URLs, as operators do:
    // etcdctl then sends the URL as the HTTP/2 :authority of each per-endpoint call.
    Run("endpoint status --endpoints={urls}"),
    Run("endpoint status --endpoints={urls} -w json"),
    Run("endpoint health --endpoints={urls}"),
    Run("endpoint hashkv --endpoints={urls}"),
    Run("defrag --endpoints={urls}"),
    Run("alarm list --endpoints={urls}"),
    Run("member list --endpoints={url2}"),
    Run("snapshot save {dir}/snapshot-url.db --endpoints={url3}"),
    // lock: uncontended, then contended
    Run("lock L echo locked"),
    Spawn("holder", "lock L"),
    Until(Lines("holder", 1)),
    Spawn("waiter", "lock L echo second"),
    Until(Keys("L/", 2)),
    Stop("holder"),
    Until(Ended("waiter")),
    Stop("waiter"),
    Run("get L --prefix"),
    // elect: a leader, an observer, a second candidate taking over
    Spawn("first", "elect E p1"),
    Until(Lines("first", 2)),
    Spawn("observer", "elect -l E"),
    Until(Lines("observer", 2)),
    Spawn("second", "elect E p2"),
    Until(Keys("E/", 2)),
    Stop("first"),
    Until(Lines("second", 2)),
    Until(Lines("observer", 4)),
    Stop("second"),
    Stop("observer"),
];

/// A running 3-member cluster of either kind (members `e1`..`e3`, default settings).
struct Cluster {
    kind: &'static str,
    members: TestCluster,
}

impl Cluster {
    /// Starts the cluster and waits (on `rt`) until every member answers a
    /// linearizable read.
    fn start(kind: &'static str, rt: &tokio::runtime::Runtime) -> Cluster {
        Cluster::start_with(kind, rt, "compat", &[])
    }

    /// The same, with these flags on every member (root dirs named by `tag`).
    fn start_with(
        kind: &'static str,
        rt: &tokio::runtime::Runtime,
        tag: &str,
        flags: &[&str],
    ) -> Cluster {
        Cluster::start_tls(kind, rt, tag, flags, None)
    }

    /// The same; with `tls`, every URL is `https://` (give the TLS flags in `flags`)
    /// and the waits reach the members with `tls`.
    fn start_tls(
        kind: &'static str,
        rt: &tokio::runtime::Runtime,
        tag: &str,
        flags: &[&str],
        tls: Option<tls::ClientTls>,
    ) -> Cluster {
        let tag = format!("{tag}-{kind}");
        let mut spec = match kind {
            "etcd" => {
                let mut all = vec!["--log-level", "error"];
                all.extend_from_slice(flags);
                ClusterSpec::etcd(&tag, &all)
            }
            _ => ClusterSpec::raftkv(&tag, flags),
        };
        if tls.is_some() {
            spec = spec.https();
        }
        let mut members = TestCluster::start_spec(spec.named("e"));
        if let Some(tls) = tls {
            members.set_client_tls(tls);
        }
        let c = Cluster { kind, members };
        rt.block_on(c.members.wait_ready());
        c
    }

    /// The directory holding the members' data and logs (and the script's files).
    fn dir(&self) -> &Path {
        self.members.root()
    }

    fn endpoint(&self, i: usize) -> String {
        self.members.address(i)
    }

    fn all_endpoints(&self) -> String {
        (0..3).map(|i| self.endpoint(i)).collect::<Vec<_>>().join(",")
    }

    /// Member ids by name, and the cluster id, from the members themselves.
    fn ids(&self) -> (BTreeMap<u64, String>, u64) {
        let out =
            etcdctl(&["--endpoints", &self.endpoint(0), "member", "list", "-w", "json"], None);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let cluster = number_after(&text, "\"cluster_id\":").expect("cluster id");
        let mut members = BTreeMap::new();
        for part in text.split("{\"ID\":").skip(1) {
            let id: u64 = part[..part.find(',').unwrap()].parse().unwrap();
            let name = part.split("\"name\":\"").nth(1).unwrap();
            members.insert(id, name[..name.find('"').unwrap()].to_string());
        }
        assert_eq!(members.len(), 3, "{}: member list {text}", self.kind);
        (members, cluster)
    }
}

fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// TLS for every etcdctl the scripts run, while a test over TLS runs (under
/// [`ONE_AT_A_TIME`]): etcdctl's `--cacert --cert --key`, before the step's own
/// arguments (a step's `--cert` then wins), and the directory `{certs}` stands for.
static ETCDCTL_TLS: Mutex<Option<EtcdctlTls>> = Mutex::new(None);

/// See [`ETCDCTL_TLS`].
struct EtcdctlTls {
    args: Vec<String>,
    certs_dir: String,
}

fn etcdctl_command(args: &[&str]) -> Command {
    let mut c = common::etcdctl();
    c.args(["--dial-timeout=3s", "--command-timeout=5s"]);
    if let Some(tls) = ETCDCTL_TLS.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        c.args(&tls.args);
    }
    c.args(args);
    c
}

/// `{certs}` in a step: the directory of the TLS test's certificates.
fn certs_dir() -> String {
    let tls = ETCDCTL_TLS.lock().unwrap_or_else(|e| e.into_inner());
    tls.as_ref().map_or(String::new(), |t| t.certs_dir.clone())
}

fn etcdctl(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut c = etcdctl_command(args);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("running etcdctl");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// One command's record: the command, its stdout, its error lines (etcdctl's JSON
/// log lines about retries are dropped), and how it ended.
fn record(command: &str, out: &std::process::Output) -> Vec<String> {
    let mut lines = vec![format!("$ {command}")];
    lines.extend(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors = stderr.lines().filter(|l| !l.starts_with("{\"level\""));
    lines.extend(errors.map(|l| format!("! {l}")));
    lines.push(match out.status.code() {
        Some(c) => format!("[exit {c}]"),
        None => "[killed by a signal]".to_string(),
    });
    lines
}

/// One step's transcript lines.
type Transcript = Vec<(usize, Vec<String>)>;

/// A command started by [`Spawn`], with what it printed so far.
struct Background {
    shown: String,
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Background {
    fn start(shown: String, argv: &[&str]) -> Background {
        let mut child = etcdctl_command(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting etcdctl");
        let (stdout, stderr) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Background { shown, child, stdout, stderr, readers }
    }

    /// The complete lines printed on stdout so far.
    fn lines(&self) -> Vec<String> {
        let out = self.stdout.lock().unwrap();
        let text = String::from_utf8_lossy(&out);
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete.split('\n').filter(|_| !complete.is_empty()).map(str::to_string).collect()
    }

    fn ended(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Interrupts it (SIGINT) unless it ended; kills it if it does not end within 10 s.
    fn stop(mut self) -> std::process::Output {
        if !self.ended() {
            let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ended() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let status = self.child.wait().unwrap();
        for r in self.readers {
            r.join().unwrap();
        }
        let take = |b: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().unwrap());
        std::process::Output { status, stdout: take(&self.stdout), stderr: take(&self.stderr) }
    }
}

/// Copies `from` into `into` until it closes.
fn collect(
    mut from: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

/// The revision the cluster's next write will have (read by a `get` not recorded).
fn next_revision(cluster: &Cluster) -> u64 {
    let out = etcdctl(&["--endpoints", &cluster.endpoint(0), "get", "x", "-w", "json"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    number_after(&text, "\"revision\":").expect("a revision in the header") + 1
}

/// Whether `sign` shows now.
fn shows(sign: Sign, cluster: &Cluster, background: &mut BTreeMap<&str, Background>) -> bool {
    match sign {
        Lines(name, _) | Line(name, _) | Ended(name) => {
            let command = background.get_mut(name).expect("a started command");
            let lines = command.lines();
            let printed = match sign {
                Lines(_, n) => lines.len() >= n,
                Line(_, line) => lines.iter().any(|l| l == line),
                _ => false,
            };
            printed || command.ended()
        }
        Keys(prefix, n) => {
            let ep = cluster.endpoint(0);
            let out =
                etcdctl(&["--endpoints", &ep, "get", prefix, "--prefix", "--keys-only"], None);
            String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).count() >= n
        }
    }
}

/// Runs the script against one cluster; returns the transcript and the [`Until`] signs
/// that did not show within [`UNTIL_TIMEOUT`].
fn run_script(cluster: &Cluster, script: &[Step]) -> (Transcript, Vec<String>) {
    let mut leases: Vec<String> = Vec::new();
    let mut background: BTreeMap<&str, Background> = BTreeMap::new();
    let mut transcript = Vec::new();
    let mut unseen = Vec::new();
    for (n, step) in script.iter().enumerate() {
        let expand = |args: &str, leases: &[String]| -> (String, Vec<String>) {
            let mut a = args.replace("{dir}", &cluster.dir().display().to_string());
            a = a.replace("{certs}", &certs_dir());
            a = a.replace("{all}", &cluster.all_endpoints());
            let urls: Vec<String> =
                (0..3).map(|i| format!("http://{}", cluster.endpoint(i))).collect();
            a = a.replace("{urls}", &urls.join(","));
            for (i, url) in urls.iter().enumerate() {
                a = a.replace(&format!("{{e{}}}", i + 1), &cluster.endpoint(i));
                a = a.replace(&format!("{{url{}}}", i + 1), url);
            }
            for (i, l) in leases.iter().enumerate() {
                a = a.replace(&format!("{{lease{}}}", i + 1), l);
            }
            if a.contains("{next-rev}") {
                a = a.replace("{next-rev}", &next_revision(cluster).to_string());
            }
            if a.contains("{rev}") {
                a = a.replace("{rev}", &(next_revision(cluster) - 1).to_string());
            }
            let mut argv: Vec<String> = a.split_whitespace().map(str::to_string).collect();
            if !a.contains("--endpoints") {
                argv.insert(0, format!("--endpoints={}", cluster.endpoint(0)));
            }
            (args.to_string(), argv)
        };
        let lines = match *step {
            Run(args) | Stdin(args, _) => {
                let stdin = if let Stdin(_, s) = step { Some(*s) } else { None };
                let (shown, argv) = expand(args, &leases);
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                record(&shown, &etcdctl(&argv, stdin))
            }
            Fill(prefix) => fill(cluster, prefix),
            Quiet(args) | Masked(args) => {
                let (shown, argv) = expand(args, &leases);
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                let lines = record(&shown, &etcdctl(&argv, None));
                if let Quiet(_) = step {
                    let last = lines.len() - 1;
                    vec![format!("{}   (output not compared)", lines[0]), lines[last].clone()]
                } else {
                    lines.iter().map(|l| mask_numbers(l)).collect()
                }
            }
            Spawn(name, args) => {
                let (shown, argv) = expand(args, &leases);
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                background.insert(name, Background::start(shown.clone(), &argv));
                vec![format!("$ {shown} &   ({name})")]
            }
            Stop(name) => {
                let command = background.remove(name).expect("a started command");
                let shown = command.shown.clone();
                let mut r = record(&format!("({name}) {shown}"), &command.stop());
                r[0] = format!("$ stop {}", &r[0][2..]);
                r
            }
            Until(sign) => {
                let deadline = Instant::now() + UNTIL_TIMEOUT;
                while !shows(sign, cluster, &mut background) {
                    if Instant::now() >= deadline {
                        unseen.push(format!("{}: step {n}: {sign:?} not seen", cluster.kind));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                continue;
            }
        };
        for l in &lines {
            if let Some(rest) = l.strip_prefix("lease ") {
                if let Some(id) = rest.split(' ').next().filter(|_| rest.contains(" granted with"))
                {
                    leases.push(id.to_string());
                }
            }
        }
        transcript.push((n, lines));
    }
    for (_, command) in background {
        command.stop();
    }
    (transcript, unseen)
}

/// [`Fill`]: writes until the first refusal; its record, without the count.
fn fill(cluster: &Cluster, prefix: &str) -> Vec<String> {
    let value = "x".repeat(FILL_VALUE_BYTES);
    let ep = format!("--endpoints={}", cluster.endpoint(0));
    let mut lines = vec![format!(
        "$ put {prefix}N <{FILL_VALUE_BYTES} bytes on stdin>, N = 0, 1... until refused"
    )];
    for n in 0..FILL_WRITES_MAX {
        let out = etcdctl(&[&ep, "put", &format!("{prefix}{n}")], Some(&value));
        if !out.status.success() {
            let refused = record("", &out);
            lines.push(if n == 0 { "(the first write)" } else { "(after some accepted)" }.into());
            lines.extend(refused.into_iter().skip(1));
            return lines;
        }
    }
    lines.push(format!("(never refused in {FILL_WRITES_MAX} writes)"));
    lines
}

/// Every whole number in `line` as `<n>`.
fn mask_numbers(line: &str) -> String {
    let mut out = String::new();
    let mut digits = false;
    for c in line.chars() {
        if c.is_ascii_digit() {
            if !digits {
                out.push_str("<n>");
            }
            digits = true;
        } else {
            digits = false;
            out.push(c);
        }
    }
    out
}

/// What must differ between the two clusters, mapped to the same placeholders.
struct Normaliser {
    /// Whole tokens to replace (ids, ports, leases in hex).
    tokens: BTreeMap<String, String>,
    /// Lease ids in decimal (as JSON prints them) → placeholder.
    lease_decimal: BTreeMap<String, String>,
}

impl Normaliser {
    fn new(cluster: &Cluster) -> Normaliser {
        let (members, cluster_id) = cluster.ids();
        let mut tokens = BTreeMap::new();
        for (id, name) in &members {
            for form in [id.to_string(), format!("{id:x}"), format!("{id:016x}")] {
                tokens.insert(form, format!("<id:{name}>"));
            }
        }
        for form in
            [cluster_id.to_string(), format!("{cluster_id:x}"), format!("{cluster_id:016x}")]
        {
            tokens.insert(form, "<cluster>".to_string());
        }
        for i in 0..3 {
            let m = &cluster.members.members()[i];
            tokens.insert(m.client_port.to_string(), format!("<e{}:client>", i + 1));
            tokens.insert(m.peer_port.to_string(), format!("<e{}:peer>", i + 1));
        }
        tokens.insert(cluster.dir().display().to_string(), "<dir>".to_string());
        Normaliser { tokens, lease_decimal: BTreeMap::new() }
    }

    /// Learns the leases a line names: granted ones, and the lease part of a lock or
    /// election key (`L/<hex>`, `E/<hex>`), numbered in order of appearance.
    fn learn(&mut self, line: &str) {
        let hex = if let Some(rest) = line.strip_prefix("lease ") {
            rest.split(' ').next().filter(|_| rest.contains(" granted with"))
        } else {
            line.strip_prefix("L/").or_else(|| line.strip_prefix("E/"))
        };
        let Some(hex) = hex else { return };
        let Ok(id) = u64::from_str_radix(hex, 16) else { return };
        if self.lease_decimal.contains_key(&id.to_string()) {
            return;
        }
        let name = format!("<lease{}>", self.lease_decimal.len() + 1);
        self.lease_decimal.insert(id.to_string(), name.clone());
        self.tokens.insert(format!("{id:016x}"), name.clone());
        // Unpadded hex only inside a lock or election key, where etcd prints it so.
        for p in ["L/", "E/"] {
            self.tokens.insert(format!("{p}{id:x}"), format!("{p}{name}"));
        }
    }

    fn line(&mut self, line: &str) -> String {
        // Paths under the cluster's directory (`snapshot save`) are one token.
        let dir = self.tokens.iter().find(|(_, v)| *v == "<dir>").map(|(k, _)| k.clone());
        let line = &dir.map_or(line.to_string(), |d| line.replace(&d, "<dir>"));
        self.learn(line);
        let mut out = String::new();
        let mut token = String::new();
        let flush = |token: &mut String, out: &mut String, tokens: &BTreeMap<String, String>| {
            out.push_str(tokens.get(token.as_str()).map_or(token.as_str(), String::as_str));
            token.clear();
        };
        for c in line.chars() {
            if c.is_ascii_alphanumeric() {
                token.push(c);
            } else {
                flush(&mut token, &mut out, &self.tokens);
                out.push(c);
            }
        }
        flush(&mut token, &mut out, &self.tokens);
        // Lock and election keys print as NAME/<hex>: whole-key forms.
        for (from, to) in self.tokens.iter().filter(|(k, _)| k.contains('/')) {
            if out.starts_with(from.as_str()) && out.len() == from.len() {
                out = to.clone();
            }
        }
        for key in ["\"ID\":", "\"id\":", "\"lease\":", "\"Lease\" : ", "\"ID\" : "] {
            let leases = self.lease_decimal.clone();
            out = map_after(&out, key, |v| leases.get(v).cloned().unwrap_or_else(|| v.to_string()));
        }
        mask(out)
    }
}

/// Replaces the value after each `key` (up to `,` `}` `)` `]` or a space) by `f(value)`.
fn map_after(line: &str, key: &str, f: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find(key) {
        out.push_str(&rest[..i + key.len()]);
        rest = &rest[i + key.len()..];
        let end = rest.find([',', '}', ')', ']', ' ']).unwrap_or(rest.len());
        out.push_str(&f(&rest[..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Removes `,KEY VALUE` (a JSON field that is not the first of its object).
fn drop_field(line: &str, key: &str) -> String {
    let mut out = line.to_string();
    while let Some(i) = out.find(&format!(",{key}")) {
        let rest = &out[i + 1 + key.len()..];
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        out.replace_range(i..i + 1 + key.len() + end, "");
    }
    out
}

/// Masks what legitimately differs: timings, raft term and index, version, sizes,
/// hashes, and which member leads.
fn mask(line: String) -> String {
    // DB sizes are not comparable (bolt's file against our state's size estimate): drop
    // them, since JSON leaves a zero out.
    let mut line = drop_field(&line, "\"dbSize\":");
    line = drop_field(&line, "\"dbSizeInUse\":");
    for key in [
        "\"raft_term\":",
        "\"raftTerm\":",
        "\"raftIndex\":",
        "\"raftAppliedIndex\":",
        "\"RaftTerm\" : ",
        "\"version\":\"",
        "\"leader\":",
        "\"took\":",
        "took = ",
        "remaining(",
        "\"hash\":",
        "\"TTL\":",
    ] {
        line = map_after(&line, key, |_| "<masked>".to_string());
    }
    // `endpoint status` (simple): endpoint, id, version, db size, is leader, is learner,
    // raft term, raft index, raft applied index, errors.
    // `endpoint hashkv` (simple): endpoint, hash.
    let fields: Vec<&str> = line.split(", ").collect();
    let endpoint_line = line.strip_prefix("http://").unwrap_or(&line).starts_with("127.0.0.1:");
    if endpoint_line && fields.len() == 10 {
        let mut f: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
        for i in [2, 3, 4, 6, 7, 8] {
            f[i] = "<masked>".to_string();
        }
        line = f.join(", ");
    } else if endpoint_line && fields.len() == 2 {
        line = format!("{}, <hash>", fields[0]);
    }
    line
}

/// Per-step normalisation: member list and lease list come in id order, which
/// differs because the ids do.
/// etcd lists members by id, and ids differ between the clusters: the members of a
/// JSON member list in the order of their normalised text.
fn sort_json_members(line: &str) -> String {
    const START: &str = "\"members\":[{";
    let (Some(start), Some(end)) = (line.find(START), line.rfind("}]")) else {
        return line.to_string();
    };
    let inner = &line[start + START.len()..end];
    let mut members: Vec<&str> = inner.split("},{").collect();
    members.sort();
    format!("{}{}{}", &line[..start + START.len()], members.join("},{"), &line[end..])
}

fn normalise(step: &Step, lines: &[String], n: &mut Normaliser) -> Vec<String> {
    let alarms = matches!(step, Run(a) if a.starts_with("alarm") || *a == "endpoint status");
    let lines = if alarms { one_alarm_per_type(lines) } else { lines.to_vec() };
    let mut out: Vec<String> = lines.iter().map(|l| n.line(l)).collect();
    if alarms {
        out = out.iter().map(|l| alarm_member_blind(l)).collect();
    }
    if matches!(step, Run("member list -w json")) {
        out = out.iter().map(|l| sort_json_members(l)).collect();
    }
    // Orders etcd does not fix: lists, and health answers printed as they arrive.
    let sort = matches!(
        step,
        Run("lease list"
            | "member list"
            | "member list --endpoints={url2}"
            | "endpoint health --endpoints={urls}")
    );
    if sort && out.len() > 2 {
        let last = out.len() - 1;
        out[1..last].sort();
    }
    out
}

/// Which members hold an alarm, made member-blind: etcd raises NOSPACE for each member
/// whose own bolt file crosses the quota (one, two or all three, depending on timing),
/// raftkv for the member that refused the write (every member holds the same estimate;
/// see the README's Alarm row). What is compared is which alarms are raised: of the
/// `memberID:ID alarm:TYPE` items (lines of `alarm list`, or the errors column of
/// `endpoint status`, separated by ", ") only the first of each type is kept.
fn one_alarm_per_type(lines: &[String]) -> Vec<String> {
    let alarm_type = |item: &str| {
        item.strip_prefix("memberID:")
            .and_then(|r| r.split_once(" alarm:"))
            .map(|(_, t)| t.to_string())
    };
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for line in lines {
        let mut kept: Vec<&str> = Vec::new();
        for item in line.split(", ") {
            match alarm_type(item) {
                Some(t) if seen.contains(&t) => {}
                Some(t) => {
                    seen.push(t);
                    kept.push(item);
                }
                None => kept.push(item),
            }
        }
        if !kept.is_empty() {
            out.push(kept.join(", "));
        }
    }
    out
}

/// The member named in an alarm, after [`one_alarm_per_type`] and normalising.
fn alarm_member_blind(line: &str) -> String {
    let mut l = line.to_string();
    for m in 1..=9 {
        l = l.replace(&format!("memberID:<id:e{m}> "), "memberID:<a member> ");
    }
    l
}

/// Compares the transcripts; returns the differences (each one fails the test).
fn compare(etcd: &[(usize, Vec<String>)], raftkv: &[(usize, Vec<String>)]) -> Vec<String> {
    let mut failures = Vec::new();
    for ((_, e), (_, r)) in etcd.iter().zip(raftkv) {
        if e == r {
            println!("  same   {}", r[0]);
            for l in &r[1..] {
                println!("         {l}");
            }
            continue;
        }
        let shown = |lines: &[String]| {
            lines.iter().map(|l| format!("      | {l}")).collect::<Vec<_>>().join("\n")
        };
        let report =
            format!("  DIFFERENT {}\n    etcd:\n{}\n    raftkv:\n{}", r[0], shown(e), shown(r));
        println!("{report}");
        failures.push(report);
    }
    failures
}

/// A transcript with what must differ normalised.
fn normalised(cluster: &Cluster, script: &[Step], t: Transcript) -> Transcript {
    let mut n = Normaliser::new(cluster);
    t.into_iter().map(|(i, lines)| (i, normalise(&script[i], &lines, &mut n))).collect()
}

/// The tests here start two 3-member clusters each: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// etcd's space quota procedure on two clusters started with the same small quota:
/// the same `etcdctl` commands from the first refused write on must print the same.
#[test]
fn the_quota_procedure_matches_etcd() {
    if !common::have("etcdctl", "version") || !common::have("etcd", "--version") {
        println!("\n*** SKIPPED etcd_compat: needs `etcd` and `etcdctl` 3.4 (Debian etcd-server, etcd-client) ***\n");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let etcd = Cluster::start_with("etcd", &rt, "compat-quota", &[QUOTA_BYTES]);
    let raftkv = Cluster::start_with("raftkv", &rt, "compat-quota", &[QUOTA_BYTES]);
    let mut transcripts = Vec::new();
    for cluster in [&etcd, &raftkv] {
        let (t, unseen) = run_script(cluster, QUOTA_SCRIPT);
        assert!(unseen.is_empty(), "{unseen:?}");
        transcripts.push(normalised(cluster, QUOTA_SCRIPT, t));
    }
    let failures = compare(&transcripts[0], &transcripts[1]);
    assert!(
        failures.is_empty(),
        "{} undocumented differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn etcdctl_sees_raftkv_as_it_sees_etcd() {
    if !common::have("etcdctl", "version") || !common::have("etcd", "--version") {
        println!("\n*** SKIPPED etcd_compat: needs `etcd` and `etcdctl` 3.4 (Debian etcd-server, etcd-client) ***\n");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let grpc = tokio::runtime::Runtime::new().unwrap();
    let etcd = Cluster::start("etcd", &grpc);
    let raftkv = Cluster::start("raftkv", &grpc);
    println!("clusters up in {:?}", started.elapsed());

    let mut transcripts = Vec::new();
    let mut unseen = Vec::new();
    for cluster in [&etcd, &raftkv] {
        let (t, not_seen) = run_script(cluster, SCRIPT);
        unseen.extend(not_seen);
        transcripts.push(normalised(cluster, SCRIPT, t));
    }
    println!("scripts ran in {:?}", started.elapsed());
    check_hashes_agree(&raftkv);
    check_hashes_agree(&etcd);

    let within = |what: &str, f| {
        let timed = grpc.block_on(async { tokio::time::timeout(Duration::from_secs(30), f).await });
        timed.unwrap_or_else(|_| panic!("{what} within 30 s"))
    };
    let e = within("lock and election", Box::pin(lock_and_election(&etcd)) as GrpcPart);
    let r = within("lock and election", Box::pin(lock_and_election(&raftkv)));
    let e_errors = within("error cases", Box::pin(etcd_errors::error_cases(&etcd)));
    let r_errors = within("error cases", Box::pin(etcd_errors::error_cases(&raftkv)));
    let mut failures = compare(&transcripts[0], &transcripts[1]);
    failures.extend(compare_grpc(&e, &r));
    failures.extend(compare_grpc(&e_errors, &r_errors));
    let e_headers = within("response headers", Box::pin(response_headers(&etcd)));
    let r_headers = within("response headers", Box::pin(response_headers(&raftkv)));
    failures.extend(compare_grpc(&e_headers, &r_headers));
    let e_local = within("local reads", Box::pin(writes_seen_where_answered(&etcd)));
    let r_local = within("local reads", Box::pin(writes_seen_where_answered(&raftkv)));
    failures.extend(compare_grpc(&e_local, &r_local));
    // Last, as it breaks the clusters: two of three members killed.
    let (mut etcd, mut raftkv) = (etcd, raftkv);
    for i in [1, 2] {
        etcd.members.kill(i);
        raftkv.members.kill(i);
    }
    let (e_lost, r_lost) = grpc.block_on(async {
        let both = async { tokio::join!(quorum_lost(&etcd), quorum_lost(&raftkv)) };
        tokio::time::timeout(Duration::from_secs(40), both).await.expect("quorum lost within 40 s")
    });
    failures.extend(compare_grpc(&e_lost, &r_lost));
    // A sign etcd does not show is a script that waits for the wrong thing.
    failures.extend(unseen.into_iter().map(|u| format!("  WAITED IN VAIN {u}")));
    println!("compared in {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} undocumented differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A gRPC part of the suite: its transcript lines.
type GrpcPart<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Vec<String>> + 'a>>;

/// `endpoint hashkv` gives one hash on every member (values differ from etcd's, by
/// design: only member-vs-member equality means something).
fn check_hashes_agree(cluster: &Cluster) {
    let out = etcdctl(&["--endpoints", &cluster.all_endpoints(), "endpoint", "hashkv"], None);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let hashes: Vec<&str> = text.lines().filter_map(|l| l.split(", ").nth(1)).collect();
    assert_eq!(hashes.len(), 3, "{}: hashkv: {text}", cluster.kind);
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{}: members disagree: {text}", cluster.kind);
}

fn compare_grpc(etcd: &[String], raftkv: &[String]) -> Vec<String> {
    let mut failures = Vec::new();
    for i in 0..etcd.len().max(raftkv.len()) {
        let (e, r) = (etcd.get(i), raftkv.get(i));
        if e == r {
            println!("  same   grpc {}", e.unwrap());
        } else {
            let report = format!("  DIFFERENT grpc\n    etcd:   {e:?}\n    raftkv: {r:?}");
            println!("{report}");
            failures.push(report);
        }
    }
    failures
}

/// The lock and election services through gRPC, as a transcript of lines with the
/// leases named and the ids left out.
async fn lock_and_election(cluster: &Cluster) -> Vec<String> {
    let url = format!("http://{}", cluster.endpoint(1));
    let channel = tonic::transport::Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut lease = pb::lease_client::LeaseClient::new(channel.clone());
    let mut lock = lpb::lock_client::LockClient::new(channel.clone());
    let mut election = epb::election_client::ElectionClient::new(channel.clone());
    let mut kv = pb::kv_client::KvClient::new(channel.clone());
    let mut out = Log(cluster.kind, Vec::new());
    let grant = |ttl| pb::LeaseGrantRequest { ttl, id: 0 };
    let a = lease.lease_grant(grant(60)).await.unwrap().into_inner().id;
    let b = lease.lease_grant(grant(60)).await.unwrap().into_inner().id;
    let names =
        move |s: &str| s.replace(&format!("{a:x}"), "<A>").replace(&format!("{b:x}"), "<B>");
    let key = |k: &[u8]| names(&String::from_utf8_lossy(k));
    let rev = |h: &Option<pb::ResponseHeader>| h.as_ref().map_or(-1, |h| h.revision);
    let status = |s: tonic::Status| format!("error {:?} {}", s.code(), s.message());

    // Lock: free, then contended until the holder unlocks.
    let l1 =
        lock.lock(lpb::LockRequest { name: "gl".into(), lease: a }).await.unwrap().into_inner();
    out.push(format!("lock gl (A): key {} rev {}", key(&l1.key), rev(&l1.header)));
    let mut lock2 = lock.clone();
    let waiter =
        tokio::spawn(
            async move { lock2.lock(lpb::LockRequest { name: "gl".into(), lease: b }).await },
        );
    // It waits once its key is queued behind A's (and a later read has been answered).
    wait_for_keys(&mut kv, "gl/", 2).await;
    out.push(format!("second lock waits: {}", !waiter.is_finished()));
    let u = lock.unlock(lpb::UnlockRequest { key: l1.key.clone() }).await.unwrap().into_inner();
    out.push(format!("unlock: rev {}", rev(&u.header)));
    let l2 = waiter.await.unwrap().unwrap().into_inner();
    out.push(format!("lock gl (B): key {} rev {}", key(&l2.key), rev(&l2.header)));
    let u = lock.unlock(lpb::UnlockRequest { key: l2.key }).await.unwrap().into_inner();
    out.push(format!("unlock: rev {}", rev(&u.header)));
    let bad = lock.lock(lpb::LockRequest { name: "gl".into(), lease: 12345 }).await;
    out.push(format!("lock with an unknown lease: {}", bad.map_or_else(status, |_| "ok".into())));

    // Election: no leader, a leader, proclaim, a second candidate, resign, observe.
    let none = election.leader(epb::LeaderRequest { name: "ge".into() }).await;
    out.push(format!("leader of an empty election: {}", none.map_or_else(status, |_| "ok".into())));
    let c1 = election
        .campaign(epb::CampaignRequest { name: "ge".into(), lease: a, value: "v1".into() })
        .await
        .unwrap()
        .into_inner();
    let leader = c1.leader.clone().unwrap();
    out.push(format!(
        "campaign (A): rev {} leader key {} rev {} lease is A {}",
        rev(&c1.header),
        key(&leader.key),
        leader.rev,
        leader.lease == a
    ));
    let p = election
        .proclaim(epb::ProclaimRequest { leader: Some(leader.clone()), value: "v2".into() })
        .await
        .unwrap()
        .into_inner();
    out.push(format!("proclaim v2: rev {}", rev(&p.header)));
    // Observe from here: the leader now (v2), then its successor. (A server-streaming
    // call answers only with its first message, so it runs on its own task.)
    let mut observer = election.clone();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let observed = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut first_tx = Some(first_tx);
        let stream = observer.observe(epb::LeaderRequest { name: "ge".into() });
        let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), stream).await else {
            return seen;
        };
        let mut stream = stream.into_inner();
        while seen.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
                Ok(Ok(Some(m))) => seen.push(m),
                _ => break,
            }
            if let Some(tx) = first_tx.take() {
                let _ = tx.send(());
            }
        }
        seen
    });
    // The observer is watching once it reported the current leader (or gave up: then
    // the transcript shows what it saw).
    let _ = tokio::time::timeout(Duration::from_secs(10), first_rx).await;
    let mut second = election.clone();
    let candidate = tokio::spawn(async move {
        second
            .campaign(epb::CampaignRequest { name: "ge".into(), lease: b, value: "w".into() })
            .await
    });
    wait_for_keys(&mut kv, "ge/", 2).await;
    out.push(format!("second candidate waits: {}", !candidate.is_finished()));
    let l = election.leader(epb::LeaderRequest { name: "ge".into() }).await.unwrap().into_inner();
    let kv = l.kv.unwrap();
    out.push(format!("leader: {} = {}", key(&kv.key), String::from_utf8_lossy(&kv.value)));
    let r = election
        .resign(epb::ResignRequest { leader: Some(leader.clone()) })
        .await
        .unwrap()
        .into_inner();
    out.push(format!("resign (A): rev {}", rev(&r.header)));
    let c2 = candidate.await.unwrap().unwrap().into_inner();
    let leader2 = c2.leader.unwrap();
    out.push(format!(
        "campaign (B): rev {} leader key {} rev {}",
        rev(&c2.header),
        key(&leader2.key),
        leader2.rev
    ));
    let stale =
        election.proclaim(epb::ProclaimRequest { leader: Some(leader), value: "x".into() }).await;
    out.push(format!("proclaim by the old leader: {}", stale.map_or_else(status, |_| "ok".into())));
    let missing = election.resign(epb::ResignRequest { leader: None }).await;
    out.push(format!(
        "resign without a leader key: {}",
        missing.map_or_else(status, |_| "ok".into())
    ));
    let observed = observed.await.unwrap();
    out.push(format!("observed {} leaders", observed.len()));
    for m in observed {
        let kv = m.kv.unwrap();
        let value = String::from_utf8_lossy(&kv.value).into_owned();
        out.push(format!("observed: rev {} {} = {value}", rev(&m.header), key(&kv.key)));
    }
    out.1
}

/// The one member left of three, once it knows it has no leader: serializable reads
/// still answer from its state; linearizable reads wait for a leader for the request
/// timeout (7 s), then fail with "request timed out"; writes wait as long, then fail.
/// The write's error is compared by code class only: etcd's depends on a race inside
/// it (Unknown "context deadline exceeded" when the proposal waited for a leader,
/// "request timed out" when the member still thought it led); raftkv's is "request
/// timed out" (README, etcd compatibility).
/// Which header fields the Maintenance and Cluster answers set (etcdctl does not show
/// them all, client libraries read them): etcd's Defragment answer has no header, its
/// MemberList header no revision.
async fn response_headers(cluster: &Cluster) -> Vec<String> {
    let mut out = Log(cluster.kind, Vec::new());
    let mut m = pb::maintenance_client::MaintenanceClient::new(cluster.members.channel(0));
    let mut c = pb::cluster_client::ClusterClient::new(cluster.members.channel(0));
    let set = |h: Option<pb::ResponseHeader>| {
        let Some(h) = h else { return "no header".to_string() };
        let fields = [
            ("cluster_id", h.cluster_id != 0),
            ("member_id", h.member_id != 0),
            ("revision", h.revision != 0),
            ("raft_term", h.raft_term != 0),
        ];
        let set: Vec<&str> = fields.iter().filter(|f| f.1).map(|f| f.0).collect();
        format!("header with {}", set.join(" "))
    };
    let h = m.defragment(pb::DefragmentRequest {}).await.unwrap().into_inner().header;
    out.push(format!("Defragment: {}", set(h)));
    let h = c.member_list(pb::MemberListRequest::default()).await.unwrap().into_inner().header;
    out.push(format!("MemberList: {}", set(h)));
    let h = m.status(pb::StatusRequest {}).await.unwrap().into_inner().header;
    out.push(format!("Status: {}", set(h)));
    let h = m.hash_kv(pb::HashKvRequest { revision: 0 }).await.unwrap().into_inner().header;
    out.push(format!("HashKV: {}", set(h)));
    let get = pb::AlarmRequest::default();
    let h = m.alarm(get).await.unwrap().into_inner().header;
    out.push(format!("Alarm (get): {}", set(h)));
    out.1
}

async fn quorum_lost(cluster: &Cluster) -> Vec<String> {
    let mut out = Log(cluster.kind, Vec::new());
    let mut kv = pb::kv_client::KvClient::new(cluster.members.channel(0));
    let mut maintenance =
        pb::maintenance_client::MaintenanceClient::new(cluster.members.channel(0));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = maintenance.status(pb::StatusRequest {}).await;
        if status.is_ok_and(|s| s.into_inner().leader == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "{}: the last member still has a leader", cluster.kind);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out.push("the last member reports no leader".to_string());
    let show = |r: Result<tonic::Response<pb::RangeResponse>, tonic::Status>| match r {
        Ok(r) => format!("ok count {}", r.into_inner().count),
        Err(s) => format!("error {:?} {:?}", s.code(), s.message()),
    };
    let r =
        kv.range(pb::RangeRequest { key: "t1".into(), serializable: true, ..Default::default() });
    out.push(format!("serializable read without a quorum: {}", show(r.await)));
    let put = pb::PutRequest { key: "lost".into(), value: "v".into(), ..Default::default() };
    let started = Instant::now();
    let r = match kv.put(put).await {
        Ok(_) => "ok".to_string(),
        Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) => {
            let waited = started.elapsed() >= Duration::from_secs(5);
            format!("fails (Unavailable or Unknown) after waiting 5 s or more: {waited}")
        }
        Err(s) => format!("error {:?} {:?}", s.code(), s.message()),
    };
    out.push(format!("write without a quorum: {r}"));
    let r = kv.range(pb::RangeRequest { key: "t1".into(), ..Default::default() });
    out.push(format!("linearizable read without a quorum: {}", show(r.await)));
    out.1
}

/// A member answers a write once it applied it itself (etcd waits for its own apply,
/// also when a follower forwards the proposal): a serializable read, or a watch, on
/// that member right after the answer sees the write or the compaction. Each member is
/// asked.
async fn writes_seen_where_answered(cluster: &Cluster) -> Vec<String> {
    let mut out = Log(cluster.kind, Vec::new());
    for i in 0..3 {
        let mut kv = pb::kv_client::KvClient::new(cluster.members.channel(i));
        let mut seen = 0;
        for round in 0..5 {
            let value = format!("{i}.{round}");
            let put = pb::PutRequest {
                key: "local".into(),
                value: value.clone().into(),
                ..Default::default()
            };
            kv.put(put).await.unwrap();
            let get =
                pb::RangeRequest { key: "local".into(), serializable: true, ..Default::default() };
            let r = kv.range(get).await.unwrap().into_inner();
            seen += usize::from(r.kvs.first().is_some_and(|kv| kv.value == value.as_bytes()));
        }
        out.push(format!("member {i}: a serializable read after its own put sees it {seen}/5"));
        let now = kv.range(pb::RangeRequest { key: "local".into(), ..Default::default() });
        let now = now.await.unwrap().into_inner().header.unwrap().revision;
        kv.compact(pb::CompactionRequest { revision: now, physical: false }).await.unwrap();
        let seen = watch_from(cluster.members.channel(i), 1).await;
        let seen: Vec<String> = seen
            .iter()
            .map(|w| {
                let at_compaction = w.compact_revision == now;
                format!(
                    "created {} canceled {} at the compaction {at_compaction}",
                    w.created, w.canceled
                )
            })
            .collect();
        out.push(format!("member {i}: a watch from 1 right after its compaction: {seen:?}"));
    }
    out.1
}

/// The first two answers (within 2 s each) to a watch of `local` from `revision`.
async fn watch_from(channel: tonic::transport::Channel, revision: i64) -> Vec<pb::WatchResponse> {
    let mut watch = pb::watch_client::WatchClient::new(channel);
    let create = pb::WatchCreateRequest {
        key: "local".into(),
        start_revision: revision,
        ..Default::default()
    };
    let request = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request).await.unwrap();
    let rx = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut stream = watch.watch(rx).await.unwrap().into_inner();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
            Ok(Ok(Some(w))) => seen.push(w),
            _ => break,
        }
    }
    seen
}

/// Waits (up to 10 s, polling) until at least `n` keys exist under `prefix`, by
/// linearizable reads: a lock or election waiter queues by creating such a key.
async fn wait_for_keys(
    kv: &mut pb::kv_client::KvClient<tonic::transport::Channel>,
    prefix: &str,
    n: i64,
) {
    let range = pb::RangeRequest {
        key: prefix.as_bytes().to_vec().into(),
        range_end: client::prefix_end(prefix.as_bytes()).into(),
        count_only: true,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while kv.range(range.clone()).await.unwrap().into_inner().count < n {
        assert!(Instant::now() < deadline, "no {n} keys under {prefix} within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Transcript lines, shown as they come (a hang shows where it is).
struct Log(&'static str, Vec<String>);

impl Log {
    fn push(&mut self, line: String) {
        println!("  [{}] {line}", self.0);
        self.1.push(line);
    }
}
