//! Auto-compaction side by side with etcd 3.4 (issue 11): a raftkv cluster and a real
//! etcd cluster start with the same `--auto-compaction-mode` and
//! `--auto-compaction-retention`, take the same writes, and must compact the same
//! revision: `etcdctl get --rev` answers "required revision has been compacted" below
//! it and the value at it, and `endpoint hashkv` reports it as the compact revision.
//!
//! No sleep-and-hope: each side is polled (every 100 ms) until `get --rev` below the
//! expected revision is refused, with a deadline. When it happens is checked too, with
//! the slack written next to each bound (the machine is shared and loaded).
//!
//! * periodic, retention 1 s: once writes stop, the revision of one period ago is the
//!   last write's, so both compact to it, no sooner than about one period after it
//!   (etcd samples the revision every tenth of the period) and within two periods plus
//!   slack. Then, with writes flowing, the compact revision is read after every put:
//!   no reading may show compacted a revision written less than a period before it
//!   (what catches a compactor that compacts the current revision), the compactor
//!   keeps up, and the oldest revision written within the last period is readable.
//! * revision, retention 5: both compact to the last revision − 5 at their first check,
//!   5 minutes after start in etcd 3.4 (fixed, no flag shortens it there), so that
//!   test takes over 5 minutes and is `#[ignore]`d: run it with
//!   `cargo test --release -p raftkv --test etcd_autocompact -- --ignored`.
//!
//! Needs `etcd` and `etcdctl` 3.4; without them the tests print SKIPPED and pass.

mod common;

use common::{ClusterSpec, TestCluster};
use std::time::{Duration, Instant};

/// etcdctl's error for a revision below the compacted one.
const COMPACTED: &str = "required revision has been compacted";

/// One cluster of the pair and what was observed on it.
struct Side {
    kind: &'static str,
    cluster: TestCluster,
    /// When every member answered (the compactor has been running since about then).
    ready: Instant,
    /// The last write's revision and when it was answered.
    last: (i64, Instant),
    /// When the last write was sent.
    last_sent: Instant,
    /// When `get --rev` below the expected compaction was first refused.
    compacted_at: Option<Instant>,
}

impl Side {
    fn start(kind: &'static str, tag: &str, flags: &[&str], rt: &tokio::runtime::Runtime) -> Side {
        let spec = match kind {
            "etcd" => {
                let mut all = vec!["--log-level", "error"];
                all.extend_from_slice(flags);
                ClusterSpec::etcd(&format!("{tag}-etcd"), &all)
            }
            _ => ClusterSpec::raftkv(&format!("{tag}-raftkv"), flags),
        };
        let cluster = TestCluster::start_spec(spec.named("e"));
        rt.block_on(cluster.wait_ready());
        let now = Instant::now();
        Side { kind, cluster, ready: now, last: (0, now), last_sent: now, compacted_at: None }
    }

