//! What raftkv does not implement yet answers gRPC `Unimplemented` with a message that
//! says so, never a confusing error: Downgrade. (Membership changes, once listed here,
//! are implemented: tests/member_etcdctl.rs and tests/membership.rs.)

mod common;

use common::{ClusterSpec, TestCluster};
use proto::etcdserverpb as pb;
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
    let channel = member.channel(0);

    let mut maintenance = MaintenanceClient::new(channel);
    let down = pb::DowngradeRequest::default();
    unimplemented_saying("Downgrade", maintenance.downgrade(down).await, "downgrade");
}
