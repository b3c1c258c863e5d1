//! `raftkv snapshot save | restore | status`: etcdctl's snapshot commands for raftkv.
//!
//! `save` streams a member's state (`Maintenance.Snapshot`) into a file, as `etcdctl
//! snapshot save` does (and that command works against raftkv too: the file is the
//! same); `restore` checks the file and writes the data dir of one member of a new
//! cluster holding its data; `status` checks the file and shows what it holds. The file
//! format is in `server::backup`.
//!
//! `save` authenticates with `--user` as etcdctl does, and fails as etcdctl's does with
//! status 5 (`exit::INTERRUPTED`) whatever the cause, but for a TLS flag's mistake (128).

use crate::exit::{self, Failure, OrExit};
use crate::Endpoints;
use clap::Subcommand;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use proto::etcdserverpb::SnapshotRequest;
use server::backup::{read_backup, restore_data_dir, Backup};
use server::config::parse_initial_cluster_with_token;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `raftkv snapshot ...`.
#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// Save a member's current state to FILE (as `etcdctl snapshot save`): the first of
    /// --endpoints that answers streams it.
    Save {
        /// Where to write the snapshot (written to FILE.part, then renamed).
        file: PathBuf,
        #[command(flatten)]
        ep: Endpoints,
    },
    /// Write a new member's data dir from a snapshot file (as `etcdctl snapshot
    /// restore`): run it once per member of the new cluster, with the same
    /// --initial-cluster, then start each member with `raftkv server` on its data dir.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// The new member's name (must appear in --initial-cluster).
        #[arg(long)]
        name: String,
        /// All members of the new cluster: name=peerURL,...
        #[arg(long)]
        initial_cluster: String,
        /// This member's peer URL; must match its entry in --initial-cluster.
        #[arg(long)]
        initial_advertise_peer_urls: Option<String>,
        /// Where to write the member's data (must be new or empty); default NAME.etcd.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Mixed into the new cluster's ids unless it is etcd's default "etcd-cluster"
        /// (start the members with the same token).
        #[arg(long)]
        initial_cluster_token: Option<String>,
        /// Restore a file without a SHA-256 at its end (an etcd db file copied from a
        /// data dir), or ignore a hash that does not match, as etcd's flag.
        #[arg(long)]
        skip_hash_check: bool,
    },
    /// Check a snapshot file and show its hash, revision, key count and size (as
    /// `etcdctl snapshot status`).
    Status {
        /// The snapshot file.
        file: PathBuf,
        /// Output format: simple or json.
        #[arg(long, short = 'w', default_value = "simple")]
        write_out: String,
    },
}

/// Runs a snapshot command.
pub async fn run(cmd: SnapshotCmd) -> Result<(), Failure> {
    match cmd {
        SnapshotCmd::Save { file, ep } => save(&file, &ep).await.map_err(|e| match e.status {
            exit::BAD_ARGS => e,
            _ => Failure::new(exit::INTERRUPTED, e.message),
        }),
        SnapshotCmd::Restore {
            file,
            name,
            initial_cluster,
            initial_advertise_peer_urls,
            data_dir,
            initial_cluster_token,
            skip_hash_check,
        } => {
            let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(format!("{name}.etcd")));
            let peer_url = initial_advertise_peer_urls.as_deref();
            let token = initial_cluster_token.as_deref();
            let target = Target { name: &name, initial_cluster: &initial_cluster, peer_url, token };
            Ok(restore(&file, target, &data_dir, skip_hash_check)?)
        }
        SnapshotCmd::Status { file, write_out } => Ok(status(&file, &write_out)?),
    }
}

/// Why streaming a snapshot from one member failed.
enum SaveError {
    /// The member refused the token as invalid: authenticate again and retry, once.
    InvalidToken,
    /// Anything else, said in one line.
    Failed(String),
}

impl From<String> for SaveError {
    fn from(why: String) -> SaveError {
        SaveError::Failed(why)
    }
}

async fn save(file: &Path, ep: &Endpoints) -> Result<(), Failure> {
    let part = PathBuf::from(format!("{}.part", file.display()));
    let mut errors = Vec::new();
    let tls = ep.tls.client_tls().or_exit(exit::BAD_ARGS)?;
    // With --user: authenticated now, as etcdctl does, so a wrong password fails here.
    let mut authenticated = crate::client(ep).await?;
    let mut authenticated_again = false;
    let mut endpoints = ep.endpoints.iter();
    let mut next = endpoints.next();
    while let Some(endpoint) = next {
        let timeout = Duration::from_secs(ep.timeout_secs);
        let token = authenticated.token().cloned();
        match save_from(endpoint, tls.as_ref(), token.as_ref(), &part, timeout).await {
            Ok(()) => {
                let checked = read_backup(&part, false).map_err(|e| e.to_string());
                let renamed = checked.and_then(|_| {
                    std::fs::rename(&part, file).map_err(|e| {
                        format!("renaming {} to {}: {e}", part.display(), file.display())
                    })
                });
                if let Err(e) = renamed {
                    let _ = std::fs::remove_file(&part);
                    return Err(e.into());
                }
                sync_parent_dir(file);
                println!("Snapshot saved at {}", file.display());
                return Ok(());
            }
            Err(SaveError::InvalidToken) if !authenticated_again => {
                // The same member again, with a new token.
                authenticated_again = true;
                authenticated.authenticate_again().await.or_exit(exit::BAD_CONNECTION)?;
                continue;
            }
            Err(SaveError::InvalidToken) => {
                errors.push(format!("{endpoint}: {INVALID_TOKEN_AGAIN}"));
            }
            Err(SaveError::Failed(e)) => errors.push(format!("{endpoint}: {e}")),
        }
        next = endpoints.next();
    }
    let _ = std::fs::remove_file(&part);
    Err(format!("no member sent a snapshot: {}", errors.join("; ")).into())
}

