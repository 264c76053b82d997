//! `/v1/invitations`: invitations to join a workspace. The token (`cvi_<48 hex>`) is shown
//! once and stored only as its SHA-256; the invitation's id (`inv_<n>`) names it for admins.
//!
//! `GET /v1/invitations/{token}` (public) and `DELETE /v1/invitations/{id}` (admin) share one
//! route position, so one path parameter carries either, and the two shapes never overlap.
//! Acceptance (`POST /v1/invitations/{token}/accept`, a Conclave extension, public) creates a
//! user, its membership and an API key in one meta apply: at most once, and never after expiry
//! by the meta leader's clock.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_raft::meta::{Invitation, InvitationStatus, Scope, TenancyCommand, TenancyResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::tenancy::{execute, page, ApiKeyWithSecret};
use super::users::UserView;
use super::{Deleted, Page, PageQuery};
use crate::auth::{hash_secret, new_secret, random_token, secret_prefix, Caller};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{self, EmailString, KeyString, UserNameString};
use conclave_raft::command::now_ms;

const TAG: &str = "Invitations";
/// Start of every invitation token.
const TOKEN_PREFIX: &str = "cvi_";
/// Default lifetime of an invitation: 7 days.
const DEFAULT_EXPIRES_IN_SECS: u64 = 7 * 24 * 3600;
/// Longest lifetime of an invitation: 30 days.
const MAX_EXPIRES_IN_SECS: u64 = 30 * 24 * 3600;
/// Longest email address, characters.
const MAX_EMAIL_CHARS: usize = 254;
/// Longest display name, characters.
const MAX_USER_NAME_CHARS: usize = 128;

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_by_token, revoke))
        .routes(routes!(accept))
}

fn is_token(s: &str) -> bool {
    s.strip_prefix(TOKEN_PREFIX)
        .is_some_and(|h| h.len() == 48 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_id(s: &str) -> bool {
    s.strip_prefix("inv_")
        .is_some_and(|n| !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit()))
}

fn email(v: &Option<String>) -> ApiResult<()> {
    if let Some(e) = v {
        let ok = e.chars().count() <= MAX_EMAIL_CHARS
            && !e.chars().any(|c| c.is_control() || c.is_whitespace())
            && e.split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
        if !ok {
            return Err(ApiError::bad_request(format!(
                "email must be an address like name@example.com, at most {MAX_EMAIL_CHARS} characters"
            )));
        }
    }
    Ok(())
}

/// An invitation as admins see it (never its token).
#[derive(Serialize, ToSchema)]
pub(super) struct InvitationView {
    /// Its id (`inv_<n>`).
    id: String,
    /// The workspace it admits to.
    workspace_id: String,
    /// Who it is meant for, if said.
    email: Option<String>,
    /// Scope of the key the new member gets.
    scope: Scope,
    /// Where it stands now.
    status: InvitationStatus,
    /// Acceptance is refused from this time on, ms since the Unix epoch.
    expires_at: u64,
    /// When it was created.
    created_at: u64,
    /// Id of the key that created it.
    created_by: String,
    /// When it was accepted.
    accepted_at: Option<u64>,
    /// The user its acceptance created.
    accepted_by: Option<String>,
    /// When it was revoked.
    revoked_at: Option<u64>,
}

impl InvitationView {
    fn new(i: &Invitation, now: u64) -> Self {
        Self {
            id: i.id.clone(),
            workspace_id: i.workspace.clone(),
            email: i.email.clone(),
            scope: i.scope,
            status: i.status(now),
            expires_at: i.expires_at,
            created_at: i.created_at,
            created_by: i.created_by.clone(),
            accepted_at: i.accepted_at,
            accepted_by: i.accepted_by.clone(),
            revoked_at: i.revoked_at,
        }
    }
}

/// A new invitation with its token (shown only here).
#[derive(Serialize, ToSchema)]
pub(super) struct NewInvitation {
    /// The invitation.
    #[serde(flatten)]
    invitation: InvitationView,
    /// The token to hand to the invitee: it reads and accepts the invitation with it.
    token: String,
}

/// Body of `POST /v1/invitations`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateInvitationBody {
    /// Who it is meant for: an address like `name@example.com`, at most 254 characters.
    #[schema(value_type = Option<EmailString>)]
    email: Option<String>,
    /// Scope of the key the new member gets (default `full`).
    scope: Option<Scope>,
    /// Lifetime, seconds, 1 to 2592000 (default 604800, 7 days).
    #[schema(minimum = 1, maximum = 2592000)]
    #[serde(default, deserialize_with = "crate::validate::lenient_int")]
    expires_in_secs: Option<u64>,
}

