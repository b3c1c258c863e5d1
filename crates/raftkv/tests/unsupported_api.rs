//! What raftkv does not implement yet answers gRPC `Unimplemented` with a message that
//! says so, never a confusing error: membership changes (MemberAdd, MemberRemove,
//! MemberUpdate, MemberPromote) and Downgrade. Checked through gRPC and, when
//! it is installed, through `etcdctl` (`member add`).

mod common;

use common::{ClusterSpec, TestCluster};
use proto::etcdserverpb as pb;
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

    let mut maintenance = MaintenanceClient::new(channel);
    let down = pb::DowngradeRequest::default();
    unimplemented_saying("Downgrade", maintenance.downgrade(down).await, "downgrade");

    if !common::have("etcdctl", "version") {
        println!("*** etcdctl not installed: its member commands not checked ***");
        return;
    }
    let cases: [(&[&str], &str); 1] =
        [(&["member", "add", "n9", "--peer-urls=http://127.0.0.1:1"], membership)];
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
}
