//! `/v1/context/embeddings` and `/v1/context/search`: vectors with metadata, and exact cosine
//! top-k search over them, across every shard.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::meta::Scope;
use conclave_raft::shard::embedding::{
    keep_best, Embedding, EmbeddingCommand, EmbeddingQuery, EmbeddingResult, Scored, MAX_DIMENSION,
};
use conclave_raft::{MetaCommand, ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{gather, json_value, run, scatter, shard, unexpected, Page, PageQuery};
use crate::auth::{new_id, Caller};
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{self, KeyString, NameString};

const TAG: &str = "Embeddings";
/// Namespace of embeddings stored without one.
const DEFAULT_NAMESPACE: &str = "default";
/// Most hits a search returns.
const MAX_K: usize = 100;
/// Default hits of a search.
const DEFAULT_K: usize = 10;

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(store, list))
        .routes(routes!(search))
}

/// A vector: 1 to 4096 finite numbers within the range of a 32-bit float.
pub(super) struct VectorSchema;

impl utoipa::PartialSchema for VectorSchema {
    fn schema() -> RefOr<Schema> {
        let item = ObjectBuilder::new()
            .schema_type(Type::Number)
            .minimum(Some(-f64::from(f32::MAX)))
            .maximum(Some(f64::from(f32::MAX)));
        ArrayBuilder::new()
            .items(item)
            .min_items(Some(1))
            .max_items(Some(MAX_DIMENSION))
            .into()
    }
}

impl ToSchema for VectorSchema {}

/// Body of `POST /v1/context/embeddings`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StoreEmbeddingBody {
    /// Its id; generated when absent; an existing id is replaced.
    #[schema(value_type = Option<KeyString>)]
    id: Option<String>,
    /// The vector; every vector of a namespace has the dimension of its first.
    #[schema(value_type = VectorSchema)]
    #[serde(deserialize_with = "validate::exact_numbers")]
    vector: Vec<f64>,
    /// Namespace (default `default`): searches look within one.
    #[schema(value_type = Option<NameString>)]
    namespace: Option<String>,
    /// Source text, up to 16 KiB.
    #[schema(max_length = 16384)]
    text: Option<String>,
    /// Any JSON object, up to 16 KiB.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, Value>>,
}

/// A stored embedding.
#[derive(Serialize, ToSchema)]
pub(super) struct EmbeddingView {
    /// Its id.
    id: String,
    /// Its namespace.
    namespace: String,
    /// Length of its vector.
    dimension: usize,
    /// The vector, when asked for (`include_vector=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    vector: Option<Vec<f32>>,
    /// Source text.
    text: String,
    /// The metadata object.
    metadata: Value,
    /// ms since the Unix epoch.
    created_at: u64,
    /// ms since the Unix epoch.
    updated_at: u64,
}

impl EmbeddingView {
    fn new(e: Embedding, with_vector: bool) -> Self {
        Self {
            id: e.id,
            namespace: e.namespace,
            dimension: e.vector.len(),
            text: e.text,
            metadata: json_value(&e.metadata),
            created_at: e.created_at,
            updated_at: e.updated_at,
            vector: with_vector.then_some(e.vector),
        }
    }
}

/// Query of `GET /v1/context/embeddings`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListEmbeddingsQuery {
    /// Only this namespace.
    #[param(value_type = Option<NameString>)]
    namespace: Option<String>,
    /// Include each vector (default false).
    include_vector: Option<bool>,
}

/// Body of `POST /v1/context/search`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchBody {
    /// The query vector, of the namespace's dimension.
    #[schema(value_type = VectorSchema)]
    #[serde(deserialize_with = "validate::exact_numbers")]
    vector: Vec<f64>,
    /// How many hits, 1 to 100 (default 10).
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "crate::validate::lenient_int")]
    k: Option<usize>,
    /// Namespace searched (default `default`).
    #[schema(value_type = Option<NameString>)]
    namespace: Option<String>,
    /// Leave out hits scoring below this, -1 to 1.
    #[schema(minimum = -1.0, maximum = 1.0)]
    min_score: Option<f64>,
}