    fn etcdctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = common::etcdctl()
            .args(["--dial-timeout=3s", "--command-timeout=5s", "--endpoints"])
            .arg(self.cluster.address(0))
            .args(args)
            .output()
            .expect("running etcdctl");
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        // etcdctl's JSON log lines about retries name ports and times: only its
        // `Error:` lines are compared.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Error:")).collect();
        (out.status.success(), text(&out.stdout), errors.join("\n"))
    }

    /// `put` keys `k0`..`k{n-1}` in turn; remembers the last revision and its time.
    fn write(&mut self, n: usize) {
        for i in 0..n {
            self.last_sent = Instant::now();
            let (ok, out, err) = self.etcdctl(&["put", &format!("k{i}"), "v", "-w", "json"]);
            assert!(ok, "{}: put k{i}: {err}", self.kind);
            let revision = number_after(&out, "\"revision\":").expect("a revision");
            self.last = (revision, Instant::now());
        }
    }

    /// Writes `w` for `how_long`, reading the compact revision (`endpoint hashkv`) after
    /// each put. Returns every write (when its put was sent, its revision; the last
    /// write before this one first) and every reading (when its answer came, the
    /// compact revision it reported).
    fn compactions_while_writing(&mut self, how_long: Duration) -> (Vec<Stamped>, Vec<Stamped>) {
        let started = Instant::now();
        let (mut writes, mut readings) = (vec![(self.last_sent, self.last.0)], Vec::new());
        while started.elapsed() < how_long {
            let sent = Instant::now();
            let (ok, out, err) = self.etcdctl(&["put", "w", "v", "-w", "json"]);
            assert!(ok, "{}: put w: {err}", self.kind);
            writes.push((sent, number_after(&out, "\"revision\":").expect("a revision")));
            let (_, out, err) = self.etcdctl(&["endpoint", "hashkv", "-w", "json"]);
            let compact =
                number_after(&out, "\"compact_revision\":").unwrap_or_else(|| panic!("{err}"));
            readings.push((Instant::now(), compact));
        }
        (writes, readings)
    }

    /// Whether `get --rev=below` is refused as compacted (noting when it first is).
    fn compacted_below(&mut self, below: i64) -> bool {
        if self.compacted_at.is_none() {
            let (_, _, err) = self.etcdctl(&["get", "k0", &format!("--rev={below}")]);
            if err.contains(COMPACTED) {
                self.compacted_at = Some(Instant::now());
            }
        }
        self.compacted_at.is_some()
    }

    /// What a client sees around revision `at`: below it refused, at it served, and
    /// the compact revision `endpoint hashkv` reports.
    fn transcript(&self, at: i64) -> Vec<String> {
        let mut lines = Vec::new();
        for rev in [at - 1, at] {
            let (ok, out, err) = self.etcdctl(&["get", "k0", &format!("--rev={rev}")]);
            lines.push(format!("get k0 --rev={rev}: ok {ok}, out {out:?}, error {err:?}"));
        }
        let (_, out, err) = self.etcdctl(&["endpoint", "hashkv", "-w", "json"]);
        let compact = number_after(&out, "\"compact_revision\":");
        lines.push(format!("hashkv compact_revision {compact:?} {err}"));
        lines
    }
}

/// A time and a revision: a write (when it was sent) or a reading of the compact
/// revision (when it was answered).
type Stamped = (Instant, i64);

/// The highest revision among `writes` sent before `at` (0 if none).
fn written_before(writes: &[Stamped], at: Instant) -> i64 {
    writes.iter().filter(|(t, _)| *t < at).map(|&(_, r)| r).max().unwrap_or(0)
}

fn number_after(text: &str, prefix: &str) -> Option<i64> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn have_etcd() -> bool {
    let have = common::have("etcdctl", "version") && common::have("etcd", "--version");
    if !have {
        println!("\n*** SKIPPED etcd_autocompact: needs `etcd` and `etcdctl` 3.4 ***\n");
    }
    have
}

/// Starts both clusters with `flags`, writes `writes` keys on each, then polls both
/// until `get --rev` below `target(last revision)` is refused, up to `deadline` after
/// the writes. Returns both sides for the caller's timing checks, after checking that
/// their transcripts around the compacted revision are the same.
fn side_by_side(
    tag: &str,
    flags: &[&str],
    writes: usize,
    target: impl Fn(i64) -> i64,
    deadline: Duration,
) -> Vec<Side> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut sides: Vec<Side> =
        ["etcd", "raftkv"].into_iter().map(|k| Side::start(k, tag, flags, &rt)).collect();
    for side in &mut sides {
        side.write(writes);
    }
    assert_eq!(sides[0].last.0, sides[1].last.0, "the same writes give the same revisions");
    let at = target(sides[0].last.0);
    let until = Instant::now() + deadline;
    while !sides.iter_mut().all(|s| s.compacted_below(at - 1)) {
        let waiting: Vec<&str> =
            sides.iter().filter(|s| s.compacted_at.is_none()).map(|s| s.kind).collect();
        assert!(Instant::now() < until, "{waiting:?}: revision {} not compacted in time", at - 1);
        std::thread::sleep(Duration::from_millis(100));
    }
    let (etcd, raftkv) = (sides[0].transcript(at), sides[1].transcript(at));
    assert!(etcd[0].contains(COMPACTED) && !etcd[1].contains(COMPACTED), "etcd: {etcd:#?}");
    assert_eq!(etcd, raftkv, "etcd (left) and raftkv (right) compacted differently");
    for s in &sides {
        let since_write = s.compacted_at.unwrap() - s.last.1;
        let since_ready = s.compacted_at.unwrap() - s.ready;
        println!("{}: compacted to {at} {since_write:?} after the last write, {since_ready:?} after start", s.kind);
    }
    sides
}

