//! Agent cards: the `card` object an agent gives at registration (checked here, stored beside
//! the agent) and the A2A agent card built from it and the agent's own fields, in the form of
//! the protocol version the client speaks.
//!
//! The registered object holds only what the agent knows about itself (version, provider,
//! skills, modes, links); Conclave fills in the rest: name and description from the agent, the
//! JSON-RPC interface at the URL of the node that served the card, the bearer security scheme
//! and the capabilities Conclave implements (streaming yes, push notifications no).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::protocol::Version;
use crate::error::{ApiError, ApiResult};

/// Largest registered card object, bytes of JSON.
pub const MAX_CARD_BYTES: usize = 16 * 1024;
/// Most skills on one card.
pub const MAX_SKILLS: usize = 16;
/// Most entries of a list of tags or media types.
pub const MAX_LIST_ITEMS: usize = 8;
/// Most examples of one skill.
pub const MAX_EXAMPLES: usize = 4;
/// Longest short string (ids, names, versions, tags, media types), characters.
pub const MAX_SHORT_CHARS: usize = 128;
/// Longest URL or skill description, characters.
pub const MAX_TEXT_CHARS: usize = 1024;
/// Longest URL, characters.
pub const MAX_URL_CHARS: usize = MAX_TEXT_CHARS;
/// Longest example, characters.
pub const MAX_EXAMPLE_CHARS: usize = 512;

/// Media types a card advertises when the agent names none.
const DEFAULT_MODES: [&str; 2] = ["text/plain", "application/json"];

/// Version advertised when the agent gives none.
const DEFAULT_VERSION: &str = "1.0.0";

/// A list entry of at most [`MAX_SHORT_CHARS`] characters (tags, media types), for the
/// OpenAPI document.
pub struct ShortItem;

impl utoipa::PartialSchema for ShortItem {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .max_length(Some(MAX_SHORT_CHARS))
            .into()
    }
}

impl ToSchema for ShortItem {}

/// An example of at most [`MAX_EXAMPLE_CHARS`] characters, for the OpenAPI document.
pub struct TextItem;

impl utoipa::PartialSchema for TextItem {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .max_length(Some(MAX_EXAMPLE_CHARS))
            .into()
    }
}

impl ToSchema for TextItem {}

/// The `card` object of an agent registration: what the agent says about itself to A2A
/// clients (field names as in the A2A agent card). Giving it makes the agent discoverable.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CardInput {
    /// The agent's own version, 1 to 128 characters (default `1.0.0`).
    #[schema(min_length = 1, max_length = 128)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Who provides the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderInput>,
    /// Documentation link, at most 1024 characters.
    #[schema(max_length = 1024)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documentation_url: Option<String>,
    /// Icon link, at most 1024 characters.
    #[schema(max_length = 1024)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
    /// Media types the agent reads (default `text/plain`, `application/json`); up to 8 of at
    /// most 128 characters.
    #[schema(max_items = 8, value_type = Option<Vec<ShortItem>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_input_modes: Option<Vec<String>>,
    /// Media types the agent writes (same rules and default).
    #[schema(max_items = 8, value_type = Option<Vec<ShortItem>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_output_modes: Option<Vec<String>>,
    /// What the agent can do, up to 16 skills.
    #[schema(max_items = 16)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skills: Option<Vec<SkillInput>>,
}

/// The provider of an agent.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProviderInput {
    /// Organisation name, 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128)]
    pub organization: String,
    /// Its website, at most 1024 characters.
    #[schema(max_length = 1024)]
    #[serde(default)]
    pub url: String,
}

/// One skill of an agent.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SkillInput {
    /// Its id on the card, 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128)]
    pub id: String,
    /// Display name, 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// What it does, at most 1024 characters.
    #[schema(max_length = 1024)]
    #[serde(default)]
    pub description: String,
    /// Keywords, up to 8 of at most 128 characters.
    #[schema(max_items = 8, value_type = Vec<ShortItem>)]
    #[serde(default)]
    pub tags: Vec<String>,
    /// Example requests, up to 4 of at most 512 characters.
    #[schema(max_items = 4, value_type = Vec<TextItem>)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    /// Media types it reads (default: the card's).
    #[schema(max_items = 8, value_type = Vec<ShortItem>)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_modes: Vec<String>,
    /// Media types it writes (default: the card's).
    #[schema(max_items = 8, value_type = Vec<ShortItem>)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_modes: Vec<String>,
}

