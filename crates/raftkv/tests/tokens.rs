//! Simple tokens on a real 3-member cluster, as etcd 3.4 has them: a token issued by
//! one member is valid on every member (the assignment goes through the log and each
//! member records it at apply), each member expires it `--auth-token-ttl` after its
//! last use there, and a password change, a user delete or an auth disable kills it on
//! every member.

mod common;

use common::{wait_for, TestCluster};
use proto::etcdserverpb as pb;
use std::time::Duration;
use tonic::transport::Channel;

/// Seconds a token lives unused (`--auth-token-ttl`).
const TOKEN_TTL_SECS: u64 = 3;
const FLAGS: &[&str] = &["--tick-ms", "50", "--auth-token-ttl", "3", "--bcrypt-cost", "4"];
const ALL_MEMBERS: [usize; 3] = [0, 1, 2];

struct Members {
    channels: Vec<Channel>,
}

impl Members {
    fn auth(&self, i: usize) -> pb::auth_client::AuthClient<Channel> {
        pb::auth_client::AuthClient::new(self.channels[i].clone())
    }

    async fn login(&self, i: usize, name: &str, password: &str) -> String {
        let r = pb::AuthenticateRequest { name: name.into(), password: password.into() };
        let answer = self.auth(i).authenticate(r).await;
        answer.unwrap_or_else(|e| panic!("{name} logs in on member {i}: {e:?}")).into_inner().token
    }

    /// A read of `a/x` on member `i` with `token`: `Ok` or etcd's error message.
    async fn read(&self, i: usize, token: &str) -> Result<(), String> {
        let range = pb::RangeRequest { key: b"a/x".to_vec().into(), ..Default::default() };
        let mut r = tonic::Request::new(range);
        r.metadata_mut().insert("token", token.parse().unwrap());
        let mut kv = pb::kv_client::KvClient::new(self.channels[i].clone());
        kv.range(r).await.map(|_| ()).map_err(|s| s.message().to_string())
    }

    /// An auth call as root (`token`) on member `i`.
    fn as_root<T>(token: &str, body: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(body);
        r.metadata_mut().insert("token", token.parse().unwrap());
        r
    }

    /// Waits (10 s) until `token` is refused as invalid on every member: the change
    /// that kills it is applied by each member in its own time.
    async fn wait_refused_everywhere(&self, what: &str, token: &str) {
        for i in ALL_MEMBERS {
            let what = format!("{what}: token refused on member {i}");
            wait_for(&what, Duration::from_secs(10), Duration::from_millis(50), || async {
                let r = self.read(i, token).await;
                (r.as_ref().err().map(String::as_str) == Some(INVALID)).then_some(())
            })
            .await;
        }
    }
}

const INVALID: &str = "etcdserver: invalid auth token";

/// Root (password `rootpw`, role root), auth on, and user `alice` (`apw`) reading `a/`.
async fn set_up(m: &Members) {
    let mut auth = m.auth(0);
    let add = |name: &str, password: &str| pb::AuthUserAddRequest {
        name: name.into(),
        password: password.into(),
        ..Default::default()
    };
    auth.user_add(add("root", "rootpw")).await.unwrap();
    let grant = |user: &str, role: &str| pb::AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    };
    auth.user_grant_role(grant("root", "root")).await.unwrap();
    auth.user_add(add("alice", "apw")).await.unwrap();
    auth.role_add(pb::AuthRoleAddRequest { name: "a-reader".into() }).await.unwrap();
    let perm = proto::authpb::Permission {
        perm_type: proto::authpb::permission::Type::Read as i32,
        key: b"a/".to_vec().into(),
        range_end: b"a0".to_vec().into(),
    };
    let grant_perm =
        pb::AuthRoleGrantPermissionRequest { name: "a-reader".into(), perm: Some(perm) };
    auth.role_grant_permission(grant_perm).await.unwrap();
    auth.user_grant_role(grant("alice", "a-reader")).await.unwrap();
    auth.auth_enable(pb::AuthEnableRequest {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_one_member_works_on_every_member_until_it_expires_or_is_revoked() {
    let cluster = TestCluster::start("tokens", FLAGS);
    cluster.wait_ready().await;
    let m = Members { channels: ALL_MEMBERS.iter().map(|&i| cluster.channel(i)).collect() };
    set_up(&m).await;

    // Issued by member 0, valid on 1 and 2 (etcd 3.4: assigned on every member at
    // apply); a member that has not applied the assignment yet waits for it.
    let token = m.login(0, "alice", "apw").await;
    for i in [1, 2, 0] {
        assert_eq!(m.read(i, &token).await, Ok(()), "alice's token from member 0 on member {i}");
    }
    assert_eq!(m.read(1, "nosuchtoken.1").await, Err(INVALID.to_string()));
    let wrong = pb::AuthenticateRequest { name: "alice".into(), password: "nope".into() };
    let refused = m.auth(2).authenticate(wrong).await.unwrap_err();
    assert!(refused.message().contains("authentication failed"), "{refused:?}");

    // Expiry is each member's own, `--auth-token-ttl` after the last use there: used
    // on member 1 more often than the TTL, the token lives on there past the TTL,
    // while on member 2, unused, it expires.
    let kept_alive = m.login(2, "alice", "apw").await;
    let until = tokio::time::Instant::now() + Duration::from_secs(TOKEN_TTL_SECS + 1);
    while tokio::time::Instant::now() < until {
        assert_eq!(m.read(1, &kept_alive).await, Ok(()), "a token in use stays valid");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The TTL is a server clock the test cannot observe: wait past it (no use on
    // member 2 since the login), then it must be gone there.
    assert_eq!(m.read(2, &kept_alive).await, Err(INVALID.to_string()), "unused on member 2");
    assert_eq!(m.read(1, &kept_alive).await, Ok(()), "still in use on member 1");

    // A password change (made on another member) kills the token everywhere.
    let token = m.login(1, "alice", "apw").await;
    let root = m.login(0, "root", "rootpw").await;
    assert_eq!(m.read(2, &token).await, Ok(()));
    let change = pb::AuthUserChangePasswordRequest {
        name: "alice".into(),
        password: "apw2".into(),
        ..Default::default()
    };
    m.auth(2).user_change_password(Members::as_root(&root, change)).await.unwrap();
    m.wait_refused_everywhere("after the password change", &token).await;
    let token = m.login(2, "alice", "apw2").await;
    assert_eq!(m.read(0, &token).await, Ok(()), "the new password's token works");

    // So does deleting the user.
    let delete = pb::AuthUserDeleteRequest { name: "alice".into() };
    m.auth(1).user_delete(Members::as_root(&root, delete)).await.unwrap();
    m.wait_refused_everywhere("after the user delete", &token).await;

    // An auth disable drops every token (etcd's tokenProvider.disable), root's too,
    // even once auth is on again.
    let root_again = m.login(1, "root", "rootpw").await;
    m.auth(0).auth_disable(Members::as_root(&root, pb::AuthDisableRequest {})).await.unwrap();
    m.auth(0).auth_enable(pb::AuthEnableRequest {}).await.unwrap();
    m.wait_refused_everywhere("after auth disable and enable", &root).await;
    m.wait_refused_everywhere("after auth disable and enable", &root_again).await;
    let fresh = m.login(2, "root", "rootpw").await;
    for i in ALL_MEMBERS {
        assert_eq!(m.read(i, &fresh).await, Ok(()), "a new root token on member {i}");
    }
}
