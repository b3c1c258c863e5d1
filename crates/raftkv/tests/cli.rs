//! Bad input at start-up gets a clear error naming what is wrong and what to do, never a
//! panic: unknown member, malformed flags, a data dir of another member, a port in use.

mod common;

use common::{ClusterSpec, TestCluster};
use std::net::TcpListener;

/// Runs `raftkv`; returns whether it succeeded and its stderr.
fn raftkv(args: &[&str]) -> (bool, String) {
    let (ok, _, stderr) = common::raftkv(args);
    (ok, stderr)
}

fn server_args<'a>(
    name: &'a str,
    dir: &'a str,
    peer: &'a str,
    client: &'a str,
    cluster: &'a str,
) -> Vec<&'a str> {
    vec![
        "server",
        "--name",
        name,
        "--data-dir",
        dir,
        "--listen-peer-urls",
        peer,
        "--listen-client-urls",
        client,
        "--initial-cluster",
        cluster,
    ]
}

#[test]
fn name_missing_from_initial_cluster_is_explained() {
    let (ok, err) = raftkv(&server_args(
        "n9",
        "/tmp/raftkv-cli-n9",
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "n1=http://127.0.0.1:1",
    ));
    assert!(!ok);
    assert!(err.contains("--name \"n9\" is not in --initial-cluster"), "{err}");
}

#[test]
fn malformed_urls_and_cluster_state_are_explained() {
    let (peer, cluster) = ("http://127.0.0.1:1", "n1=http://127.0.0.1:1");
    // (--listen-peer-urls, --initial-cluster, more flags, what the error says)
    let cases: [(&str, &str, &[&str], &[&str]); 3] = [
        ("nonsense", cluster, &[], &["--listen-peer-urls", "http://IP:PORT"]),
        (peer, "n1", &[], &["NAME=URL"]),
        (peer, cluster, &["--initial-cluster-state", "old"], &["use `new` or `existing`"]),
    ];
    for (peer, cluster, extra, says) in cases {
        let mut args = server_args("n1", "/tmp/raftkv-cli-x", peer, "http://127.0.0.1:2", cluster);
        args.extend(extra);
        let (ok, err) = raftkv(&args);
        assert!(!ok, "{args:?} is refused");
        assert!(says.iter().all(|s| err.contains(s)), "{args:?}: {err}");
    }
}

/// A one-member cluster (`n1`), planned for a test and not started.
fn one_member(tag: &str) -> TestCluster {
    TestCluster::plan(ClusterSpec::raftkv(tag, &[]).named("n").members(1))
}

/// Runs `raftkv server` as the member `c` plans, with `extra` flags.
fn serve(c: &TestCluster, extra: &[&str]) -> (bool, String) {
    let (m, peer, client) = (&c.members()[0], c.peer_url(0), c.endpoint(0));
    let mut args =
        server_args(&m.name, m.dir.to_str().unwrap(), &peer, &client, c.initial_cluster());
    args.extend(extra);
    raftkv(&args)
}

#[test]
fn data_dir_of_another_member_is_refused() {
    let c = one_member("cli-owner");
    let dir = &c.members()[0].dir;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("raftkv-member"), "name=other\nmember_id=1\ncluster_id=2\n").unwrap();
    let (ok, err) = serve(&c, &[]);
    assert!(!ok);
    assert!(err.contains("belongs to another member or cluster"), "{err}");
}

#[test]
fn existing_cluster_state_without_data_is_explained() {
    // Joining needs another member to ask for the member list; a one-member
    // --initial-cluster names none, so the error says what to use instead.
    let c = one_member("cli-existing");
    let (ok, err) = serve(&c, &["--initial-cluster-state", "existing"]);
    assert!(!ok);
    assert!(err.contains("names no other member to ask"), "{err}");
    assert!(err.contains("etcdctl member add"), "{err}");
}

