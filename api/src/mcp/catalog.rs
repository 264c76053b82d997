//! The MCP tools: one per REST operation they mirror, plus `wait_for_events`.
//!
//! Each mirroring tool names its REST operation (method and path); its description and its
//! input schema are taken from that operation in the OpenAPI document, so they cannot drift
//! from what the REST route accepts: path and query parameters and the JSON body's properties
//! become the tool's arguments (a path parameter may get a clearer argument name), and every
//! schema the operation refers to is copied under `$defs`. A call is then dispatched to the
//! very same route in-process ([`super::dispatch`]), so validation, scopes, ACLs and answers
//! are those of REST.
//!
//! Tools are listed in name order. Each tool may require a skill ([`Tool::skill`]): when the
//! caller's workspace registers a skill of that name, only callers on a team granted it may
//! call the tool ([`super::policy`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use axum::http::Method;
use serde_json::{json, Map, Value};

/// Name of the one tool not mirroring a REST operation.
pub const WAIT_FOR_EVENTS: &str = "wait_for_events";

/// What a tool mirrors, as written in the table below.
struct Spec {
    name: &'static str,
    method: Method,
    path: &'static str,
    /// `(path parameter, argument name)` for path parameters given another name.
    renames: &'static [(&'static str, &'static str)],
    skill: Option<&'static str>,
}

const fn spec(
    name: &'static str,
    method: Method,
    path: &'static str,
    renames: &'static [(&'static str, &'static str)],
    skill: Option<&'static str>,
) -> Spec {
    Spec {
        name,
        method,
        path,
        renames,
        skill,
    }
}

/// Skills a workspace may register to restrict groups of tools.
const AGENTS: Option<&str> = Some("mcp.agents");
const MESSAGING: Option<&str> = Some("mcp.messaging");
const TASKS: Option<&str> = Some("mcp.tasks");
const TOPICS: Option<&str> = Some("mcp.topics");
const CONTEXT: Option<&str> = Some("mcp.context");
const ARTIFACTS: Option<&str> = Some("mcp.artifacts");
const DIRECTORY: Option<&str> = Some("mcp.directory");
const SKILLS: Option<&str> = Some("mcp.skills");
/// The skill `wait_for_events` requires.
pub const EVENTS_SKILL: Option<&str> = Some("mcp.events");

const AGENT: &[(&str, &str)] = &[("id", "agent")];
const TASK: &[(&str, &str)] = &[("id", "task_id")];
const TOPIC: &[(&str, &str)] = &[("name", "topic")];
const ARTIFACT: &[(&str, &str)] = &[("id", "artifact_id")];
const TEAM: &[(&str, &str)] = &[("id", "team_id")];
const SKILL: &[(&str, &str)] = &[("id", "skill")];

