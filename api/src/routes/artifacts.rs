//! `/v1/artifacts`: files agents hand each other, uploaded (bytes replicated through Raft like
//! every other write, bounded by `max_artifact_bytes`) or referenced by an external URL.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::alphabet;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::meta::Scope;
use conclave_raft::shard::artifact::{Artifact, ArtifactCommand, ArtifactQuery, ArtifactResult};
use conclave_raft::{ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{gather, json_value, run, shard, unexpected, Page, PageQuery};
use crate::auth::{new_id, Caller};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{self, KeyString};

const TAG: &str = "Artifacts";
/// Longest reference URL, characters.
const MAX_URL_CHARS: usize = 2048;
/// Longest content type, characters.
const MAX_CONTENT_TYPE_CHARS: usize = 128;
/// An http(s) URL of printable ASCII whose host part (up to the first `/`, `?` or `#`) holds
/// only the characters RFC 3986 allows there outside an IP literal (no `[` `]`).
const URL_PATTERN: &str = r"^https?://[A-Za-z0-9._~%!$&'()*+,;=:@-]+([/?#][!-~]*)?$";
/// A MIME type `type/subtype`.
const CONTENT_TYPE_PATTERN: &str = r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$";
/// Padded standard base64; trailing bits are not checked, so every string the pattern above
/// admits decodes.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// The routes of this module, with their documentation; uploads may carry up to
/// `max_artifact_bytes` of content (base64 grows it by a third, plus the JSON around it).
pub(super) fn routes(max_artifact_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get))
        .routes(routes!(content))
        .layer(DefaultBodyLimit::max(
            max_artifact_bytes / 3 * 4 + 64 * 1024,
        ))
}

/// Body of `POST /v1/artifacts`: a name and exactly one of `content` (UTF-8 text),
/// `content_base64` (bytes) or `url` (a reference).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub(super) enum CreateArtifactBody {
    /// Upload text.
    Text(TextArtifact),
    /// Upload bytes, base64-encoded.
    Bytes(BytesArtifact),
    /// Reference an external URL.
    Reference(ReferenceArtifact),
}

/// An upload of text.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TextArtifact {
    /// Its name, 1 to 256 characters.
    #[schema(value_type = KeyString)]
    name: String,
    /// The content, as UTF-8 text.
    content: String,
    /// MIME type (default `text/plain; charset=utf-8`).
    #[schema(
        pattern = r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$",
        max_length = 128
    )]
    content_type: Option<String>,
    /// Any JSON object, up to 16 KiB.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, Value>>,
}

/// An upload of bytes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BytesArtifact {
    /// Its name, 1 to 256 characters.
    #[schema(value_type = KeyString)]
    name: String,
    /// The content, standard base64 with padding.
    #[schema(pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")]
    content_base64: String,
    /// MIME type (default `application/octet-stream`).
    #[schema(
        pattern = r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$",
        max_length = 128
    )]
    content_type: Option<String>,
    /// Any JSON object, up to 16 KiB.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, Value>>,
}

/// A reference to content elsewhere.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReferenceArtifact {
    /// Its name, 1 to 256 characters.
    #[schema(value_type = KeyString)]
    name: String,
    /// An http or https URL of printable ASCII, up to 2048 characters; its host part
    /// (up to the first `/`, `?` or `#`) has letters, digits and `._~%!$&'()*+,;=:@-`.
    #[schema(
        pattern = r"^https?://[A-Za-z0-9._~%!$&'()*+,;=:@-]+([/?#][!-~]*)?$",
        max_length = 2048
    )]
    url: String,
    /// MIME type of what the URL serves (default `application/octet-stream`).
    #[schema(
        pattern = r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$",
        max_length = 128
    )]
    content_type: Option<String>,
    /// Any JSON object, up to 16 KiB.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, Value>>,
}

/// An artifact's description.
#[derive(Serialize, ToSchema)]
pub(super) struct ArtifactView {
    /// Its id.
    id: String,
    /// Its name.
    name: String,
    /// MIME type of its content.
    content_type: String,
    /// Bytes of uploaded content (0 for a reference).
    size: u64,
    /// Hex SHA-256 of uploaded content.
    sha256: Option<String>,
    /// The external URL of a reference.
    url: Option<String>,
    /// Where to download the content: on this cluster (any node serves it, with the same
    /// API key) for uploads, the external URL for references.
    download_url: String,
    /// The metadata object.
    metadata: Value,
    /// ms since the Unix epoch.
    created_at: u64,
}

