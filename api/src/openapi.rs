//! The OpenAPI 3.1 document, built from the handlers' own annotations (`#[utoipa::path]`) as
//! the routes are registered, so the document and the routes cannot drift apart.
//!
//! Every operation also gets the standard error answers (one shared [`ErrorBody`] schema)
//! added here once, and the bearer scheme unless it is public.

use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::validate::{
    AgentNameString, AgentRefString, DateString, DigitsCursorString, IdempotencyKeyString,
    KeyString, NameString, TopicAclCursorString, UsageCursorString,
};

/// Name of the bearer security scheme in the document.
pub const BEARER: &str = "api_key";

/// Paths that need no API key (besides handlers declaring `security(())`).
const PUBLIC_PATHS: &[&str] = &["/healthz", "/readyz"];

/// The document's fixed parts; paths come from the routers in [`crate::routes`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Conclave",
        description = "Self-hosted, highly available coordination layer for AI agents. \
            Every endpoint except health, readiness and the documentation needs \
            `Authorization: Bearer <api key>`; a key is scoped to one workspace with \
            `read`, `full` or `admin` permissions.",
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        NameString,
        KeyString,
        AgentNameString,
        AgentRefString,
        DigitsCursorString,
        TopicAclCursorString,
        IdempotencyKeyString,
        DateString,
        UsageCursorString,
    ))
)]
pub struct ApiDoc;

/// Completes the merged document: the bearer scheme, the standard error answers on every
/// operation, and operation ids unique across modules (`<method>_<path words>`).
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    Conventions.modify(&mut doc);
    doc
}

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// Details of an error.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `bad_request`, `not_found`, `conflict`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The HTTP status, repeated.
    pub status: u16,
}

/// Adds the bearer scheme and the standard error answers to every operation.
struct Conventions;

const ERRORS: &[(&str, &str)] = &[
    ("400", "Invalid input; nothing was changed"),
    ("401", "Missing, invalid or revoked API key"),
    ("403", "The key's scope or an access rule forbids this"),
    ("404", "No such resource in this workspace"),
    ("405", "Method not allowed on this route"),
    (
        "409",
        "Conflicts with the current state; nothing was changed",
    ),
    ("413", "Request body too large"),
    (
        "503",
        "No leader reachable or the write's outcome is unknown; retry",
    ),
];

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let operations = [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("patch", &mut item.patch),
            ];
            for (method, op) in operations {
                let Some(op) = op else { continue };
                op.operation_id = Some(operation_id(method, path));
                // `security(())` on a handler marks it public: one empty requirement.
                let declared_public = op
                    .security
                    .as_ref()
                    .is_some_and(|s| s.iter().all(|r| *r == SecurityRequirement::default()));
                add_conventions(op, declared_public || PUBLIC_PATHS.contains(&path.as_str()));
            }
        }
    }
}

/// `GET /v1/context/{key}` → `get_context_key`.
fn operation_id(method: &str, path: &str) -> String {
    let words = path
        .split('/')
        .filter(|w| !w.is_empty() && *w != "v1")
        .map(|w| w.trim_matches(|c| c == '{' || c == '}').replace('-', "_"));
    std::iter::once(method.to_string())
        .chain(words)
        .collect::<Vec<_>>()
        .join("_")
}

fn add_conventions(op: &mut Operation, public: bool) {
    if !public && op.security.is_none() {
        op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    }
    for (status, description) in ERRORS {
        if public && matches!(*status, "401" | "403") {
            continue;
        }
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(description));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use serde_json::Value;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// Every `$ref` names a schema the document defines (utoipa does not collect schemas
    /// used only by parameters; those must be listed in `ApiDoc`'s components or inlined).
    #[test]
    fn every_reference_resolves() {
        let doc = serde_json::to_value(crate::openapi()).expect("document serializes");
        let mut found = Vec::new();
        refs(&doc, &mut found);
        for r in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference {r}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "unresolved reference {r}"
            );
        }
    }

    /// Every operation has a unique id, an answer for success and for bad input, and every
    /// non-public one needs the bearer key.
    #[test]
    fn every_operation_is_complete() {
        let doc = crate::openapi();
        assert!(doc.paths.paths.len() >= 8, "too few paths documented");
        let mut ids = HashSet::new();
        for (path, item) in &doc.paths.paths {
            let ops = [&item.get, &item.put, &item.post, &item.delete, &item.patch];
            for op in ops.into_iter().flatten() {
                let id = op.operation_id.clone().expect("operation id");
                assert!(ids.insert(id.clone()), "duplicate operation id {id}");
                let answers = &op.responses.responses;
                assert!(
                    answers.keys().any(|s| s.starts_with('2')),
                    "{path}: no success answer"
                );
                assert!(answers.contains_key("400"), "{path}: no 400 answer");
                let public = super::PUBLIC_PATHS.contains(&path.as_str());
                assert_eq!(op.security.is_some(), !public, "{path}: security");
            }
        }
    }
}