/// Every mirroring tool.
fn specs() -> Vec<Spec> {
    use Method as M;
    vec![
        // agents
        spec("register_agent", M::POST, "/v1/agents", &[], AGENTS),
        spec("list_agents", M::GET, "/v1/agents", &[], AGENTS),
        spec(
            "heartbeat_agent",
            M::POST,
            "/v1/agents/{id}/heartbeat",
            AGENT,
            AGENTS,
        ),
        spec(
            "disconnect_agent",
            M::POST,
            "/v1/agents/{id}/disconnect",
            AGENT,
            AGENTS,
        ),
        spec("delete_agent", M::DELETE, "/v1/agents/{id}", AGENT, AGENTS),
        // messages
        spec("send_message", M::POST, "/v1/messages", &[], MESSAGING),
        spec("list_messages", M::GET, "/v1/messages", &[], MESSAGING),
        // tasks
        spec("create_task", M::POST, "/v1/tasks", &[], TASKS),
        spec("list_tasks", M::GET, "/v1/tasks", &[], TASKS),
        spec("get_task", M::GET, "/v1/tasks/{id}", TASK, TASKS),
        spec("claim_task", M::POST, "/v1/tasks/{id}/claim", TASK, TASKS),
        spec(
            "approve_task",
            M::POST,
            "/v1/tasks/{id}/approve",
            TASK,
            TASKS,
        ),
        spec("update_task", M::PATCH, "/v1/tasks/{id}", TASK, TASKS),
        // topics
        spec("create_topic", M::POST, "/v1/topics", &[], TOPICS),
        spec("list_topics", M::GET, "/v1/topics", &[], TOPICS),
        spec(
            "publish_topic",
            M::POST,
            "/v1/topics/{name}/publish",
            TOPIC,
            TOPICS,
        ),
        spec(
            "read_topic",
            M::GET,
            "/v1/topics/{name}/messages",
            TOPIC,
            TOPICS,
        ),
        spec(
            "subscribe_topic",
            M::POST,
            "/v1/topics/{name}/subscribe",
            TOPIC,
            TOPICS,
        ),
        spec(
            "unsubscribe_topic",
            M::DELETE,
            "/v1/topics/{name}/subscribe",
            TOPIC,
            TOPICS,
        ),
        spec(
            "list_topic_subscriptions",
            M::GET,
            "/v1/topics/subscriptions",
            &[],
            TOPICS,
        ),
        // context
        spec("get_context", M::GET, "/v1/context/{key}", &[], CONTEXT),
        spec("set_context", M::PUT, "/v1/context/{key}", &[], CONTEXT),
        spec(
            "delete_context",
            M::DELETE,
            "/v1/context/{key}",
            &[],
            CONTEXT,
        ),
        spec("list_context", M::GET, "/v1/context", &[], CONTEXT),
        spec(
            "store_embedding",
            M::POST,
            "/v1/context/embeddings",
            &[],
            CONTEXT,
        ),
        spec(
            "list_embeddings",
            M::GET,
            "/v1/context/embeddings",
            &[],
            CONTEXT,
        ),
        spec(
            "search_context",
            M::POST,
            "/v1/context/search",
            &[],
            CONTEXT,
        ),
        // artifacts
        spec("create_artifact", M::POST, "/v1/artifacts", &[], ARTIFACTS),
        spec("list_artifacts", M::GET, "/v1/artifacts", &[], ARTIFACTS),
        spec(
            "get_artifact",
            M::GET,
            "/v1/artifacts/{id}",
            ARTIFACT,
            ARTIFACTS,
        ),
        spec(
            "get_artifact_content",
            M::GET,
            "/v1/artifacts/{id}/content",
            ARTIFACT,
            ARTIFACTS,
        ),
        // teams and skills
        spec("list_teams", M::GET, "/v1/teams", &[], DIRECTORY),
        spec(
            "list_team_members",
            M::GET,
            "/v1/teams/{id}/members",
            TEAM,
            DIRECTORY,
        ),
        spec(
            "list_team_skills",
            M::GET,
            "/v1/teams/{id}/skills",
            TEAM,
            DIRECTORY,
        ),
        spec("list_skills", M::GET, "/v1/skills", &[], DIRECTORY),
        spec(
            "invoke_skill",
            M::POST,
            "/v1/skills/{id}/invoke",
            SKILL,
            SKILLS,
        ),
        spec("whoami", M::GET, "/v1/session/me", &[], None),
    ]
}

/// Where one argument goes in the REST request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// Into the path, in place of `{name}`.
    Path(String),
    /// Into the query string, under its name.
    Query,
    /// Into the JSON body, under its name.
    Body,
}

/// How a mirroring tool builds its REST request.
#[derive(Debug, Clone)]
pub struct Route {
    /// The operation's method.
    pub method: Method,
    /// The operation's path template.
    pub path: &'static str,
    /// Where each argument goes, by argument name.
    pub slots: BTreeMap<String, Slot>,
    /// Whether the operation takes a JSON body at all.
    pub has_body: bool,
}

/// One tool.
#[derive(Debug, Clone)]
pub struct Tool {
    /// Its name.
    pub name: &'static str,
    /// What it does.
    pub description: String,
    /// JSON Schema (2020-12) of its arguments.
    pub input_schema: Value,
    /// The skill it requires where the workspace registers one of that name.
    pub skill: Option<&'static str>,
    /// The REST operation it mirrors; `None` for `wait_for_events`.
    pub route: Option<Route>,
    /// Whether it changes nothing (it reads, or waits).
    pub read_only: bool,
}