/// One search hit.
#[derive(Serialize, ToSchema)]
pub(super) struct SearchHit {
    /// The embedding's id.
    id: String,
    /// Cosine similarity to the query, -1 to 1.
    score: f64,
    /// Its namespace.
    namespace: String,
    /// Its source text.
    text: String,
    /// Its metadata object.
    metadata: Value,
}

/// Hits of a search, best first.
#[derive(Serialize, ToSchema)]
pub(super) struct SearchResults {
    /// Best first; ties by id.
    items: Vec<SearchHit>,
}

/// Checks a vector (read as 64-bit numbers, so a number just beyond the 32-bit range is
/// refused rather than rounded into it) and returns it as 32-bit floats.
fn check_vector(v: &[f64]) -> ApiResult<Vec<f32>> {
    if v.is_empty() || v.len() > MAX_DIMENSION {
        return Err(ApiError::bad_request(format!(
            "vector must have 1 to {MAX_DIMENSION} numbers"
        )));
    }
    if v.iter()
        .any(|x| !x.is_finite() || x.abs() > f64::from(f32::MAX))
    {
        return Err(ApiError::bad_request(
            "vector numbers must be within the range of a 32-bit float",
        ));
    }
    Ok(v.iter().map(|&x| x as f32).collect())
}

/// The namespace's dimension as this node knows it.
fn known_dimension(state: &AppState, ws: &str, namespace: &str) -> Option<u32> {
    let meta = state.groups().meta().read().expect("meta lock");
    meta.embedding_dims
        .get(&(ws.to_string(), namespace.to_string()))
        .copied()
}

fn dimension_conflict(namespace: &str, have: u32, got: usize) -> ApiError {
    ApiError::conflict(format!(
        "namespace {namespace:?} holds vectors of dimension {have}, not {got}"
    ))
}

/// Stores an embedding (201 new, 200 replaced); a vector whose length differs from its
/// namespace's dimension is a 409.
#[utoipa::path(post, path = "/v1/context/embeddings", tag = TAG,
    request_body = StoreEmbeddingBody,
    responses((status = 201, description = "Stored", body = EmbeddingView),
        (status = 200, description = "Replaced an existing id", body = EmbeddingView)))]
async fn store(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<StoreEmbeddingBody>,
) -> ApiResult<(StatusCode, Json<EmbeddingView>)> {
    caller.require(Scope::Full)?;
    let vector = check_vector(&body.vector)?;
    let namespace = body.namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    validate::name("namespace", &namespace)?;
    let id = match body.id {
        Some(id) => {
            validate::key("id", &id)?;
            id
        }
        None => new_id("emb"),
    };
    let text = body.text.unwrap_or_default();
    validate::text("text", &text, validate::MAX_DESCRIPTION_CHARS, false)?;
    let metadata = validate::metadata(body.metadata)?;
    let dim = vector.len();
    match known_dimension(&state, &caller.workspace, &namespace) {
        Some(have) if have as usize != dim => {
            return Err(dimension_conflict(&namespace, have, dim))
        }
        Some(_) => {}
        None => {
            let cmd = MetaCommand::SetEmbeddingDim {
                workspace: caller.workspace.clone(),
                namespace: namespace.clone(),
                dim: dim as u32,
            };
            state.router.execute_meta(cmd).await.map_err(|e| {
                // Another writer fixed a different dimension first.
                if e.code == conclave_raft::error::ErrorCode::BadRequest {
                    ApiError::conflict(e.message)
                } else {
                    e.into()
                }
            })?;
        }
    }
    let group = shard(&state, &caller.workspace, "embedding", &id)?;
    let cmd = ShardCommand::Embedding(EmbeddingCommand::Put {
        ws: caller.workspace.clone(),
        id,
        namespace,
        vector,
        text,
        metadata,
    });
    match run(&state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::Embedding(s)) => {
            let status = if s.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(EmbeddingView::new(s.embedding, false))))
        }
        other => Err(unexpected(other)),
    }
}

