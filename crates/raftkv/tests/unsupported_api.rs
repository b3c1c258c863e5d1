//! What raftkv does not implement yet answers gRPC `Unimplemented` with a message that
//! says so, never a confusing error: membership changes (MemberAdd, MemberRemove,
//! MemberUpdate, MemberPromote), MoveLeader, Downgrade, and the Auth service (auth stays
//! disabled: AuthStatus says so and AuthDisable succeeds). Checked through gRPC and, when
//! it is installed, through `etcdctl` (`member add`, `auth enable`, `user list`).

mod common;

use common::{ClusterSpec, TestCluster};
use proto::etcdserverpb as pb;
use proto::etcdserverpb::auth_client::AuthClient;
use proto::etcdserverpb::cluster_client::ClusterClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::Code;

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
    let member = TestCluster::start_spec(ClusterSpec::raftkv("unsupported", &[]).members(1));
    member.wait_ready().await;
    let (channel, endpoint) = (member.channel(0), member.endpoint(0));

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

    if !common::have("etcdctl", "version") {
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
        let out = common::etcdctl()
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
    let out =
        common::etcdctl().args(["--endpoints", &endpoint, "auth", "disable"]).output().unwrap();
    assert!(out.status.success(), "etcdctl auth disable: {out:?}");
}