/// Creates an invitation to the caller's workspace (admin keys only).
#[utoipa::path(post, path = "/v1/invitations", tag = TAG, request_body = CreateInvitationBody,
    responses((status = 201, description = "The invitation, with its token", body = NewInvitation)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateInvitationBody>,
) -> ApiResult<(StatusCode, Json<NewInvitation>)> {
    caller.require(Scope::Admin)?;
    email(&body.email)?;
    let secs = body.expires_in_secs.unwrap_or(DEFAULT_EXPIRES_IN_SECS);
    if !(1..=MAX_EXPIRES_IN_SECS).contains(&secs) {
        return Err(ApiError::bad_request(format!(
            "expires_in_secs must be between 1 and {MAX_EXPIRES_IN_SECS}"
        )));
    }
    let token = random_token(TOKEN_PREFIX);
    let cmd = TenancyCommand::CreateInvitation {
        ws: caller.workspace,
        token_hash: hash_secret(&token),
        email: body.email,
        scope: body.scope.unwrap_or(Scope::Full),
        expires_at: now_ms() + secs * 1000,
        by: caller.key_id,
    };
    match execute(&state, cmd).await? {
        TenancyResponse::Invitation(i) => Ok((
            StatusCode::CREATED,
            Json(NewInvitation {
                invitation: InvitationView::new(&i, i.created_at),
                token,
            }),
        )),
        other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
    }
}

/// `GET /v1/invitations` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListInvitationsQuery {
    /// Only invitations with this status.
    status: Option<InvitationStatus>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<KeyString>)]
    cursor: Option<String>,
}

/// Lists the workspace's invitations in creation order, without tokens (admin keys only).
#[utoipa::path(get, path = "/v1/invitations", tag = TAG, params(ListInvitationsQuery),
    responses((status = 200, description = "A page of invitations in creation order", body = Page<InvitationView>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListInvitationsQuery>,
) -> ApiResult<Json<Page<InvitationView>>> {
    caller.require(Scope::Admin)?;
    let paging = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    };
    state.meta_barrier().await?;
    let now = now_ms();
    let meta = state.groups().meta().read().expect("meta lock");
    let invitations = meta
        .tenancy
        .invitations
        .values()
        .filter(|i| i.workspace == caller.workspace)
        .filter(|i| q.status.is_none_or(|s| i.status(now) == s));
    Ok(Json(page(
        invitations,
        |i| &i.id,
        &paging,
        |i| InvitationView::new(i, now),
    )?))
}

/// The workspace an invitation admits to, as its invitee sees it.
#[derive(Serialize, ToSchema)]
pub(super) struct InvitedWorkspace {
    /// Its id.
    id: String,
    /// Its name.
    name: String,
}

/// An invitation as its token's holder sees it.
#[derive(Serialize, ToSchema)]
pub(super) struct PublicInvitation {
    /// The workspace it admits to.
    workspace: InvitedWorkspace,
    /// Who it is meant for, if said.
    email: Option<String>,
    /// Scope of the key the new member gets.
    scope: Scope,
    /// `pending`, `accepted` or `expired`.
    status: InvitationStatus,
    /// Acceptance is refused from this time on, ms since the Unix epoch.
    expires_at: u64,
}

/// Reads an invitation by its token; public, no API key needed. Unknown and revoked
/// invitations answer 404.
#[utoipa::path(get, path = "/v1/invitations/{token}", tag = TAG, security(()),
    params(("token" = String, Path, description = "The invitation's token (`cvi_…`)")),
    responses((status = 200, description = "The invitation", body = PublicInvitation)))]