fn chars(field: &str, v: &str, min: usize, max: usize) -> ApiResult<()> {
    let n = v.chars().count();
    if n < min || n > max {
        return Err(ApiError::bad_request(format!(
            "{field} must be {min} to {max} characters"
        )));
    }
    Ok(())
}

fn list(field: &str, v: &[String], max_items: usize, max_chars: usize) -> ApiResult<()> {
    if v.len() > max_items {
        return Err(ApiError::bad_request(format!(
            "{field} must have at most {max_items} entries"
        )));
    }
    for (i, s) in v.iter().enumerate() {
        chars(&format!("{field}[{i}]"), s, 0, max_chars)?;
    }
    Ok(())
}

/// Checks a registration's `card` object and returns the JSON text to store: 400 naming the
/// field at fault for anything else.
pub fn card_text(v: &Value) -> ApiResult<String> {
    if !v.is_object() {
        return Err(ApiError::bad_request("card must be a JSON object"));
    }
    let card: CardInput = serde_path_to_error::deserialize(v)
        .map_err(|e| ApiError::bad_request(format!("card: {e}")))?;
    if let Some(ver) = &card.version {
        chars("card.version", ver, 1, MAX_SHORT_CHARS)?;
    }
    if let Some(p) = &card.provider {
        chars(
            "card.provider.organization",
            &p.organization,
            1,
            MAX_SHORT_CHARS,
        )?;
        chars("card.provider.url", &p.url, 0, MAX_URL_CHARS)?;
    }
    for (field, url) in [
        ("card.documentationUrl", &card.documentation_url),
        ("card.iconUrl", &card.icon_url),
    ] {
        if let Some(u) = url {
            chars(field, u, 0, MAX_URL_CHARS)?;
        }
    }
    for (field, modes) in [
        ("card.defaultInputModes", &card.default_input_modes),
        ("card.defaultOutputModes", &card.default_output_modes),
    ] {
        if let Some(m) = modes {
            list(field, m, MAX_LIST_ITEMS, MAX_SHORT_CHARS)?;
        }
    }
    let skills = card.skills.as_deref().unwrap_or_default();
    if skills.len() > MAX_SKILLS {
        return Err(ApiError::bad_request(format!(
            "card.skills must have at most {MAX_SKILLS} entries"
        )));
    }
    for (i, s) in skills.iter().enumerate() {
        let f = |name: &str| format!("card.skills[{i}].{name}");
        chars(&f("id"), &s.id, 1, MAX_SHORT_CHARS)?;
        chars(&f("name"), &s.name, 1, MAX_SHORT_CHARS)?;
        chars(&f("description"), &s.description, 0, MAX_TEXT_CHARS)?;
        list(&f("tags"), &s.tags, MAX_LIST_ITEMS, MAX_SHORT_CHARS)?;
        list(&f("examples"), &s.examples, MAX_EXAMPLES, MAX_EXAMPLE_CHARS)?;
        list(
            &f("inputModes"),
            &s.input_modes,
            MAX_LIST_ITEMS,
            MAX_SHORT_CHARS,
        )?;
        list(
            &f("outputModes"),
            &s.output_modes,
            MAX_LIST_ITEMS,
            MAX_SHORT_CHARS,
        )?;
    }
    let text = serde_json::to_string(&card).map_err(|e| ApiError::internal(e.to_string()))?;
    if text.len() > MAX_CARD_BYTES {
        return Err(ApiError::too_large(format!(
            "card must be at most {MAX_CARD_BYTES} bytes of JSON"
        )));
    }
    Ok(text)
}