impl From<Artifact> for ArtifactView {
    fn from(a: Artifact) -> Self {
        let download_url = match &a.url {
            Some(u) => u.clone(),
            None => format!("/v1/artifacts/{}/content", a.id),
        };
        Self {
            download_url,
            metadata: json_value(&a.metadata),
            id: a.id,
            name: a.name,
            content_type: a.content_type,
            size: a.size,
            sha256: a.sha256,
            url: a.url,
            created_at: a.created_at,
        }
    }
}

fn check_content_type(v: &str) -> ApiResult<()> {
    let token = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c))
    };
    let ok = v.chars().count() <= MAX_CONTENT_TYPE_CHARS
        && v.split_once('/').is_some_and(|(t, s)| token(t) && token(s));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "content_type must match {CONTENT_TYPE_PATTERN} (at most {MAX_CONTENT_TYPE_CHARS} characters)"
        )))
    }
}

fn check_url(v: &str) -> ApiResult<()> {
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"));
    let authority_char = |c: char| c.is_ascii_alphanumeric() || "._~%!$&'()*+,;=:@-".contains(c);
    let ok = v.chars().count() <= MAX_URL_CHARS
        && rest.is_some_and(|r| {
            let end = r.find(['/', '?', '#']).unwrap_or(r.len());
            let (authority, tail) = r.split_at(end);
            !authority.is_empty()
                && authority.chars().all(authority_char)
                && tail.chars().all(|c| ('!'..='~').contains(&c))
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "url must match {URL_PATTERN} (at most {MAX_URL_CHARS} characters)"
        )))
    }
}

/// Uploads content or references a URL.
#[utoipa::path(post, path = "/v1/artifacts", tag = TAG, request_body = CreateArtifactBody,
    responses((status = 201, description = "The artifact", body = ArtifactView)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateArtifactBody>,
) -> ApiResult<(StatusCode, Json<ArtifactView>)> {
    caller.require(Scope::Full)?;
    let given_type = match &body {
        CreateArtifactBody::Text(t) => &t.content_type,
        CreateArtifactBody::Bytes(b) => &b.content_type,
        CreateArtifactBody::Reference(r) => &r.content_type,
    };
    if let Some(ct) = given_type {
        check_content_type(ct)?;
    }
    let (name, content, url, content_type, metadata) = match body {
        CreateArtifactBody::Text(t) => (
            t.name,
            Some(t.content.into_bytes()),
            None,
            t.content_type
                .unwrap_or_else(|| "text/plain; charset=utf-8".into()),
            t.metadata,
        ),
        CreateArtifactBody::Bytes(b) => {
            let bytes = BASE64
                .decode(b.content_base64.as_bytes())
                .map_err(|e| ApiError::bad_request(format!("content_base64 is not base64: {e}")))?;
            let ct = b
                .content_type
                .unwrap_or_else(|| "application/octet-stream".into());
            (b.name, Some(bytes), None, ct, b.metadata)
        }
        CreateArtifactBody::Reference(r) => {
            check_url(&r.url)?;
            let ct = r
                .content_type
                .unwrap_or_else(|| "application/octet-stream".into());
            (r.name, None, Some(r.url), ct, r.metadata)
        }
    };
    validate::key("name", &name)?;
    let metadata = validate::metadata(metadata)?;
    if let Some(c) = &content {
        if c.len() > state.max_artifact_bytes {
            return Err(ApiError::too_large(format!(
                "artifact content must be at most {} bytes",
                state.max_artifact_bytes
            )));
        }
    }
    let sha256 = content.as_ref().map(|c| hex::encode(Sha256::digest(c)));
    let id = new_id("art");
    let group = shard(&state, &caller.workspace, "artifact", &id)?;
    let cmd = ShardCommand::Artifact(ArtifactCommand::Create {
        ws: caller.workspace.clone(),
        id,
        name,
        content_type,
        content,
        url,
        sha256,
        metadata,
    });
    match run(&state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::Artifact(a)) => {
            Ok((StatusCode::CREATED, Json((*a).into())))
        }
        other => Err(unexpected(other)),
    }
}