#[test]
fn port_in_use_is_explained() {
    let c = one_member("cli-port");
    // Another process takes the member's peer port.
    let _busy = TcpListener::bind(("127.0.0.1", c.members()[0].peer_port)).unwrap();
    let (ok, err) = serve(&c, &[]);
    assert!(!ok);
    assert!(
        err.contains("cannot listen on") && err.contains("another process uses this port"),
        "{err}"
    );
}

#[tokio::test]
async fn a_data_dir_in_use_by_a_running_member_is_refused() {
    let mut c = one_member("cli-lock");
    c.spawn_all();
    c.wait_ready().await;
    // The same member again, same cluster, on ports of its own: before the lock it started
    // on the same WAL and served stale reads under the first one's id.
    let m = &c.members()[0];
    let peer = format!("http://127.0.0.1:{}", common::free_port());
    let client = format!("http://127.0.0.1:{}", common::free_port());
    let args = server_args(&m.name, m.dir.to_str().unwrap(), &peer, &client, c.initial_cluster());
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second member started on a data dir in use");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "refused: {err}");
    let pid = c.pid(0).expect("the first member runs");
    assert!(
        err.contains("is in use by another raftkv process") && err.contains(&format!("pid {pid}")),
        "{err}"
    );
    assert!(c.is_running(0), "the first member is untouched");
    // Once the first member is gone, the data dir is free again.
    c.kill(0);
    c.spawn(0);
    c.wait_ready().await;
}

/// `raftkv status` exits non-zero when an endpoint does not answer, as `etcdctl endpoint
/// status` does, with the endpoint and the reason on stderr; the members that answer are
/// still shown.
#[tokio::test]
async fn status_with_an_unreachable_endpoint_fails_and_says_why() {
    let mut c = one_member("cli-status");
    c.spawn_all();
    c.wait_ready().await;
    let live = c.endpoint(0);
    // A port nobody listens on: bound, then released.
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let (ok, out, err) = common::raftkv(&["status", "--endpoints", &format!("{live},{dead}")]);
    assert!(!ok, "an unreachable endpoint fails the command: {out}{err}");
    assert!(out.lines().any(|l| l.starts_with(&live)), "the live member is shown: {out}");
    let line = err.lines().find(|l| l.contains(&dead)).unwrap_or_else(|| panic!("{err}"));
    assert!(line.starts_with("Failed to get the status of endpoint"), "{err}");
    assert!(line.to_lowercase().contains("refused"), "the reason is given: {err}");
    assert!(err.contains("1 of 2 endpoints did not answer"), "{err}");
    let (ok, out, err) = common::raftkv(&["status", "--endpoints", &live]);
    assert!(ok, "every endpoint answers: {out}{err}");
}

/// SIGTERM on the only member of a cluster: it exits at once, and quietly, since having no
/// other voter to hand leadership to is nothing to warn an operator of (it warned
/// "leadership not handed over; stopping anyway").
#[tokio::test]
async fn sigterm_on_a_single_member_stops_it_without_a_warning() {
    let mut c = one_member("cli-term");
    c.spawn_all();
    c.wait_ready().await;
    c.terminate(0);
    let log = std::fs::read_to_string(c.members()[0].dir.with_extension("log")).unwrap();
    assert!(log.contains("stopping on signal"), "{log}");
    assert!(!log.contains(" WARN "), "no warning on a clean stop: {log}");
}

/// Runs `raftkv` with `stdin` as its standard input; whether it succeeded, its stdout,
/// its stderr and how long it took.
fn raftkv_with_stdin(
    args: &[&str],
    stdin: std::process::Stdio,
) -> (bool, String, String, std::time::Duration) {
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(args)
        .stdin(stdin)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "raftkv {args:?} does not panic: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), stdout, stderr, started.elapsed())
}