impl Tool {
    /// Its entry in `tools/list`.
    pub fn listing(&self) -> Value {
        json!({
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema,
            "annotations": {
                "readOnlyHint": self.read_only,
                "destructiveHint": !self.read_only && self.route.as_ref()
                    .is_some_and(|r| r.method == Method::DELETE),
                "idempotentHint": self.read_only,
                "openWorldHint": false,
            },
        })
    }
}

/// Every tool, in name order.
pub struct Catalog {
    tools: Vec<Tool>,
}

impl Catalog {
    /// The catalog built from the node's OpenAPI document (built once per process).
    pub fn get() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            let doc = serde_json::to_value(crate::routes::openapi()).expect("document serializes");
            Catalog::build(&doc).expect("every mcp tool matches a documented operation")
        })
    }

    /// The catalog for OpenAPI document `doc`; an error names a tool whose operation is not
    /// in the document or whose arguments collide.
    pub fn build(doc: &Value) -> Result<Catalog, String> {
        let mut tools = specs()
            .into_iter()
            .map(|s| mirror(doc, s))
            .collect::<Result<Vec<_>, _>>()?;
        tools.push(wait_for_events_tool());
        tools.sort_by_key(|t| t.name);
        for pair in tools.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(format!("tool {} is defined twice", pair[0].name));
            }
        }
        Ok(Catalog { tools })
    }

    /// Every tool, in name order.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// The tool called `name`.
    pub fn tool(&self, name: &str) -> Option<&Tool> {
        self.tools
            .binary_search_by(|t| t.name.cmp(name))
            .ok()
            .map(|i| &self.tools[i])
    }
}

/// A tool's arguments as they are gathered.
#[derive(Default)]
struct Arguments {
    properties: Map<String, Value>,
    required: Vec<Value>,
    slots: BTreeMap<String, Slot>,
}

impl Arguments {
    fn add(
        &mut self,
        tool: &str,
        arg: String,
        schema: Value,
        required: bool,
        slot: Slot,
    ) -> Result<(), String> {
        if self.properties.contains_key(&arg) {
            return Err(format!("{tool}: argument {arg} appears twice"));
        }
        if required {
            self.required.push(Value::String(arg.clone()));
        }
        self.properties.insert(arg.clone(), schema);
        self.slots.insert(arg, slot);
        Ok(())
    }
}

