//! The command-line contract scripts rely on: the last line of stdout is
//! exactly the verdict, the exit code is 0 / 1 / 2, and bad input is an error
//! naming the file and line, never a panic.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Writes `text` to a fresh file under the target directory's temp space.
fn history_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lincheck-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write history");
    path
}

fn lincheck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lincheck")).args(args).output().expect("run lincheck")
}

fn last_line(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().last().unwrap_or_default().to_string()
}

const PUT_THEN_GET: &str = r#"{:process 0, :type :invoke, :f :put, :key "1", :value "a"}
{:process 0, :type :ok, :f :put, :key "1", :value "a"}
{:process 1, :type :invoke, :f :get, :key "1", :value nil}
"#;

#[test]
fn linearizable_history_exits_0() {
    let text =
        format!("{PUT_THEN_GET}{{:process 1, :type :ok, :f :get, :key \"1\", :value \"a\"}}\n");
    let path = history_file("ok.txt", &text);
    let out = lincheck(&["--format", "kv", path.to_str().unwrap()]);
    assert_eq!(last_line(&out), "linearizable");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn stale_read_exits_1_with_an_explanation() {
    let text =
        format!("{PUT_THEN_GET}{{:process 1, :type :ok, :f :get, :key \"1\", :value \"\"}}\n");
    let path = history_file("bad.txt", &text);
    let out = lincheck(&["--format", "kv", path.to_str().unwrap()]);
    assert_eq!(last_line(&out), "not linearizable");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("key \"1\""), "{stdout}");
    assert!(stdout.contains("get \"1\" -> \"\""), "{stdout}");
}

#[test]
fn jepsen_register_log_is_read() {
    let text = "INFO  jepsen.util - 0\t:invoke\t:write\t3\n\
                INFO  jepsen.util - 0\t:ok\t:write\t3\n\
                INFO  jepsen.util - 1\t:invoke\t:read\tnil\n\
                INFO  jepsen.util - 1\t:ok\t:read\tnil\n";
    let path = history_file("etcd.log", text);
    let out = lincheck(&["--format", "jepsen", path.to_str().unwrap()]);
    assert_eq!(last_line(&out), "not linearizable");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn malformed_line_exits_2_naming_file_and_line() {
    let text = format!("{PUT_THEN_GET}{{:process 1, :type :ok, :f :get, :key \"1\"\n");
    let path = history_file("broken.txt", &text);
    let out = lincheck(&["--format", "kv", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.txt: line 4:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn missing_file_exits_2() {
    let out = lincheck(&["--format", "kv", "/nonexistent/history.txt"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/history.txt"));
}