/// `--user` and `--password` as etcdctl 3.4 takes them: NAME:PASSWORD, NAME with
/// --password, or NAME alone with the password as the first line of a standard input
/// that is not a terminal (a closed one fails at once saying how to pass it, never
/// hangs); a wrong password fails with etcd's words; against a cluster whose auth is
/// off, the command runs without a token (as etcdctl) and a note says so.
#[tokio::test]
async fn user_and_password_authenticate_as_etcdctls_do() {
    use proto::etcdserverpb as pb;
    let mut c = TestCluster::plan(
        ClusterSpec::raftkv("cli-user", &["--bcrypt-cost", "4"]).named("n").members(1),
    );
    c.spawn_all();
    c.wait_ready().await;
    let ep = c.endpoint(0);
    let (ok, _, err) = common::raftkv(&["put", "--endpoints", &ep, "--user", "root:x", "k", "v"]);
    assert!(ok, "auth off: the command runs without a token: {err}");
    assert!(err.contains("--user is not used: authentication is not enabled"), "{err}");

    let mut auth = pb::auth_client::AuthClient::new(c.channel(0));
    let root = pb::AuthUserAddRequest {
        name: "root".into(),
        password: "rootpw".into(),
        ..Default::default()
    };
    auth.user_add(root).await.expect("user add");
    let grant = pb::AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() };
    auth.user_grant_role(grant).await.expect("grant root");
    auth.auth_enable(pb::AuthEnableRequest {}).await.expect("auth enable");

    let (ok, _, err) = common::raftkv(&["get", "--endpoints", &ep, "k"]);
    assert!(!ok && err.contains("etcdserver: user name is empty"), "no --user: {err}");
    for user in [&["--user", "root:wrong"][..], &["--user", "root", "--password", "wrong"]] {
        let args = [&["get", "--endpoints", &ep], user, &["k"]].concat();
        let (ok, _, err) = common::raftkv(&args);
        assert!(!ok, "{args:?}");
        assert!(
            err.contains("etcdserver: authentication failed, invalid user ID or password"),
            "{args:?}: {err}"
        );
    }
    let (ok, out, err) = common::raftkv(&["get", "--endpoints", &ep, "--user", "root:rootpw", "k"]);
    assert!(ok && out == "k\nv\n", "{out}{err}");
    let args = ["get", "--endpoints", &ep, "--user", "root", "--password", "rootpw", "k"];
    let (ok, out, err) = common::raftkv(&args);
    assert!(ok && out == "k\nv\n", "{out}{err}");

    // `--user root` alone: the password is the first line of standard input.
    let args = ["get", "--endpoints", &ep, "--user", "root", "k"];
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"rootpw\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout == "k\nv\n", "{stdout}{stderr}");
    let (ok, out, err, took) = raftkv_with_stdin(&args, std::process::Stdio::null());
    assert!(!ok, "no password on a closed standard input: {out}");
    assert!(
        err.contains("--user root: no password: standard input is not a terminal")
            && err.contains("pass --user root:PASSWORD, --password PASSWORD"),
        "{err}"
    );
    assert!(took < std::time::Duration::from_secs(5), "at once, not at a timeout: {took:?}");
}