/// The tool mirroring `spec`'s operation.
fn mirror(doc: &Value, spec: Spec) -> Result<Tool, String> {
    let method = spec.method.as_str().to_ascii_lowercase();
    let op = &doc["paths"][spec.path][&method];
    if !op.is_object() {
        return Err(format!(
            "{}: no operation {} {} in the document",
            spec.name, spec.method, spec.path
        ));
    }
    let mut a = Arguments::default();
    let tool = spec.name;
    for p in op["parameters"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default().to_string();
        let mut schema = p["schema"].clone();
        if let (Some(obj), Some(d)) = (schema.as_object_mut(), p["description"].as_str()) {
            obj.entry("description")
                .or_insert_with(|| Value::String(d.to_string()));
        }
        match p["in"].as_str() {
            Some("path") => {
                let arg = spec
                    .renames
                    .iter()
                    .find(|(from, _)| *from == name)
                    .map_or(name.clone(), |(_, to)| to.to_string());
                a.add(tool, arg, schema, true, Slot::Path(name))?;
            }
            Some("query") => {
                let req = p["required"].as_bool().unwrap_or(false);
                a.add(tool, name, schema, req, Slot::Query)?;
            }
            // Header parameters (`Idempotency-Key`) have body twins, which tools use.
            Some("header") => {}
            other => {
                return Err(format!(
                    "{}: parameter {name} in {other:?} is not supported",
                    spec.name
                ))
            }
        }
    }
    let body = &op["requestBody"]["content"]["application/json"]["schema"];
    let has_body = body.is_object();
    let mut variants = None;
    if has_body {
        let resolved = resolve(doc, body);
        // A body of several shapes (`oneOf`): its arguments are the union of the shapes'
        // properties, required where every shape requires them, and the shapes themselves
        // stay in the schema so exactly one must match.
        // An optional body (`oneOf: [null, X]`) is the shape X.
        let resolved = match resolved.get("oneOf").and_then(Value::as_array) {
            Some(v) if v.len() == 2 && v.iter().any(|s| s == &json!({"type": "null"})) => {
                let other = v
                    .iter()
                    .find(|s| *s != &json!({"type": "null"}))
                    .expect("two");
                resolve(doc, other)
            }
            _ => resolved,
        };
        let shapes: Vec<Value> = match resolved.get("oneOf").or_else(|| resolved.get("anyOf")) {
            Some(Value::Array(v)) => {
                if !a.slots.is_empty() {
                    return Err(format!(
                        "{}: a body of several shapes with path or query arguments",
                        spec.name
                    ));
                }
                variants = Some(Value::Array(v.clone()));
                v.iter().map(|v| resolve(doc, v)).collect()
            }
            _ => vec![resolved],
        };
        let mut body_props = Map::new();
        let mut body_required: Option<BTreeSet<String>> = None;
        for shape in &shapes {
            let empty = Map::new();
            let props = match shape["properties"].as_object() {
                Some(p) => p,
                None if shape["type"] == "object" => &empty,
                None => return Err(format!("{}: the request body is not an object", spec.name)),
            };
            for (name, schema) in props {
                body_props
                    .entry(name.clone())
                    .or_insert_with(|| schema.clone());
            }
            let req: BTreeSet<String> = shape["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            body_required = Some(match body_required {
                None => req,
                Some(prev) => prev.intersection(&req).cloned().collect(),
            });
        }
        let body_required = body_required.unwrap_or_default();
        for (name, schema) in body_props {
            let req = body_required.contains(&name);
            a.add(tool, name, schema, req, Slot::Body)?;
        }
    }
    let Arguments {
        properties,
        required,
        slots,
    } = a;
    let mut input = json!({
        "type": "object",
        "properties": Value::Object(properties),
        "additionalProperties": false,
    });
    if !required.is_empty() {
        input["required"] = Value::Array(required);
    }
    if let Some(v) = variants {
        input["oneOf"] = v;
    }
    let input = with_defs(doc, input);
    let summary = op["summary"].as_str().unwrap_or_default();
    let detail = op["description"].as_str().unwrap_or_default();
    let mut description = [summary, detail]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    description.push_str(&format!("\n\n(REST: {} {})", spec.method, spec.path));
    Ok(Tool {
        name: spec.name,
        description,
        input_schema: input,
        skill: spec.skill,
        read_only: spec.method == Method::GET,
        route: Some(Route {
            method: spec.method,
            path: spec.path,
            slots,
            has_body,
        }),
    })
}

const COMPONENT_PREFIX: &str = "#/components/schemas/";

/// `schema`, or the component it refers to.
fn resolve(doc: &Value, schema: &Value) -> Value {
    match schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix(COMPONENT_PREFIX))
    {
        Some(name) => resolve(doc, &doc["components"]["schemas"][name]),
        None => schema.clone(),
    }
}

/// `schema` with every component reference pointing into its own `$defs`, which holds each
/// component it needs (transitively).
fn with_defs(doc: &Value, mut schema: Value) -> Value {
    let mut needed = BTreeSet::new();
    rewrite_refs(&mut schema, &mut needed);
    let mut defs = Map::new();
    let mut pending: Vec<String> = needed.into_iter().collect();
    while let Some(name) = pending.pop() {
        if defs.contains_key(&name) {
            continue;
        }
        let mut component = doc["components"]["schemas"][&name].clone();
        let mut more = BTreeSet::new();
        rewrite_refs(&mut component, &mut more);
        defs.insert(name, component);
        pending.extend(more.into_iter().filter(|n| !defs.contains_key(n)));
    }
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs.into_iter().collect());
    }
    schema
}

