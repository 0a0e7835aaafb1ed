//! The MCP listener in the API documentation (`/openapi.json`, `/docs`): its endpoints
//! (`/mcp`, `/servers/{name}/mcp`), the gateway's tools with the schemas of their arguments, and
//! the OAuth endpoints when authentication is on. Those routes are served by the other listener
//! and speak JSON-RPC, not REST, so they are added to the generated document here, each path
//! with a `servers` entry naming the MCP listener, under tags of their own.
//!
//! The tools' schemas come from the same definitions `tools/list` answers with, so the page
//! cannot drift from what the gateway serves.

use serde_json::{Map, Value, json};

/// Tag of the MCP endpoints.
pub const MCP_TAG: &str = "MCP gateway (port 8001)";
/// Tag of the OAuth endpoints.
pub const OAUTH_TAG: &str = "OAuth (port 8001)";

/// Adds the MCP listener to `document`: `gateway` is its public base URL; `callback` the path
/// of the OAuth callback when authentication is on.
pub fn extend(document: &mut Value, gateway: &str, callback: Option<&str>) {
    let tools = crate::mcp::tools::RegistryTools::catalog();
    let mut schemas = Map::new();
    let mut calls = Vec::new();
    let mut listing = String::new();
    for tool in &tools {
        let name = tool.name.as_ref();
        let mut arguments = Value::Object((*tool.input_schema).clone());
        hoist_definitions(&mut arguments, &mut schemas);
        let arguments_schema = format!("tool.{name}.arguments");
        schemas.insert(arguments_schema.clone(), arguments);
        let call_schema = format!("tool.{name}.call");
        schemas.insert(
            call_schema.clone(),
            json!({
                "type": "object",
                "description": format!("tools/call of `{name}`"),
                "required": ["jsonrpc", "id", "method", "params"],
                "properties": {
                    "jsonrpc": { "const": "2.0" },
                    "id": { "type": ["integer", "string"] },
                    "method": { "const": "tools/call" },
                    "params": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": { "const": name },
                            "arguments": { "$ref": format!("#/components/schemas/{arguments_schema}") },
                        },
                    },
                },
            }),
        );
        calls.push(json!({ "$ref": format!("#/components/schemas/{call_schema}") }));
        listing.push_str(&format!(
            "\n- `{name}`: {}",
            tool.description.as_deref().unwrap_or("")
        ));
    }
    schemas.insert(
        "JsonRpcMessage".to_owned(),
        json!({
            "type": "object",
            "description": "Any JSON-RPC 2.0 message of the MCP protocol (request, notification or response), or a batch of them",
            "required": ["jsonrpc"],
            "properties": {
                "jsonrpc": { "const": "2.0" },
                "id": { "type": ["integer", "string"] },
                "method": { "type": "string", "examples": ["initialize", "tools/list", "tools/call"] },
                "params": { "type": "object" },
            },
        }),
    );

    let servers = json!([{ "url": gateway, "description": "the MCP listener" }]);
    let session = json!([
        { "name": "Mcp-Session-Id", "in": "header", "required": false, "schema": { "type": "string" },
          "description": "The session, after `initialize` (2025 protocol versions)" },
        { "name": "Mcp-Protocol-Version", "in": "header", "required": false, "schema": { "type": "string" },
          "description": "2025-06-18, 2025-11-25 or 2026-07-28" },
    ]);
    let answers = json!({
        "200": { "description": "The JSON-RPC answer, as JSON or as an event stream (SSE)",
                 "content": { "application/json": {}, "text/event-stream": {} } },
        "202": { "description": "A notification or response was accepted" },
        "401": { "description": "A bearer token is required (authentication on); `WWW-Authenticate` names the protected-resource metadata" },
        "4XX": { "description": "Refused: a JSON-RPC error body with the request's id, the status and the cause in `error.data`",
                 "content": { "application/json": {} } },
    });
    let mcp_operations = |summary: &str, description: &str, body: Value| {
        json!({
            "servers": servers,
            "post": {
                "tags": [MCP_TAG],
                "summary": summary,
                "description": description,
                "parameters": session,
                "requestBody": { "required": true, "content": { "application/json": { "schema": body } } },
                "responses": answers,
            },
            "get": {
                "tags": [MCP_TAG],
                "summary": "Open the server-to-client event stream of a session",
                "parameters": session,
                "responses": { "200": { "description": "An event stream", "content": { "text/event-stream": {} } } },
            },
            "delete": {
                "tags": [MCP_TAG],
                "summary": "End a session",
                "parameters": session,
                "responses": { "204": { "description": "Ended" } },
            },
        })
    };
    let mut any_message = calls.clone();
    any_message.push(json!({ "$ref": "#/components/schemas/JsonRpcMessage" }));
    let mut paths = Map::new();
    paths.insert(
        "/mcp".to_owned(),
        mcp_operations(
            "The gateway's own MCP server: the registry tools",
            &format!(
                "Streamable HTTP MCP endpoint (`{gateway}/mcp`). Its tools:{listing}\n\nEach tool's arguments are in the schema `tool.NAME.arguments`."
            ),
            json!({ "oneOf": any_message }),
        ),
    );
    let mut server = mcp_operations(
        "A registered server, through the gateway",
        "Every MCP message for the registered server `name`, checked by the policy chain (roles, rate limits, audit) and forwarded; answers stream back as they arrive.",
        json!({ "$ref": "#/components/schemas/JsonRpcMessage" }),
    );
    for method in ["post", "get", "delete"] {
        if let Some(parameters) = server[method]["parameters"].as_array_mut() {
            parameters.insert(
                0,
                json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" },
                        "description": "Server name" }),
            );
        }
    }
    paths.insert("/servers/{name}/mcp".to_owned(), server);
    if let Some(callback) = callback {
        for (path, method, summary) in [
            (
                "/.well-known/oauth-protected-resource/mcp",
                "get",
                "Protected-resource metadata of /mcp (RFC 9728)",
            ),
            (
                "/.well-known/oauth-authorization-server",
                "get",
                "Authorization-server metadata (RFC 8414)",
            ),
            (
                "/.well-known/jwks.json",
                "get",
                "The keys that sign mreg's access tokens",
            ),
            (
                "/register",
                "post",
                "Dynamic client registration (RFC 7591)",
            ),
            (
                "/authorize",
                "get",
                "Start a sign-in (PKCE S256 required; consent, then the identity provider)",
            ),
            (
                callback,
                "get",
                "Where the identity provider returns the user",
            ),
            (
                "/token",
                "post",
                "Trade a code (with its PKCE verifier) or a refresh token for tokens",
            ),
            ("/revoke", "post", "Revoke a token (RFC 7009)"),
        ] {
            let entry = paths
                .entry(path.to_owned())
                .or_insert_with(|| json!({ "servers": servers }));
            entry[method] = json!({
                "tags": [OAUTH_TAG],
                "summary": summary,
                "responses": { "default": { "description": "As the RFC says; errors are RFC 6749 JSON" } },
            });
        }
    }

    if let Some(object) = document["paths"].as_object_mut() {
        object.extend(paths);
    }
    if document["components"]["schemas"].is_null() {
        document["components"]["schemas"] = json!({});
    }
    if let Some(object) = document["components"]["schemas"].as_object_mut() {
        object.extend(schemas);
    }
    if let Some(tags) = document["tags"].as_array_mut() {
        tags.push(json!({ "name": MCP_TAG, "description": format!("The MCP listener at {gateway}: the gateway's own tools and every registered server, over MCP streamable HTTP (JSON-RPC)") }));
        if callback.is_some() {
            tags.push(json!({ "name": OAUTH_TAG, "description": "The OAuth 2.1 authorization server in front of the identity provider" }));
        }
    }
}

