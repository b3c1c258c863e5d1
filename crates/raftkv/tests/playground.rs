//! `raftkv playground` leaves no member running once it is gone.
//!
//! The bug this pins: `kill <playground>` (SIGTERM) ended the playground and left its
//! three servers running, holding their ports and data dirs, so the next playground
//! could not start. Now the playground stops its members on SIGTERM, SIGINT and its own
//! errors, and its members stop by themselves when it is killed outright (their stdin
//! is a pipe from it). Each test starts a real playground on free ports and checks, by
//! process id, that the members are gone.

mod common;

use std::io::BufRead;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a playground may take to start or stop, and its members to follow it.
const DEADLINE: Duration = Duration::from_secs(30);

/// A client port whose next two ports (peer, metrics) are free too, none of them handed
/// out before by [`common::free_port`] (which counts up: three calls in a row give a run).
fn free_port_run() -> u16 {
    loop {
        let port = common::free_port();
        if common::free_port() == port + 1 && common::free_port() == port + 2 {
            return port;
        }
    }
}

struct Playground {
    child: Child,
    dir: PathBuf,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// The members' process ids, as the playground printed them.
    members: Vec<u32>,
}

impl Playground {
    /// Starts a playground on `ports` and waits until it printed its members' pids.
    fn start(tag: &str, ports: [u16; 3]) -> Playground {
        Playground::start_with(tag, ports, &[])
    }

    /// The same, with these extra playground flags.
    fn start_with(tag: &str, ports: [u16; 3], flags: &[&str]) -> Playground {
        let dir = std::env::temp_dir().join(format!("raftkv-pg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_raftkv"))
            .arg("playground")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--client-ports", &ports.join(",")])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting raftkv playground");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut p = Playground { child, dir, lines, seen: Vec::new(), members: Vec::new() };
        let starting = p.wait_line("raftkv playground: starting");
        p.members = starting
            .split("(pid ")
            .skip(1)
            .map(|s| s[..s.find(')').unwrap()].parse().unwrap())
            .collect();
        assert_eq!(p.members.len(), 3, "three member pids in {starting:?}");
        assert!(p.members.iter().all(|pid| alive(*pid)), "members run: {:?}", p.seen);
        p
    }

    /// Waits for a printed line starting with `prefix`.
    fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => {
                    panic!("no line {prefix:?} within {DEADLINE:?}; printed: {:?}", self.seen)
                }
            }
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-s", name, &pid]).status().unwrap().success());
    }

    /// Waits for the playground to exit; returns whether it succeeded, and its output.
    fn wait_exit(&mut self) -> (bool, String) {
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the playground still runs after {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader threads end with the pipes: collect the rest of the output.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status.success(), self.seen.join("\n"))
    }

    fn members_alive(&self) -> Vec<u32> {
        self.members.iter().copied().filter(|pid| alive(*pid)).collect()
    }
}