/// Points every `#/components/schemas/X` reference in `v` at `#/$defs/X`, noting each `X`.
fn rewrite_refs(v: &mut Value, names: &mut BTreeSet<String>) {
    match v {
        Value::Object(obj) => {
            if let Some(Value::String(r)) = obj.get_mut("$ref") {
                if let Some(name) = r.strip_prefix(COMPONENT_PREFIX) {
                    names.insert(name.to_string());
                    *r = format!("#/$defs/{name}");
                }
            }
            for (_, child) in obj.iter_mut() {
                rewrite_refs(child, names);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|c| rewrite_refs(c, names)),
        _ => {}
    }
}

/// `wait_for_events`: the one tool without a REST twin.
fn wait_for_events_tool() -> Tool {
    Tool {
        name: WAIT_FOR_EVENTS,
        description: format!(
            "Waits until there is news for an agent, then returns it: messages in the agent's \
             inbox, tasks created in the workspace's queue, and messages on the given topics, \
             each after the cursor. Returns at once when something is already there, else \
             blocks up to timeout_ms (default {}, at most {}) and returns an empty batch. Pass \
             the returned cursor to the next call: no event is skipped, and at most {} of each \
             kind are returned per call (the cursor then points at the rest). Without a cursor, \
             everything retained is new.",
            super::events::DEFAULT_WAIT_MS,
            super::events::MAX_WAIT_MS,
            super::events::MAX_EVENTS_PER_KIND,
        ),
        input_schema: json!({
            "type": "object",
            "properties": {
                "agent": {
                    "type": "string", "minLength": 1, "maxLength": 128,
                    "description": "The agent whose inbox to watch."
                },
                "cursor": {
                    "type": ["string", "null"], "maxLength": 8192,
                    "description": "The cursor returned by the previous call."
                },
                "topics": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1, "maxLength": 128},
                    "maxItems": super::events::MAX_TOPICS,
                    "description": "Topics whose new messages to return as well."
                },
                "include_tasks": {
                    "type": "boolean", "default": true,
                    "description": "Whether new tasks of the queue count as events."
                },
                "timeout_ms": {
                    "type": "integer", "minimum": 0, "maximum": super::events::MAX_WAIT_MS,
                    "description": "How long to wait for an event, ms."
                }
            },
            "required": ["agent"],
            "additionalProperties": false,
        }),
        skill: EVENTS_SKILL,
        route: None,
        read_only: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let doc = serde_json::to_value(crate::routes::openapi()).unwrap();
        Catalog::build(&doc).unwrap()
    }

    #[test]
    fn every_tool_matches_a_documented_operation_in_name_order() {
        let c = catalog();
        assert!(c.tools().len() >= 30, "{} tools", c.tools().len());
        let names: Vec<_> = c.tools().iter().map(|t| t.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        for t in c.tools() {
            assert_eq!(c.tool(t.name).map(|x| x.name), Some(t.name));
            assert!(!t.description.is_empty(), "{} has no description", t.name);
        }
        assert!(c.tool("no_such_tool").is_none());
    }

    #[test]
    fn schemas_are_closed_objects_whose_references_resolve() {
        for t in catalog().tools() {
            let s = &t.input_schema;
            assert_eq!(s["type"], "object", "{}", t.name);
            assert_eq!(s["additionalProperties"], false, "{}", t.name);
            let text = s.to_string();
            assert!(!text.contains(COMPONENT_PREFIX), "{}: {text}", t.name);
            let mut names = BTreeSet::new();
            collect_defs_refs(s, &mut names);
            for n in names {
                assert!(s["$defs"][&n].is_object(), "{}: $defs lacks {n}", t.name);
            }
        }
    }

    fn collect_defs_refs(v: &Value, names: &mut BTreeSet<String>) {
        match v {
            Value::Object(o) => {
                if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                    names.insert(r.trim_start_matches("#/$defs/").to_string());
                }
                o.values().for_each(|c| collect_defs_refs(c, names));
            }
            Value::Array(a) => a.iter().for_each(|c| collect_defs_refs(c, names)),
            _ => {}
        }
    }

    #[test]
    fn arguments_land_where_the_operation_takes_them() {
        let c = catalog();
        let claim = c.tool("claim_task").unwrap();
        let route = claim.route.as_ref().unwrap();
        assert_eq!(route.slots["task_id"], Slot::Path("id".into()));
        assert_eq!(route.slots["agent"], Slot::Body);
        let required = claim.input_schema["required"].as_array().unwrap();
        assert!(required.contains(&json!("task_id")) && required.contains(&json!("agent")));
        let inbox = c.tool("list_messages").unwrap();
        assert_eq!(inbox.route.as_ref().unwrap().slots["agent"], Slot::Query);
        assert!(!inbox.route.as_ref().unwrap().has_body);
        let publish = c.tool("publish_topic").unwrap();
        assert_eq!(
            publish.route.as_ref().unwrap().slots["topic"],
            Slot::Path("name".into())
        );
    }
}
