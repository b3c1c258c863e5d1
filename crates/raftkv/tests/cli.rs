//! Bad input at start-up gets a clear error naming what is wrong and what to do, never a
//! panic: unknown member, malformed flags, a data dir of another member, a port in use.

use std::net::TcpListener;
use std::process::Command;

fn raftkv(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv")).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!text.contains("panicked"), "no panic: {text}");
    (out.status.success(), text)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
    let (ok, err) = raftkv(&server_args(
        "n1",
        "/tmp/raftkv-cli-x",
        "nonsense",
        "http://127.0.0.1:2",
        "n1=http://127.0.0.1:1",
    ));
    assert!(!ok);
    assert!(err.contains("--listen-peer-urls") && err.contains("http://IP:PORT"), "{err}");
    let (ok, err) = raftkv(&server_args(
        "n1",
        "/tmp/raftkv-cli-x",
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "n1",
    ));
    assert!(!ok);
    assert!(err.contains("NAME=URL"), "{err}");
    let mut args = server_args(
        "n1",
        "/tmp/raftkv-cli-x",
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "n1=http://127.0.0.1:1",
    );
    args.extend(["--initial-cluster-state", "old"]);
    let (ok, err) = raftkv(&args);
    assert!(!ok);
    assert!(err.contains("use `new` or `existing`"), "{err}");
}

#[test]
fn data_dir_of_another_member_is_refused() {
    let dir = std::env::temp_dir().join(format!("raftkv-cli-owner-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("raftkv-member"), "name=other\nmember_id=1\ncluster_id=2\n").unwrap();
    let (peer, client) =
        (format!("http://127.0.0.1:{}", free_port()), format!("http://127.0.0.1:{}", free_port()));
    let cluster = format!("n1={peer}");
    let (ok, err) = raftkv(&server_args("n1", dir.to_str().unwrap(), &peer, &client, &cluster));
    assert!(!ok);
    assert!(err.contains("belongs to another member or cluster"), "{err}");
}

#[test]
fn existing_cluster_state_without_data_is_explained() {
    let dir = std::env::temp_dir().join(format!("raftkv-cli-existing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (peer, client) =
        (format!("http://127.0.0.1:{}", free_port()), format!("http://127.0.0.1:{}", free_port()));
    let cluster = format!("n1={peer}");
    let mut args = server_args("n1", dir.to_str().unwrap(), &peer, &client, &cluster);
    args.extend(["--initial-cluster-state", "existing"]);
    let (ok, err) = raftkv(&args);
    assert!(!ok);
    assert!(err.contains("holds no data of member"), "{err}");
}

#[test]
fn port_in_use_is_explained() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("raftkv-cli-port-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let peer = format!("http://127.0.0.1:{port}");
    let client = format!("http://127.0.0.1:{}", free_port());
    let cluster = format!("n1={peer}");
    let (ok, err) = raftkv(&server_args("n1", dir.to_str().unwrap(), &peer, &client, &cluster));
    assert!(!ok);
    assert!(
        err.contains("cannot listen on") && err.contains("another process uses this port"),
        "{err}"
    );
}