/// Moves a schema's `$defs` into `schemas` and points its references there, so that the
/// schema can live in `#/components/schemas`.
fn hoist_definitions(schema: &mut Value, schemas: &mut Map<String, Value>) {
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
        if let Some(Value::Object(definitions)) = object.remove("$defs") {
            for (name, mut definition) in definitions {
                rewrite_refs(&mut definition);
                schemas.insert(name, definition);
            }
        }
    }
    rewrite_refs(schema);
}

fn rewrite_refs(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(target)) = object.get_mut("$ref")
                && let Some(name) = target.strip_prefix("#/$defs/")
            {
                *target = format!("#/components/schemas/{name}");
            }
            object.values_mut().for_each(rewrite_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn definitions_move_into_components_and_references_follow() {
        let mut schemas = serde_json::Map::new();
        let mut schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "properties": { "a": { "$ref": "#/$defs/A" } },
            "$defs": { "A": { "properties": { "b": { "$ref": "#/$defs/B" } } }, "B": {} },
        });
        super::hoist_definitions(&mut schema, &mut schemas);
        assert_eq!(
            schema,
            json!({ "properties": { "a": { "$ref": "#/components/schemas/A" } } })
        );
        assert_eq!(
            schemas["A"]["properties"]["b"]["$ref"],
            "#/components/schemas/B"
        );
    }
}
