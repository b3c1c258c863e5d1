//! Known-answer histories: `shared/histories/{kv,jepsen-etcd}` hold real client
//! histories with the verdict an independent checker gave. A checker that
//! disagrees on any listed file is wrong, whatever else it passes, so every
//! file in both `VERDICTS.txt` is checked here, each within a time budget.
//!
//! `shared/` is found through `RAFTKV_SHARED`, or else beside the workspace
//! (`/work/shared` next to `/work/main`, and likewise in CI). A missing
//! directory fails the test: silently passing would hide that nothing ran.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lincheck::{
    check, parse_jepsen_register_history, parse_kv_history, CheckOptions, KvModel, RegisterModel,
    Verdict,
};

/// Each file must be decided within this; the slowest takes well under 1 s in
/// release.
const PER_FILE_BUDGET: Duration = Duration::from_secs(5);

fn histories_dir() -> PathBuf {
    let shared = std::env::var_os("RAFTKV_SHARED").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")),
        PathBuf::from,
    );
    let dir = shared.join("histories");
    assert!(
        dir.is_dir(),
        "known-answer histories not found at {}: set RAFTKV_SHARED to the shared/ directory",
        dir.display()
    );
    dir
}

#[derive(Clone, Copy)]
enum Format {
    Kv,
    Jepsen,
}

/// Checks every file listed in `<folder>/VERDICTS.txt`; returns how many.
fn check_folder(folder: &str, format: Format) -> usize {
    let dir = histories_dir().join(folder);
    let listing = dir.join("VERDICTS.txt");
    let verdicts = std::fs::read_to_string(&listing)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", listing.display()));
    let options = CheckOptions { timeout: Some(PER_FILE_BUDGET), max_steps: None };
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut slowest = (Duration::ZERO, String::new());
    for entry in verdicts.lines().filter(|l| !l.trim().is_empty()) {
        let (name, expected) = match entry.split_whitespace().collect::<Vec<_>>()[..] {
            [name, "linearizable"] => (name, "linearizable"),
            [name, "not-linearizable"] => (name, "not linearizable"),
            _ => panic!("{}: cannot read verdict line {entry:?}", listing.display()),
        };
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let started = Instant::now();
        let verdict =
            match format {
                Format::Kv => parse_kv_history(&text)
                    .map(|h| check(&KvModel::empty_is_absent(), &h, &options)),
                Format::Jepsen => parse_jepsen_register_history(&text)
                    .map(|h| check(&RegisterModel, &h, &options)),
            }
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let elapsed = started.elapsed();
        if elapsed > slowest.0 {
            slowest = (elapsed, name.to_string());
        }
        checked += 1;
        if verdict.label() != expected {
            failures.push(format!("{name}: expected {expected}, got {verdict:?}"));
        }
        if let Verdict::NotLinearizable(v) = &verdict {
            // At the deepest point the search reached, every operation that
            // could go next is one the model rejects (one it accepted would
            // have made a longer prefix).
            if v.candidates.is_empty() || v.candidates.iter().any(|c| c.applies) {
                failures.push(format!("{name}: explanation has no blocked candidates:\n{v}"));
            }
        }
    }
    eprintln!(
        "{folder}: {checked} files, slowest {} in {:.3} s",
        slowest.1,
        slowest.0.as_secs_f64()
    );
    assert!(checked > 0, "{} lists no histories", listing.display());
    assert!(failures.is_empty(), "{folder}:\n{}", failures.join("\n"));
    checked
}

#[test]
fn kv_histories_get_their_known_verdicts() {
    assert_eq!(check_folder("kv", Format::Kv), 6, "kv/VERDICTS.txt lists 6 files");
}

#[test]
fn jepsen_etcd_histories_get_their_known_verdicts() {
    // 103 logs; etcd_095 has no verdict and is not listed.
    assert_eq!(
        check_folder("jepsen-etcd", Format::Jepsen),
        102,
        "jepsen-etcd/VERDICTS.txt lists 102 files"
    );
}