/// Why a member that refused a new token too did not send a snapshot.
const INVALID_TOKEN_AGAIN: &str = "etcdserver: invalid auth token (refused again after \
     authenticating again)";

/// Streams one member's snapshot into `part` and fsyncs it (over TLS for an
/// `https://` endpoint, with `tls`: etcdctl's `--cacert --cert --key`), sending
/// `token` if --user gave one.
async fn save_from(
    endpoint: &str,
    tls: Option<&tls::ClientTls>,
    token: Option<&client::Token>,
    part: &Path,
    timeout: Duration,
) -> Result<(), SaveError> {
    let channel = client::channel(endpoint, tls).map_err(|e| e.to_string())?;
    let mut maintenance = MaintenanceClient::new(channel);
    let mut request = tonic::Request::new(SnapshotRequest {});
    if let Some(token) = token {
        client::attach_token(&mut request, token);
    }
    let refused = |s: tonic::Status| {
        if client::is_invalid_token(&s) {
            SaveError::InvalidToken
        } else {
            SaveError::Failed(s.message().to_string())
        }
    };
    let call = tokio::time::timeout(timeout, maintenance.snapshot(request));
    let mut stream =
        call.await.map_err(|_| "no answer in time".to_string())?.map_err(refused)?.into_inner();
    let io = |e: std::io::Error| format!("writing {}: {e}", part.display());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    // The file holds every key: readable by its owner only, as etcdctl writes it.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(part).map_err(io)?;
    loop {
        // A stalled member is given up on; a slow but moving stream is not.
        let next = tokio::time::timeout(timeout, stream.message())
            .await
            .map_err(|_| format!("the stream stalled for {} s", timeout.as_secs()))?;
        match next.map_err(|s| s.message().to_string())? {
            Some(chunk) => out.write_all(&chunk.blob).map_err(io)?,
            None => break,
        }
    }
    Ok(out.sync_all().map_err(io)?)
}

fn sync_parent_dir(file: &Path) {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The member a restore writes a data dir for.
struct Target<'a> {
    name: &'a str,
    initial_cluster: &'a str,
    peer_url: Option<&'a str>,
    /// `--initial-cluster-token`.
    token: Option<&'a str>,
}

fn restore(file: &Path, t: Target, data_dir: &Path, skip_hash_check: bool) -> Result<(), String> {
    let Target { name, initial_cluster, peer_url, token } = t;
    let (members, cluster_id) =
        parse_initial_cluster_with_token(initial_cluster, token).map_err(|e| e.0)?;
    let Some(me) = members.iter().find(|m| m.name == name) else {
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        return Err(format!(
            "--name {name:?} is not in --initial-cluster (members: {})",
            names.join(", ")
        ));
    };
    if let Some(url) = peer_url {
        if url.trim_end_matches('/') != me.peer_url.trim_end_matches('/') {
            return Err(format!(
                "--initial-advertise-peer-urls {url} does not match {name}'s URL in \
                 --initial-cluster ({}); give the same URL in both",
                me.peer_url
            ));
        }
    }
    let backup = read_backup(file, skip_hash_check).map_err(|e| e.to_string())?;
    for what in &backup.skipped {
        eprintln!("warning: {}: {what}", file.display());
    }
    let r =
        restore_data_dir(backup, data_dir, me, &members, cluster_id).map_err(|e| e.to_string())?;
    println!(
        "restored {} into {}: member {name} (id {:x}) of new cluster {cluster_id:x}, revision \
         {}, {} keys",
        file.display(),
        data_dir.display(),
        me.id,
        r.revision,
        r.keys
    );
    Ok(())
}

fn status(file: &Path, format: &str) -> Result<(), String> {
    if format != "simple" && format != "json" {
        return Err(format!("--write-out {format:?}: use simple or json"));
    }
    let (hash, revision, keys, size) = match server::backup::etcd_status(file) {
        Ok(status) => status,
        Err(etcd_err) => {
            // raftkv's older format, or a file neither reads: its error says why.
            let backup: Backup = read_backup(file, false).map_err(|e| {
                if e.0.contains("neither") {
                    etcd_err.to_string()
                } else {
                    e.to_string()
                }
            })?;
            let revision = backup.state.revision();
            let hash = server::hash::hash_kv(&backup.state, revision)
                .map_err(|e| format!("hashing {}: {e}", file.display()))?;
            (hash, revision, backup.key_count(), backup.file_bytes)
        }
    };
    if format == "json" {
        println!(
            "{{\"hash\":{hash},\"revision\":{revision},\"totalKey\":{keys},\"totalSize\":{size}}}"
        );
    } else {
        println!("{hash:x}, {revision}, {keys}, {}", human_bytes(size));
    }
    Ok(())
}

/// Sizes as etcdctl prints them (SI units: "20 kB", "2.1 MB").
fn human_bytes(n: u64) -> String {
    if n < 1000 {
        return format!("{n} B");
    }
    let units = ["kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < units.len() {
        v /= 1000.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", units[unit])
    } else {
        format!("{v:.0} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_print_as_etcdctl_prints_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(20_480), "20 kB");
        assert_eq!(human_bytes(2_100_000), "2.1 MB");
    }
}