/// Lists artifacts in id order across every shard.
#[utoipa::path(get, path = "/v1/artifacts", tag = TAG, params(PageQuery),
    responses((status = 200, description = "A page of artifacts", body = Page<ArtifactView>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<ArtifactView>>> {
    caller.require(Scope::Read)?;
    let limit = page.limit()?;
    if let Some(c) = &page.cursor {
        validate::key("cursor", c)?;
    }
    let all = gather(
        &state,
        |_| {
            ClientRequest::Read(ShardQuery::Artifact(ArtifactQuery::List {
                ws: caller.workspace.clone(),
                after: page.cursor.clone(),
                // One more than a page: a shard with more than a page makes the
                // merged set longer than `limit`, so `next_cursor` is set.
                limit: limit + 1,
            }))
        },
        |answer| match answer {
            ClientResponse::Read(ShardReadResult::Artifact(ArtifactResult::Page(p))) => Ok(p),
            other => Err(unexpected(other)),
        },
        |x| x.id.clone(),
    )
    .await?;
    Ok(Json(Page::merged(
        all,
        limit,
        |a| a.id.clone(),
        ArtifactView::from,
    )))
}

async fn read(state: &AppState, caller: &Caller, q: ArtifactQuery) -> ApiResult<ArtifactResult> {
    let (ArtifactQuery::Get { id, .. } | ArtifactQuery::Content { id, .. }) = &q else {
        return Err(ApiError::internal("not a single-artifact query"));
    };
    validate::key("id", id)?;
    let group = shard(state, &caller.workspace, "artifact", id)?;
    match run(state, group, ClientRequest::Read(ShardQuery::Artifact(q))).await? {
        ClientResponse::Read(ShardReadResult::Artifact(r)) => Ok(r),
        other => Err(unexpected(other)),
    }
}

/// One artifact's description, with its download URL.
#[utoipa::path(get, path = "/v1/artifacts/{id}", tag = TAG,
    params(("id" = KeyString, Path, description = "The artifact's id")),
    responses((status = 200, description = "The artifact", body = ArtifactView)))]
async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ArtifactView>> {
    caller.require(Scope::Read)?;
    let ws = caller.workspace.clone();
    match read(&state, &caller, ArtifactQuery::Get { ws, id }).await? {
        ArtifactResult::One(a) => Ok(Json(a.into())),
        _ => Err(ApiError::internal("unexpected artifact answer")),
    }
}

/// An uploaded artifact's bytes, with its content type; any node serves them (a Conclave
/// extension: the `download_url` of uploads). A reference has no bytes here: 404.
#[utoipa::path(get, path = "/v1/artifacts/{id}/content", tag = TAG,
    params(("id" = KeyString, Path, description = "The artifact's id")),
    responses((status = 200, description = "The content", content_type = "*/*", body = Vec<u8>)))]
async fn content(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    caller.require(Scope::Read)?;
    let ws = caller.workspace.clone();
    match read(&state, &caller, ArtifactQuery::Content { ws, id }).await? {
        ArtifactResult::Content(a, bytes) => {
            if let Some(url) = a.url {
                return Err(ApiError::not_found(format!(
                    "artifact {} is a reference to {url}; it has no content here",
                    a.id
                )));
            }
            let ct = HeaderValue::from_str(&a.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            Ok((
                [
                    (header::CONTENT_TYPE, ct),
                    (
                        header::X_CONTENT_TYPE_OPTIONS,
                        HeaderValue::from_static("nosniff"),
                    ),
                ],
                bytes,
            )
                .into_response())
        }
        _ => Err(ApiError::internal("unexpected artifact answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn reference_urls_have_a_plain_host_part() {
        for ok in [
            "https://example.com",
            "http://user@host:8080/a/b?c=[1]#frag",
            "https://h?q",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://example.com",
            "https://",
            "http://[",
            "http://a[b]/c",
            "https://exa mple.com",
            "https://host/é",
            "https:///path",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