/// Periodic mode, retention 1 s: both compact to the last write's revision once it is
/// one period old — not sooner than 0.8 s after it (one period less etcd's 100 ms
/// sampling step and 100 ms of clock slack) and within 8 s (two periods plus 6 s of
/// slack for a loaded machine and the polling itself).
#[test]
fn periodic_auto_compaction_compacts_what_etcd_compacts() {
    if !have_etcd() {
        return;
    }
    let flags = ["--auto-compaction-mode=periodic", "--auto-compaction-retention=1s"];
    let sides =
        side_by_side("autocompact-periodic", &flags, 10, |last| last, Duration::from_secs(20));
    for s in &sides {
        let after = s.compacted_at.unwrap() - s.last.1;
        let what = format!("{}: compacted {after:?} after the write", s.kind);
        assert!(after >= Duration::from_millis(800) && after <= Duration::from_secs(8), "{what}");
    }
    // While writes flow, etcd's rule keeps one period of history: it compacts to the
    // revision it sampled a period (and one sampling step) before, so no reading may
    // show a revision compacted that was written less than a period before the reading
    // was answered (exact: a write sent after the sample cannot be in it). Compacting
    // the current revision breaks this right after each compaction, which the reading
    // after every put sees. And the compactor keeps up: the last reading is at least
    // the revision written 4 s before it (a compaction every period, 2 s of slack).
    let period = Duration::from_secs(1);
    for mut s in sides {
        let (writes, readings) = s.compactions_while_writing(Duration::from_secs(5));
        let newest = |at: Instant| written_before(&writes, at - period);
        for &(at, compact) in &readings {
            let allowed = newest(at);
            assert!(
                compact <= allowed,
                "{}: compacted to {compact}, but revision {allowed} was the newest written a period before",
                s.kind
            );
        }
        let &(last_at, last_compact) = readings.last().expect("a reading");
        let oldest = written_before(&writes, last_at - Duration::from_secs(4));
        assert!(last_compact >= oldest, "{}: compacted {last_compact}, before {oldest}", s.kind);
        // The data side of the same rule: the oldest revision written within the last
        // period is still readable.
        let asked = Instant::now();
        let recent = writes.iter().find(|(t, _)| *t + period > asked).map(|&(_, r)| r);
        let recent = recent.expect("a write in the last period");
        let (ok, out, err) =
            s.etcdctl(&["get", "w", &format!("--rev={recent}"), "--print-value-only"]);
        assert!(
            ok && out == "v",
            "{}: revision {recent}, written within a period: {out:?} {err}",
            s.kind
        );
        println!(
            "{}: {} readings while writing, every one within the rule; last compact revision {last_compact} (revision {} then), {recent} readable",
            s.kind,
            readings.len(),
            writes.last().unwrap().1
        );
        s.cluster.kill_all();
    }
}

/// Revision mode, retention 5: both compact to the last revision − 5 at their first
/// check, 5 minutes after they start (etcd 3.4's fixed interval): not sooner than
/// 4 min 50 s (10 s of slack: the cluster is ready a little after its compactor
/// starts) and within 6 min.
#[test]
#[ignore = "takes over 5 minutes: etcd 3.4 checks revision retention every 5 minutes"]
fn revision_auto_compaction_compacts_what_etcd_compacts() {
    if !have_etcd() {
        return;
    }
    let flags = ["--auto-compaction-mode=revision", "--auto-compaction-retention=5"];
    let sides =
        side_by_side("autocompact-revision", &flags, 20, |last| last - 5, Duration::from_secs(360));
    for s in &sides {
        let after = s.compacted_at.unwrap() - s.ready;
        assert!(after >= Duration::from_secs(290), "{}: compacted {after:?} after start", s.kind);
        assert!(after <= Duration::from_secs(360), "{}: compacted {after:?} after start", s.kind);
    }
}