/// The A2A agent card of agent `name` (described by `description`), from its stored `card`
/// text, for a client of `version`, whose JSON-RPC endpoint is `url`.
pub fn build(version: Version, name: &str, description: &str, card: &str, url: &str) -> Value {
    let input: CardInput = serde_json::from_str(card).unwrap_or_default();
    let modes = |m: &Option<Vec<String>>| -> Vec<String> {
        m.clone()
            .unwrap_or_else(|| DEFAULT_MODES.iter().map(|s| s.to_string()).collect())
    };
    let skills: Vec<Value> = input
        .skills
        .iter()
        .flatten()
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
        .collect();
    let security_description =
        "A Conclave API key of the agent's workspace, as `Authorization: Bearer <key>`";
    let mut out = match version {
        Version::V1 => json!({
            "name": name,
            "description": description,
            "supportedInterfaces": [
                {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
                {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "0.3"},
            ],
            "version": input.version.as_deref().unwrap_or(DEFAULT_VERSION),
            "capabilities": {"streaming": true, "pushNotifications": false, "extendedAgentCard": false},
            "securitySchemes": {"bearer": {"httpAuthSecurityScheme": {
                "scheme": "Bearer", "description": security_description}}},
            "securityRequirements": [{"schemes": {"bearer": {"list": []}}}],
            "defaultInputModes": modes(&input.default_input_modes),
            "defaultOutputModes": modes(&input.default_output_modes),
            "skills": skills,
        }),
        Version::V03 => json!({
            "protocolVersion": "0.3.0",
            "name": name,
            "description": description,
            "url": url,
            "preferredTransport": "JSONRPC",
            "additionalInterfaces": [{"url": url, "transport": "JSONRPC"}],
            "version": input.version.as_deref().unwrap_or(DEFAULT_VERSION),
            "capabilities": {"streaming": true, "pushNotifications": false, "stateTransitionHistory": false},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": security_description}},
            "security": [{"bearer": []}],
            "defaultInputModes": modes(&input.default_input_modes),
            "defaultOutputModes": modes(&input.default_output_modes),
            "skills": skills,
        }),
    };
    let obj = out.as_object_mut().expect("built as an object");
    if let Some(p) = &input.provider {
        obj.insert(
            "provider".into(),
            json!({"organization": p.organization, "url": p.url}),
        );
    }
    if let Some(u) = &input.documentation_url {
        obj.insert("documentationUrl".into(), json!(u));
    }
    if let Some(u) = &input.icon_url {
        obj.insert("iconUrl".into(), json!(u));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_is_checked_field_by_field() {
        let ok = json!({"version": "2", "skills": [{"id": "s", "name": "S", "tags": ["t"]}]});
        let text = card_text(&ok).unwrap();
        assert!(text.contains("\"skills\""));
        for (bad, field) in [
            (json!([]), "card must be a JSON object"),
            (json!({"nope": 1}), "nope"),
            (json!({"version": ""}), "card.version"),
            (
                json!({"skills": [{"id": "", "name": "x"}]}),
                "card.skills[0].id",
            ),
            (
                json!({"defaultInputModes": ["x".repeat(129)]}),
                "card.defaultInputModes[0]",
            ),
        ] {
            let e = card_text(&bad).unwrap_err();
            assert!(e.message.contains(field), "{bad}: {}", e.message);
        }
        let huge = json!({"skills": (0..MAX_SKILLS + 1)
            .map(|i| json!({"id": i.to_string(), "name": "n"})).collect::<Vec<_>>()});
        assert!(card_text(&huge).is_err());
    }

    #[test]
    fn the_card_speaks_the_clients_version() {
        let text = card_text(&json!({"skills": [{"id": "s", "name": "S", "tags": []}]})).unwrap();
        let v1 = build(Version::V1, "bot", "d", &text, "http://n1/a2a/w/agents/bot");
        assert_eq!(v1["supportedInterfaces"][0]["protocolVersion"], "1.0");
        assert_eq!(
            v1["supportedInterfaces"][0]["url"],
            "http://n1/a2a/w/agents/bot"
        );
        assert_eq!(
            v1["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"],
            "Bearer"
        );
        assert_eq!(v1["skills"][0]["id"], "s");
        assert_eq!(v1["defaultInputModes"][0], "text/plain");
        let v03 = build(
            Version::V03,
            "bot",
            "d",
            &text,
            "http://n1/a2a/w/agents/bot",
        );
        assert_eq!(v03["protocolVersion"], "0.3.0");
        assert_eq!(v03["url"], "http://n1/a2a/w/agents/bot");
        assert_eq!(v03["securitySchemes"]["bearer"]["type"], "http");
    }
}
