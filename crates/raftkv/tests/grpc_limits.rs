//! Transport limits on a real member: `--max-concurrent-streams` bounds the calls one
//! connection has open at once (before issue 11 there was no bound: a client could open
//! streams until the member ran out of memory). A call over the limit waits for a free
//! stream, as HTTP/2 clients do on SETTINGS_MAX_CONCURRENT_STREAMS, and runs when one
//! closes.

mod common;

use common::{next_message, ClusterSpec, TestCluster};
use proto::etcdserverpb as pb;
use std::time::Duration;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

/// Opens a watch on `key` over `channel` and waits until it is created.
async fn open_watch(
    channel: tonic::transport::Channel,
    key: &str,
) -> (tokio::sync::mpsc::Sender<pb::WatchRequest>, tonic::Streaming<pb::WatchResponse>) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let create =
        pb::WatchCreateRequest { key: key.as_bytes().to_vec().into(), ..Default::default() };
    let request_union = Some(pb::watch_request::RequestUnion::CreateRequest(create));
    tx.send(pb::WatchRequest { request_union }).await.unwrap();
    let mut watch = pb::watch_client::WatchClient::new(channel);
    let mut stream = watch.watch(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let created = next_message("watch created", &mut stream).await.unwrap();
    assert!(created.created, "{created:?}");
    (tx, stream)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_over_max_concurrent_streams_waits_for_a_free_stream() {
    let spec = ClusterSpec::raftkv("streams", &["--max-concurrent-streams", "2"]).members(1);
    let cluster = TestCluster::start_spec(spec);
    cluster.wait_ready().await;
    let connection = cluster.channel(0);
    let mut watches =
        vec![open_watch(connection.clone(), "a").await, open_watch(connection.clone(), "b").await];

    let mut kv = pb::kv_client::KvClient::new(connection);
    let range = kv.range(pb::RangeRequest { key: "a".into(), ..Default::default() });
    tokio::pin!(range);
    let early = tokio::time::timeout(Duration::from_secs(1), &mut range).await;
    assert!(early.is_err(), "a third call on the connection waits: {early:?}");

    drop(watches.pop()); // the client cancels one watch stream: a slot frees
    let late = tokio::time::timeout(Duration::from_secs(10), range).await;
    late.expect("the waiting call runs once a stream is free").expect("and succeeds");
}
