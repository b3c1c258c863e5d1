//! What raftkv does not implement yet answers gRPC `Unimplemented` with a message that
//! says so, never a confusing error: membership changes (MemberAdd, MemberRemove,
//! MemberUpdate, MemberPromote), MoveLeader, Downgrade, and the Auth service (auth stays
//! disabled: AuthStatus says so and AuthDisable succeeds). Checked through gRPC and, when
//! it is installed, through `etcdctl` (`member add`, `auth enable`, `user list`).

use proto::etcdserverpb as pb;
use proto::etcdserverpb::auth_client::AuthClient;
use proto::etcdserverpb::cluster_client::ClusterClient;
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A one-member cluster, killed on drop.
struct Single(Child, std::path::PathBuf);

impl Drop for Single {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn start() -> (Single, String) {
    let dir = std::env::temp_dir().join(format!("raftkv-unsupported-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (peer, client) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let child = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["server", "--name", "s1"])
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--listen-client-urls", &endpoint])
        .args(["--initial-cluster", &format!("s1=http://127.0.0.1:{peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting raftkv server");
    (Single(child, dir), endpoint)
}

fn unimplemented_saying<T: std::fmt::Debug>(
    what: &str,
    r: Result<tonic::Response<T>, tonic::Status>,
    says: &str,
) {
    let e = r.expect_err(what);
    assert_eq!(e.code(), Code::Unimplemented, "{what}: {e:?}");
    assert!(e.message().contains(says), "{what}: {}", e.message());
}

#[tokio::test]
async fn unimplemented_methods_answer_unimplemented_with_a_clear_message() {
    let (_member, endpoint) = start();
    let channel = Channel::from_shared(endpoint.clone()).unwrap().connect_lazy();
    let mut kv = KvClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while kv.range(pb::RangeRequest { key: "k".into(), ..Default::default() }).await.is_err() {
        assert!(Instant::now() < deadline, "member not ready within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let membership = "membership changes are not supported by raftkv";
    let mut cluster = ClusterClient::new(channel.clone());
    let add = pb::MemberAddRequest {
        peer_ur_ls: vec!["http://127.0.0.1:1".into()],
        ..Default::default()
    };
    unimplemented_saying("MemberAdd", cluster.member_add(add).await, membership);
    let remove = pb::MemberRemoveRequest { id: 1 };
    unimplemented_saying("MemberRemove", cluster.member_remove(remove).await, membership);
    let update = pb::MemberUpdateRequest { id: 1, peer_ur_ls: vec![] };
    unimplemented_saying("MemberUpdate", cluster.member_update(update).await, membership);
    let promote = pb::MemberPromoteRequest { id: 1 };
    unimplemented_saying("MemberPromote", cluster.member_promote(promote).await, membership);

    let mut maintenance = MaintenanceClient::new(channel.clone());
    let to = pb::MoveLeaderRequest { target_id: 1 };
    unimplemented_saying("MoveLeader", maintenance.move_leader(to).await, "moving the leader");
    let down = pb::DowngradeRequest::default();
    unimplemented_saying("Downgrade", maintenance.downgrade(down).await, "downgrade");

    let auth_msg = "authentication is not supported by raftkv";
    let mut auth = AuthClient::new(channel);
    let status = auth.auth_status(pb::AuthStatusRequest {}).await.unwrap().into_inner();
    assert!(!status.enabled, "auth is disabled");
    auth.auth_disable(pb::AuthDisableRequest {}).await.expect("disabling disabled auth succeeds");
    unimplemented_saying("AuthEnable", auth.auth_enable(pb::AuthEnableRequest {}).await, auth_msg);
    let list = pb::AuthUserListRequest {};
    unimplemented_saying("UserList", auth.user_list(list).await, auth_msg);
    let login = pb::AuthenticateRequest { name: "root".into(), password: "x".into() };
    unimplemented_saying("Authenticate", auth.authenticate(login).await, auth_msg);
    let role = pb::AuthRoleAddRequest { name: "r".into() };
    unimplemented_saying("RoleAdd", auth.role_add(role).await, auth_msg);

    if !Command::new("etcdctl").arg("version").output().is_ok_and(|o| o.status.success()) {
        println!("*** etcdctl not installed: its member and auth commands not checked ***");
        return;
    }
    let cases: [(&[&str], &str); 4] = [
        (&["member", "add", "n9", "--peer-urls=http://127.0.0.1:1"], membership),
        (&["auth", "enable"], auth_msg),
        (&["user", "list"], auth_msg),
        (&["role", "add", "r"], auth_msg),
    ];
    for (args, says) in cases {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoint, "--command-timeout=5s"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let shown = stderr.lines().find(|l| l.starts_with("Error:")).unwrap_or_default();
        assert!(!out.status.success(), "etcdctl {args:?} fails");
        assert!(
            shown.contains("code = Unimplemented") && shown.contains(says),
            "etcdctl {args:?} prints a clear error: {stderr}"
        );
    }
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &endpoint, "auth", "disable"])
        .output()
        .unwrap();
    assert!(out.status.success(), "etcdctl auth disable: {out:?}");
}