impl Drop for Playground {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self.members_alive() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether process `pid` runs (a zombie, dead but not yet reaped, does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn ports() -> [u16; 3] {
    [free_port_run(), free_port_run(), free_port_run()]
}

#[test]
fn sigterm_and_sigint_stop_the_playground_and_every_member() {
    for signal in ["TERM", "INT"] {
        let mut p = Playground::start(&format!("sig{signal}"), ports());
        p.wait_line("raftkv playground: 3 members running");
        p.signal(signal);
        let (ok, out) = p.wait_exit();
        assert!(ok, "SIG{signal}: the playground exits cleanly:\n{out}");
        assert!(out.contains("stopped; data kept in"), "SIG{signal}:\n{out}");
        assert!(!out.contains("killed"), "SIG{signal}: members stopped by themselves:\n{out}");
        assert_eq!(p.members_alive(), [], "SIG{signal}: no member outlives the playground");
    }
}

#[test]
fn members_of_a_killed_playground_stop_by_themselves() {
    let mut p = Playground::start("kill", ports());
    p.wait_line("raftkv playground: 3 members running");
    p.signal("KILL");
    p.wait_exit();
    let deadline = Instant::now() + DEADLINE;
    while !p.members_alive().is_empty() {
        assert!(Instant::now() < deadline, "members {:?} still run", p.members_alive());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_playground_that_fails_to_start_stops_the_members_it_started() {
    let ports = ports();
    // Member n2's client port is taken: n2 exits at once, n1 and n3 elect a leader.
    let _taken = TcpListener::bind(("127.0.0.1", ports[1])).unwrap();
    let mut p = Playground::start("fail", ports);
    let (ok, out) = p.wait_exit();
    assert!(!ok, "the playground fails:\n{out}");
    assert!(out.contains("member n2 exited"), "it names the member and why:\n{out}");
    assert!(out.contains("cannot listen"), "{out}");
    assert_eq!(p.members_alive(), [], "no member outlives the failed playground");
}

/// `raftkv` with these arguments: whether it succeeded, and its output.
fn raftkv(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv")).args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `raftkv playground --tls` makes its certificates and prints the etcdctl flags; with
/// them, etcdctl and raftkv's own CLI (put, snapshot save) work over https://,
/// and without a client certificate etcdctl is refused.
#[test]
fn a_tls_playground_serves_etcdctl_and_the_cli_over_https_with_the_printed_flags() {
    let mut p = Playground::start_with("tls", ports(), &["--tls"]);
    p.wait_line("raftkv playground: 3 members running");
    let etcdctl_line = p.wait_line("  ETCDCTL_API=3 etcdctl");
    let flags: Vec<&str> =
        etcdctl_line.split_whitespace().filter(|w| w.starts_with("--")).collect();
    assert!(flags[0].starts_with("--endpoints=https://127.0.0.1:"), "{etcdctl_line}");
    assert_eq!(flags.len(), 4, "endpoint, CA, certificate and key: {etcdctl_line}");
    let endpoints = flags[0].trim_start_matches("--endpoints=");
    let tls = &flags[1..];

    let (ok, out) =
        raftkv(&[&["put", "--endpoints", endpoints, "greeting", "hello"], tls].concat());
    assert!(ok, "raftkv put over https: {out}");
    let snapshot = p.dir.join("backup.db");
    let snapshot = snapshot.display().to_string();
    let (ok, out) =
        raftkv(&[&["snapshot", "save", &snapshot, "--endpoints", endpoints], tls].concat());
    assert!(ok && out.contains("Snapshot saved"), "raftkv snapshot save over https: {out}");
    let (ok, out) = raftkv(&["get", "--endpoints", endpoints, "greeting", "--timeout-secs=2"]);
    assert!(!ok && out.contains("--cacert"), "https without TLS flags is explained: {out}");

    if !common::have("etcdctl", "version") {
        eprintln!("SKIPPED the etcdctl part: etcdctl is not installed");
        return;
    }
    let etcdctl = |args: &[&str]| {
        let out = common::etcdctl()
            .args(["--dial-timeout=3s", "--command-timeout=5s"])
            .args(args)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, out) = etcdctl(&[&flags[..], &["get", "greeting"]].concat());
    assert!(ok && out == "greeting\nhello\n", "etcdctl with the printed flags: {out}");
    let (ok, out) = etcdctl(&[flags[0], flags[1], "get", "greeting"]);
    assert!(!ok, "etcdctl without a client certificate is refused: {out}");
}

/// A member killed while the playground runs is reported, once, with its log's end;
/// the playground keeps the others (a quorum) serving, and says when a quorum is lost.
#[test]
fn a_member_that_dies_is_reported_and_the_others_keep_serving() {
    let ports = ports();
    let mut p = Playground::start("die", ports);
    p.wait_line("raftkv playground: 3 members running");
    let endpoints: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let endpoints = endpoints.join(",");
    let kill = |pid: u32| {
        assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success())
    };
    kill(p.members[1]);
    let line = p.wait_line("warning: member n2");
    assert!(line.contains(&format!("(pid {})", p.members[1])), "{line}");
    assert!(line.contains("signal: 9") && line.contains("n2.log"), "{line}");
    let (ok, out) = raftkv(&["put", "--endpoints", &endpoints, "after", "n2"]);
    assert!(ok, "two of three members serve: {out}");
    kill(p.members[2]);
    p.wait_line("warning: member n3");
    let line = p.wait_line("warning: 1 of 3 members run, fewer than a quorum (2)");
    assert!(line.contains("cannot serve"), "{line}");
    p.signal("TERM");
    let (ok, out) = p.wait_exit();
    assert!(ok, "{out}");
    assert_eq!(out.matches("warning: member n2").count(), 1, "reported once:\n{out}");
    assert_eq!(p.members_alive(), [], "no member outlives the playground");
}
