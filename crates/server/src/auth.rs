//! etcd's `Auth` service, answered without authentication: raftkv has no users, roles
//! or permissions yet. Auth is *disabled*, as on a fresh etcd: `AuthStatus` says so and
//! `AuthDisable` succeeds (there is nothing to disable); every other method — enabling
//! auth, users, roles, logging in — answers gRPC `Unimplemented` with a message saying
//! so, rather than the bare "unknown service" a client would get with no service at all.

use crate::etcd::Api;
use proto::etcdserverpb as pb;
use tonic::{Request, Response, Status};

/// The message of every refused Auth call.
pub const AUTH_UNSUPPORTED: &str =
    "etcdserver: authentication is not supported by raftkv (users, roles and auth enable are \
     not implemented; auth stays disabled)";

fn unsupported<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented(AUTH_UNSUPPORTED))
}

#[tonic::async_trait]
impl pb::auth_server::Auth for Api {
    async fn auth_status(
        &self,
        _request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let revision = self.node.status().await.map_or(0, |s| s.revision);
        Ok(Response::new(pb::AuthStatusResponse {
            header: self.header(revision),
            enabled: false,
            auth_revision: 0,
        }))
    }

    async fn auth_disable(
        &self,
        _request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let revision = self.node.status().await.map_or(0, |s| s.revision);
        Ok(Response::new(pb::AuthDisableResponse { header: self.header(revision) }))
    }

    async fn user_add(
        &self,
        _request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        unsupported()
    }

    async fn user_get(
        &self,
        _request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        unsupported()
    }

    async fn user_list(
        &self,
        _request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        unsupported()
    }

    async fn user_delete(
        &self,
        _request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        unsupported()
    }

    async fn user_change_password(
        &self,
        _request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        unsupported()
    }

    async fn user_grant_role(
        &self,
        _request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        unsupported()
    }

    async fn user_revoke_role(
        &self,
        _request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        unsupported()
    }

    async fn role_add(
        &self,
        _request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        unsupported()
    }

    async fn role_get(
        &self,
        _request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        unsupported()
    }

    async fn role_list(
        &self,
        _request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        unsupported()
    }

    async fn role_delete(
        &self,
        _request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        unsupported()
    }

    async fn role_grant_permission(
        &self,
        _request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        unsupported()
    }

    async fn role_revoke_permission(
        &self,
        _request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        unsupported()
    }

    async fn auth_enable(
        &self,
        _request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        unsupported()
    }

    async fn authenticate(
        &self,
        _request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        unsupported()
    }
}