async fn get_by_token(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
) -> ApiResult<Json<PublicInvitation>> {
    let unknown = || ApiError::not_found("no such invitation");
    if !is_token(&token) {
        return Err(unknown());
    }
    state.meta_barrier().await?;
    let now = now_ms();
    let meta = state.groups().meta().read().expect("meta lock");
    let inv = meta
        .invitation_by_token_hash(&hash_secret(&token))
        .filter(|i| i.revoked_at.is_none())
        .ok_or_else(unknown)?;
    let ws = meta.workspaces.get(&inv.workspace).ok_or_else(unknown)?;
    Ok(Json(PublicInvitation {
        workspace: InvitedWorkspace {
            id: ws.id.clone(),
            name: ws.name.clone(),
        },
        email: inv.email.clone(),
        scope: inv.scope,
        status: inv.status(now),
        expires_at: inv.expires_at,
    }))
}

/// Revokes an invitation of the workspace by its id (`inv_<n>`) or its token (admin keys
/// only): its token stops working. Revoking again changes nothing; an accepted invitation
/// answers 409.
#[utoipa::path(delete, path = "/v1/invitations/{token}", tag = TAG,
    params(("token" = String, Path, description = "The invitation's id (`inv_<n>`) or its token (`cvi_…`)")),
    responses((status = 200, description = "The invitation was revoked", body = Deleted)))]
async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Deleted>> {
    caller.require(Scope::Admin)?;
    let unknown = || ApiError::not_found(format!("invitation {id:?} not found"));
    let id = if is_token(&id) {
        state.meta_barrier().await?;
        let meta = state.groups().meta().read().expect("meta lock");
        meta.invitation_by_token_hash(&hash_secret(&id))
            .filter(|i| i.workspace == caller.workspace)
            .map(|i| i.id.clone())
            .ok_or_else(unknown)?
    } else if is_id(&id) {
        id
    } else {
        return Err(unknown());
    };
    let cmd = TenancyCommand::RevokeInvitation {
        ws: caller.workspace,
        id,
    };
    match execute(&state, cmd).await? {
        TenancyResponse::Invitation(i) => Ok(Json(Deleted::new(i.id))),
        other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
    }
}

/// Body of `POST /v1/invitations/{token}/accept`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AcceptInvitationBody {
    /// The new user's display name, 1 to 128 characters, not only whitespace, no control
    /// characters.
    #[schema(value_type = UserNameString)]
    name: String,
    /// The new user's address, when the invitation names none.
    #[schema(value_type = Option<EmailString>)]
    email: Option<String>,
}

/// What accepting an invitation created.
#[derive(Serialize, ToSchema)]
pub(super) struct AcceptedInvitation {
    /// The new user.
    user: UserView,
    /// The workspace joined.
    workspace_id: String,
    /// The user's first API key in that workspace, with its secret (shown only here).
    api_key: ApiKeyWithSecret,
}

/// Conclave extension (not in the reference API): accepts an invitation by its token; public,
/// no API key needed. Creates a user, its membership and an API key of the invitation's scope,
/// once: a second acceptance, or one after expiry, answers 409; an unknown or revoked
/// invitation 404.
#[utoipa::path(post, path = "/v1/invitations/{token}/accept", tag = TAG, security(()),
    params(("token" = String, Path, description = "The invitation's token (`cvi_…`)")),
    request_body = AcceptInvitationBody,
    responses((status = 201, description = "The new user and its API key", body = AcceptedInvitation)))]
async fn accept(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
    ApiJson(body): ApiJson<AcceptInvitationBody>,
) -> ApiResult<(StatusCode, Json<AcceptedInvitation>)> {
    if !is_token(&token) {
        return Err(ApiError::not_found("no such invitation"));
    }
    validate::text("name", &body.name, MAX_USER_NAME_CHARS, true)?;
    if body.name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name must not contain control characters",
        ));
    }
    email(&body.email)?;
    let secret = new_secret();
    let cmd = TenancyCommand::AcceptInvitation {
        token_hash: hash_secret(&token),
        name: body.name,
        email: body.email,
        key_hash: hash_secret(&secret),
        key_prefix: secret_prefix(&secret),
    };
    match execute(&state, cmd).await? {
        TenancyResponse::Accepted {
            user,
            key,
            invitation,
        } => Ok((
            StatusCode::CREATED,
            Json(AcceptedInvitation {
                user: UserView::from(&user),
                workspace_id: invitation.workspace,
                api_key: ApiKeyWithSecret::new(&key, secret),
            }),
        )),
        other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
    }
}