/// Lists embeddings in id order across every shard.
#[utoipa::path(get, path = "/v1/context/embeddings", tag = TAG,
    params(ListEmbeddingsQuery, PageQuery),
    responses((status = 200, description = "A page of embeddings in id order", body = Page<EmbeddingView>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListEmbeddingsQuery>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<EmbeddingView>>> {
    caller.require(Scope::Read)?;
    let limit = page.limit()?;
    if let Some(c) = &page.cursor {
        validate::key("cursor", c)?;
    }
    if let Some(n) = &q.namespace {
        validate::name("namespace", n)?;
    }
    let all = gather(
        &state,
        |_| {
            ClientRequest::Read(ShardQuery::Embedding(EmbeddingQuery::List {
                ws: caller.workspace.clone(),
                namespace: q.namespace.clone(),
                after: page.cursor.clone(),
                // One more than a page: a shard with more than a page makes the
                // merged set longer than `limit`, so `next_cursor` is set.
                limit: limit + 1,
            }))
        },
        |answer| match answer {
            ClientResponse::Read(ShardReadResult::Embedding(EmbeddingResult::Page(p))) => Ok(p),
            other => Err(unexpected(other)),
        },
        |x| x.id.clone(),
    )
    .await?;
    let with_vector = q.include_vector.unwrap_or(false);
    Ok(Json(Page::merged(
        all,
        limit,
        |e| e.id.clone(),
        |e| EmbeddingView::new(e, with_vector),
    )))
}

/// The `k` embeddings of a namespace most similar to a vector (cosine, exact, across every
/// shard); a vector of another dimension than the namespace's is a 409.
#[utoipa::path(post, path = "/v1/context/search", tag = TAG, request_body = SearchBody,
    responses((status = 200, description = "Hits, best first", body = SearchResults)))]
async fn search(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<SearchBody>,
) -> ApiResult<Json<SearchResults>> {
    caller.require(Scope::Read)?;
    let vector = check_vector(&body.vector)?;
    let namespace = body.namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    validate::name("namespace", &namespace)?;
    let k = body.k.unwrap_or(DEFAULT_K);
    if !(1..=MAX_K).contains(&k) {
        return Err(ApiError::bad_request(format!("k must be 1 to {MAX_K}")));
    }
    if let Some(m) = body.min_score {
        if !(-1.0..=1.0).contains(&m) {
            return Err(ApiError::bad_request("min_score must be -1 to 1"));
        }
    }
    match known_dimension(&state, &caller.workspace, &namespace) {
        // Nothing was ever stored in the namespace (as far as this node has applied).
        None => return Ok(Json(SearchResults { items: Vec::new() })),
        Some(have) if have as usize != vector.len() => {
            return Err(dimension_conflict(&namespace, have, vector.len()))
        }
        Some(_) => {}
    }
    let answers = scatter(&state, |_| {
        ClientRequest::Read(ShardQuery::Embedding(EmbeddingQuery::Search {
            ws: caller.workspace.clone(),
            namespace: namespace.clone(),
            vector: vector.clone(),
            k,
            min_score: body.min_score,
        }))
    })
    .await?;
    let mut best: Vec<Scored> = Vec::with_capacity(k + 1);
    for a in answers {
        match a {
            ClientResponse::Read(ShardReadResult::Embedding(EmbeddingResult::Hits(hits))) => {
                for hit in hits {
                    keep_best(&mut best, hit, k);
                }
            }
            other => return Err(unexpected(other)),
        }
    }
    let items = best
        .into_iter()
        .map(|s| SearchHit {
            id: s.embedding.id,
            score: s.score,
            namespace: s.embedding.namespace,
            text: s.embedding.text,
            metadata: json_value(&s.embedding.metadata),
        })
        .collect();
    Ok(Json(SearchResults { items }))
}
