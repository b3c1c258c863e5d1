//! Names the commit the `raftkv` binary is built from, for `raftkv --version` and the
//! server's first log line: `RAFTKV_COMMIT` is HEAD's first 12 hex digits, with
//! `-dirty` when tracked files differed from HEAD when this script last ran, or
//! `unknown` when there is no git or no repository (a tarball, a vendored copy). It
//! never fails the build.
//!
//! When it runs again (`cargo:rerun-if-changed`): when HEAD moves (HEAD, the branch's
//! ref, `packed-refs` and the HEAD reflog change on a commit, checkout or reset), not on
//! an edit: a run makes cargo rebuild every target of this package (the binary and each
//! integration test), so watching the sources or the index made a change anywhere in
//! the workspace, or a `git status` that refreshed the index, cost a rebuild of all of
//! them. So `-dirty` is as of the last time HEAD moved (or a clean build). Without a
//! repository it runs again only when this file or a `GIT_*` variable it reads changes.
//!
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = commit(&manifest_dir).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=RAFTKV_COMMIT={commit}");
}

/// `git -C dir args...`'s standard output, trimmed; `None` if git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}

/// HEAD's commit (12 hex digits), `-dirty` if tracked files differ from it; `None`
/// outside a repository. Declares the files to watch.
fn commit(dir: &Path) -> Option<String> {
    git(dir, &["rev-parse", "--git-dir"])?;
    // Before HEAD is read: in a repository without a commit yet, the first one runs
    // this again.
    watch_repository(dir);
    let head = git(dir, &["rev-parse", "--verify", "--quiet", "HEAD"])?;
    let short = head.get(..12).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
    // No optional locks: the index is not rewritten (a rewrite would look like a change
    // and run this again), and a git command running at the same time is not disturbed.
    let changes =
        git(dir, &["--no-optional-locks", "status", "--porcelain", "--untracked-files=no"])?;
    let dirty = if changes.is_empty() { "" } else { "-dirty" };
    Some(format!("{short}{dirty}"))
}

/// `cargo:rerun-if-changed` for what moves HEAD. Only paths that exist: cargo runs the
/// script every time for a missing one.
fn watch_repository(dir: &Path) {
    let git_path = |name: &str| git(dir, &["rev-parse", "--git-path", name]).map(|p| dir.join(p));
    let mut paths: Vec<PathBuf> =
        ["HEAD", "packed-refs", "logs/HEAD"].iter().filter_map(|n| git_path(n)).collect();
    if let Some(branch) = git(dir, &["symbolic-ref", "--quiet", "HEAD"]) {
        paths.extend(git_path(&branch));
    }
    for p in paths.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