/// Runs `program` with `args` (standard input closed); its exit status (`None`: ended by
/// a signal), stdout and stderr.
fn run_status(mut program: std::process::Command, args: &[&str]) -> (Option<i32>, String, String) {
    let out = program.args(args).stdin(std::process::Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{args:?} does not panic: {stderr}");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// A one-member cluster of `spec` with auth enabled: user `root`, password `rootpw`.
async fn with_auth_enabled(spec: ClusterSpec) -> TestCluster {
    use proto::etcdserverpb as pb;
    let mut c = TestCluster::plan(spec.named("n").members(1));
    c.spawn_all();
    c.wait_ready().await;
    let mut auth = pb::auth_client::AuthClient::new(c.channel(0));
    let root = pb::AuthUserAddRequest {
        name: "root".into(),
        password: "rootpw".into(),
        ..Default::default()
    };
    auth.user_add(root).await.expect("user add");
    let grant = pb::AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() };
    auth.user_grant_role(grant).await.expect("grant root");
    auth.auth_enable(pb::AuthEnableRequest {}).await.expect("auth enable");
    c
}

/// Each case of the exit-status table (src/exit.rs, README "Exit statuses"): the same
/// mistake with `raftkv` and with `etcdctl` 3.4 exits with the same status, etcdctl's
/// against a real etcd with auth enabled when etcd is installed. Scripts written for
/// etcdctl check these numbers.
#[tokio::test]
async fn failures_exit_with_etcdctls_statuses() {
    let spec = ClusterSpec::raftkv("cli-exit", &["--bcrypt-cost", "4"]);
    let c = with_auth_enabled(spec).await;
    let etcd = if common::have("etcd", "--version") {
        Some(with_auth_enabled(ClusterSpec::etcd("cli-exit-etcd", &["--bcrypt-cost", "4"])).await)
    } else {
        eprintln!("SKIPPED the etcdctl half: no etcd installed");
        None
    };
    // Port 1: only root may listen there, and nothing does, so the connection is refused
    // (a free port could be taken by a member another test of this binary starts).
    let dead = "127.0.0.1:1".to_string();
    let dir = c.root().to_path_buf();
    let file = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (saved, nowhere) = (file("saved.db"), file("no/such/dir/s.db"));
    // (what, raftkv's arguments after the endpoint flags, etcdctl's, endpoint, status)
    // `E` stands for the member's endpoint, `D` for one nobody listens on.
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<&'a str>, &'a str, i32);
    let cases: Vec<Case> = vec![
        ("no command: help", vec![], vec![], "", 0),
        ("no snapshot command: help", vec!["snapshot"], vec!["snapshot"], "", 0),
        ("unknown flag", vec!["get", "--bogus", "k"], vec!["get", "--bogus", "k"], "E", 1),
        ("unknown command", vec!["bogus"], vec!["bogus"], "", 1),
        ("missing argument", vec!["put", "k"], vec!["put", "k"], "E", 128),
        ("no argument", vec!["get"], vec!["get"], "E", 128),
        (
            "snapshot save without a file",
            vec!["snapshot", "save"],
            vec!["snapshot", "save"],
            "E",
            128,
        ),
        (
            "unreadable --cacert",
            vec!["get", "--cacert", "/nonexistent", "k"],
            vec!["get", "--cacert", "/nonexistent", "k"],
            "E",
            128,
        ),
        (
            "--cert without --key",
            vec!["get", "--cacert", "/x", "--cert", "/x", "k"],
            vec!["get", "--cert", "/x", "k"],
            "E",
            128,
        ),
        ("auth on, no --user", vec!["get", "k"], vec!["get", "k"], "E", 1),
        (
            "wrong password",
            vec!["get", "--user", "root:wrong", "k"],
            vec!["get", "--user", "root:wrong", "k"],
            "E",
            2,
        ),
        (
            "wrong --password",
            vec!["put", "--user", "root", "--password", "wrong", "k", "v"],
            vec!["put", "--user", "root", "--password", "wrong", "k", "v"],
            "E",
            2,
        ),
        ("unreachable", vec!["get", "k"], vec!["get", "k"], "D", 1),
        (
            "unreachable with --user",
            vec!["get", "--user", "root:rootpw", "k"],
            vec!["get", "--user", "root:rootpw", "k"],
            "D",
            2,
        ),
        (
            "snapshot save, no --user",
            vec!["snapshot", "save", &saved],
            vec!["snapshot", "save", &saved],
            "E",
            5,
        ),
        (
            "snapshot save, wrong password",
            vec!["snapshot", "save", "--user", "root:wrong", &saved],
            vec!["snapshot", "save", "--user", "root:wrong", &saved],
            "E",
            5,
        ),
        (
            "snapshot save, unreachable",
            vec!["snapshot", "save", &saved],
            vec!["snapshot", "save", &saved],
            "D",
            5,
        ),
        (
            "snapshot save, no such dir",
            vec!["snapshot", "save", "--user", "root:rootpw", &nowhere],
            vec!["snapshot", "save", "--user", "root:rootpw", &nowhere],
            "E",
            5,
        ),
        (
            "snapshot status, no such file",
            vec!["snapshot", "status", &nowhere],
            vec!["snapshot", "status", &nowhere],
            "",
            1,
        ),
    ];
    let mut wrong = Vec::new();
    for (what, raftkv_args, etcdctl_args, endpoint, status) in &cases {
        let mut argv: Vec<String> = raftkv_args.iter().map(|a| a.to_string()).collect();
        let member = match *endpoint {
            "E" => Some(c.endpoint(0)),
            "D" => Some(format!("http://{dead}")),
            _ => None,
        };
        if let Some(member) = &member {
            argv.extend(["--endpoints".to_string(), member.clone(), "--timeout-secs=2".into()]);
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let raftkv = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"));
        let (got, out, err) = run_status(raftkv, &argv);
        if got != Some(*status) {
            wrong.push(format!("raftkv {what}: {got:?}, not {status} ({argv:?}): {out}{err}"));
        }
        if *status == 0 {
            assert!(out.contains("Usage"), "raftkv {what}: help on stdout: {out}");
        }
        let Some(etcd) = &etcd else { continue };
        let mut argv: Vec<String> = etcdctl_args.iter().map(|a| a.to_string()).collect();
        match *endpoint {
            "E" => argv.push(format!("--endpoints={}", etcd.address(0))),
            "D" => argv.push(format!("--endpoints={dead}")),
            _ => {}
        }
        if !endpoint.is_empty() {
            argv.extend(["--dial-timeout=1s".to_string(), "--command-timeout=2s".into()]);
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (got, out, err) = run_status(common::etcdctl(), &argv);
        if got != Some(*status) {
            wrong.push(format!("etcdctl {what}: {got:?}, not {status} ({argv:?}): {out}{err}"));
        }
    }
    assert!(wrong.is_empty(), "exit statuses differ from the table:\n{}", wrong.join("\n"));
}

/// `raftkv bench` and `raftkv snapshot save` take etcdctl's `--user` (and `--password`).
/// Without a user, on a cluster with auth enabled, both fail with etcd's reason and
/// etcdctl's status: bench at its first refused request, in one line, instead of
/// counting a refusal per request until its time is up; snapshot save with 5. A user
/// without the permission stops bench the same way. With root, both work.
#[tokio::test]
async fn bench_and_snapshot_save_authenticate_with_user() {
    use proto::etcdserverpb as pb;
    let spec = ClusterSpec::raftkv("cli-bench-auth", &["--bcrypt-cost", "4"]);
    let c = with_auth_enabled(spec).await;
    let mut auth = pb::auth_client::AuthClient::new(c.channel(0));
    let mut root = tonic::Request::new(pb::AuthUserAddRequest {
        name: "nobody".into(),
        password: "nobodypw".into(),
        ..Default::default()
    });
    let token = auth
        .authenticate(pb::AuthenticateRequest { name: "root".into(), password: "rootpw".into() })
        .await
        .expect("root authenticates")
        .into_inner()
        .token;
    root.metadata_mut().insert("token", token.parse().unwrap());
    auth.user_add(root).await.expect("a user without roles");

    let ep = c.endpoint(0);
    let bench = |user: &[&str]| {
        let mut args = vec!["bench", "--endpoints", &ep, "--clients", "4", "--connections", "1"];
        args.extend(["--keys", "100", "--value-size", "8", "--quiet"]);
        args.extend(["--duration-secs", "30", "--count", "200"]);
        args.extend(user);
        let started = std::time::Instant::now();
        let raftkv = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"));
        let (status, out, err) = run_status(raftkv, &args);
        (status, out, err, started.elapsed())
    };
    let refusals = [
        (&[][..], "etcdserver: user name is empty (InvalidArgument)", "pass --user NAME:PASSWORD"),
        (&["--user", "nobody:nobodypw"][..], "etcdserver: permission denied", "give --user a role"),
    ];
    for (user, reason, what_to_do) in refusals {
        let (status, out, err, took) = bench(user);
        assert_eq!(status, Some(1), "bench {user:?} fails as etcdctl put would: {out}{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        assert!(
            lines[0].starts_with("error: bench stopped at the first refused request")
                && lines[0].contains(reason)
                && lines[0].contains(what_to_do),
            "{err}"
        );
        assert!(took < std::time::Duration::from_secs(20), "at once, not after 30 s: {took:?}");
    }
    let (status, _, err, _) = bench(&["--user", "root:wrong"]);
    assert_eq!(status, Some(2), "a wrong password is a bad connection, as etcdctl's: {err}");
    assert!(
        err.contains("etcdserver: authentication failed, invalid user ID or password"),
        "{err}"
    );
    for user in [&["--user", "root:rootpw"][..], &["--user", "root", "--password", "rootpw"]] {
        let (status, out, err, _) = bench(user);
        assert_eq!(status, Some(0), "bench {user:?}: {out}{err}");
        assert!(out.contains("; errors 0"), "{out}");
    }

    let file = c.root().join("saved.db");
    let save = |user: &[&str]| {
        let mut args = vec!["snapshot", "save", file.to_str().unwrap(), "--endpoints", &ep];
        args.extend(user);
        let raftkv = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"));
        run_status(raftkv, &args)
    };
    let (status, out, err) = save(&[]);
    assert_eq!(status, Some(5), "no --user: {out}{err}");
    assert!(err.contains("user name is empty"), "etcd's reason: {err}");
    assert!(!file.exists(), "nothing saved");
    let (status, out, err) = save(&["--user", "root:wrong"]);
    assert_eq!(status, Some(5), "a wrong password: {out}{err}");
    assert!(
        err.contains("etcdserver: authentication failed, invalid user ID or password"),
        "{err}"
    );
    for user in [&["--user", "root:rootpw"][..], &["--user", "root", "--password", "rootpw"]] {
        let (status, out, err) = save(user);
        assert_eq!(status, Some(0), "{user:?}: {out}{err}");
        let (ok, out, err) = common::raftkv(&["snapshot", "status", file.to_str().unwrap()]);
        assert!(ok, "the saved file reads back: {out}{err}");
        std::fs::remove_file(&file).unwrap();
    }
}

/// `raftkv --version` names the package version and the commit built (12 hex digits,
/// `-dirty` with uncommitted changes; `unknown` outside a git checkout), and a member
/// logs the same as its first line, so a log names the build that wrote it.
#[tokio::test]
async fn version_names_the_commit_and_the_server_logs_it() {
    let (ok, out, err) = common::raftkv(&["--version"]);
    assert!(ok, "{err}");
    let version = out.strip_prefix("raftkv ").and_then(|v| v.strip_suffix('\n'));
    let version = version.unwrap_or_else(|| panic!("`raftkv VERSION`: {out:?}"));
    let commit = version
        .strip_prefix(concat!(env!("CARGO_PKG_VERSION"), " ("))
        .and_then(|v| v.strip_suffix(')'))
        .unwrap_or_else(|| panic!("`{} (COMMIT)`: {version:?}", env!("CARGO_PKG_VERSION")));
    let head = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => {
            let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
            assert_eq!(hash, &head[..12], "HEAD's first 12 hex digits: {commit:?}");
        }
        None => assert_eq!(commit, "unknown", "built outside a git checkout"),
    }

    let mut c = one_member("cli-version");
    c.spawn_all();
    c.wait_ready().await;
    let log = c.log(0);
    let first = log.lines().next().unwrap_or_default();
    assert!(first.ends_with(&format!(" INFO raftkv {version}")), "first line: {first:?}\n{log}");
}
