//! [`Operation`]: what the document says about one route, built beside the route itself.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::components::{error_response, schema_ref};

/// The document's sections, one per area of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    WorkersAi,
    OpenAi,
    AiGateway,
    Vectorize,
    Accounts,
    Kiln,
    Console,
}

impl Tag {
    pub const ALL: [Tag; 7] = [
        Tag::WorkersAi,
        Tag::OpenAi,
        Tag::AiGateway,
        Tag::Vectorize,
        Tag::Accounts,
        Tag::Kiln,
        Tag::Console,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tag::WorkersAi => "Workers AI",
            Tag::OpenAi => "OpenAI",
            Tag::AiGateway => "AI Gateway",
            Tag::Vectorize => "Vectorize",
            Tag::Accounts => "Accounts",
            Tag::Kiln => "Kiln",
            Tag::Console => "Console",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Tag::WorkersAi => {
                "The Workers AI REST API (spec §1-§3, §6-§8) and the Worker AI binding's wire \
                 protocol. Answers are `{result, success, errors, messages}` envelopes."
            }
            Tag::OpenAi => {
                "OpenAI-compatible routes under `/v1` and `…/accounts/{account_id}/ai/v1`. \
                 Errors are OpenAI's `{error: {message, type, param, code}}`."
            }
            Tag::AiGateway => {
                "AI Gateway (spec §4): gateway management under `…/ai-gateway`, and the gateway \
                 itself at `/v1/{account_id}/{gateway_id}/…`, which relays provider answers."
            }
            Tag::Vectorize => "Vectorize v2 (spec §5): the REST API and the binding's protocol.",
            Tag::Accounts => "An account's API tokens and usage.",
            Tag::Kiln => "Kiln's own routes: health, metrics, models, this document.",
            Tag::Console => "The browser console's page and assets.",
        }
    }
}

/// Which error body a route answers with. Each surface keeps the shape its clients expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `{result: null, success: false, errors: [{code, message}], messages: []}`.
    WorkersAi,
    /// `{error: {message, type, param, code}}`.
    OpenAi,
    /// The gateway's `{success: false, result: [], error: [...], errors: [...]}`.
    Gateway,
    /// The Worker AI binding's `{internalCode, name, description, message}`; its access check
    /// answers with the Workers AI envelope.
    AiBinding,
    /// The Vectorize binding's `{code, error}`; its access check answers with the envelope.
    VectorizeBinding,
}

/// One operation of the document. Path parameters are derived from the path; everything
/// else is said here.
#[derive(Debug, Clone)]
pub struct Operation {
    pub tag: Tag,
    summary: String,
    description: Option<String>,
    /// Descriptions (and schemas) of path parameters, by name; undescribed ones are strings.
    path_params: BTreeMap<String, Value>,
    /// Query and header parameters, as OpenAPI parameter objects.
    params: Vec<Value>,
    request_body: Option<Value>,
    responses: BTreeMap<String, Value>,
    /// Whether the route takes an API token (in `--auth tokens` mode).
    authenticated: bool,
}

impl Operation {
    pub fn new(tag: Tag, summary: &str) -> Self {
        Self {
            tag,
            summary: summary.to_owned(),
            description: None,
            path_params: BTreeMap::new(),
            params: Vec::new(),
            request_body: None,
            responses: BTreeMap::new(),
            authenticated: false,
        }
    }

    pub fn describe(mut self, text: &str) -> Self {
        self.description = Some(text.to_owned());
        self
    }

    /// Needs a bearer token when the server requires tokens (no token in open mode).
    pub fn authenticated(mut self) -> Self {
        self.authenticated = true;
        self
    }

    pub fn path_param(mut self, name: &str, description: &str) -> Self {
        self.path_params.insert(
            name.to_owned(),
            json!({"description": description, "schema": non_empty_string()}),
        );
        self
    }

    /// A path parameter whose values are limited (an enum, say).
    pub fn path_param_schema(mut self, name: &str, description: &str, schema: Value) -> Self {
        self.path_params.insert(
            name.to_owned(),
            json!({"description": description, "schema": schema}),
        );
        self
    }

    pub fn query(mut self, name: &str, description: &str, schema: Value) -> Self {
        self.params.push(json!({
            "name": name, "in": "query", "required": false,
            "description": description, "schema": schema,
        }));
        self
    }

    pub fn header(mut self, name: &str, description: &str, schema: Value) -> Self {
        self.params.push(json!({
            "name": name, "in": "header", "required": false,
            "description": description, "schema": schema,
        }));
        self
    }

    /// A JSON request body.
    pub fn json_body(self, schema: Value) -> Self {
        self.body(json!({"application/json": {"schema": schema}}), true)
    }

    /// A request body: `content` maps media types to `{schema}`.
    pub fn body(mut self, content: Value, required: bool) -> Self {
        self.request_body = Some(json!({"required": required, "content": content}));
        self
    }

    /// A whole OpenAPI request body object.
    pub fn request_body_object(mut self, body: Value) -> Self {
        self.request_body = Some(body);
        self
    }

    /// A whole OpenAPI response object.
    pub fn response_object(mut self, status: u16, response: Value) -> Self {
        self.responses.insert(status.to_string(), response);
        self
    }

    /// Any status and body: what an upstream provider answered, relayed as it came.
    pub fn relayed(mut self, description: &str) -> Self {
        self.responses.insert(
            "default".to_owned(),
            json!({"description": description, "content": {"*/*": {"schema": {}}}}),
        );
        self
    }

    /// A query parameter the route cannot do without.
    pub fn query_required(mut self, name: &str, description: &str, schema: Value) -> Self {
        self.params.push(json!({
            "name": name, "in": "query", "required": true,
            "description": description, "schema": schema,
        }));
        self
    }

    /// A response: `content` maps media types to `{schema}`, `None` for no body.
    pub fn response(mut self, status: u16, description: &str, content: Option<Value>) -> Self {
        let mut response = json!({"description": description});
        if let Some(content) = content {
            response["content"] = content;
        }
        self.responses.insert(status.to_string(), response);
        self
    }

    /// 200 with a JSON body.
    pub fn ok_json(self, description: &str, schema: Value) -> Self {
        self.response(
            200,
            description,
            Some(json!({"application/json": {"schema": schema}})),
        )
    }

    /// 200 with the Workers AI success envelope around `result`.
    pub fn ok_envelope(self, description: &str, result: Value) -> Self {
        self.ok_json(description, success_envelope(result))
    }

    /// Error answers with `statuses`, in `surface`'s shape; descriptions come from the error
    /// table.
    pub fn errors(mut self, surface: Surface, statuses: &[u16]) -> Self {
        for status in statuses {
            self.responses
                .insert(status.to_string(), error_response(surface, *status));
        }
        self
    }

    /// The OpenAPI operation object for `method` on `path` (axum syntax).
    pub fn to_json(&self, method: &str, path: &str) -> Value {
        let mut params: Vec<Value> = path_params_of(path)
            .into_iter()
            .map(|(name, wildcard)| {
                let mut param = self.path_params.get(&name).cloned().unwrap_or_else(|| {
                    json!({"description": default_param_description(&name), "schema": non_empty_string()})
                });
                if wildcard {
                    let text = param["description"].as_str().unwrap_or_default().to_owned();
                    param["description"] =
                        json!(format!("{text} May contain `/` (the rest of the path)."));
                }
                param["name"] = json!(name);
                param["in"] = json!("path");
                param["required"] = json!(true);
                param
            })
            .collect();
        params.extend(self.params.iter().cloned());
        let mut operation = Map::new();
        operation.insert("tags".into(), json!([self.tag.name()]));
        operation.insert("summary".into(), json!(self.summary));
        operation.insert("operationId".into(), json!(operation_id(method, path)));
        if let Some(description) = &self.description {
            operation.insert("description".into(), json!(description));
        }
        if !params.is_empty() {
            operation.insert("parameters".into(), Value::Array(params));
        }
        if let Some(body) = &self.request_body {
            operation.insert("requestBody".into(), body.clone());
        }
        let responses: Map<String, Value> = self.responses.clone().into_iter().collect();
        operation.insert("responses".into(), Value::Object(responses));
        if self.authenticated {
            // Open mode (the default without tokens) takes no credentials.
            operation.insert("security".into(), json!([{"apiToken": []}, {}]));
        }
        Value::Object(operation)
    }
}

/// `{result, success: true, errors: [], messages}` around `result`.
pub fn success_envelope(result: Value) -> Value {
    json!({
        "type": "object",
        "required": ["result", "success", "errors", "messages"],
        "properties": {
            "result": result,
            "success": {"const": true},
            "errors": {"type": "array", "maxItems": 0},
            "messages": {"type": "array"},
            "result_info": schema_ref("ResultInfo"),
        }
    })
}

pub fn non_empty_string() -> Value {
    json!({"type": "string", "minLength": 1})
}

/// The `{name}` and `{*name}` segments of an axum path, in order, with whether each is a
/// wildcard.
pub fn path_params_of(path: &str) -> Vec<(String, bool)> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| match name.strip_prefix('*') {
            Some(rest) => (rest.to_owned(), true),
            None => (name.to_owned(), false),
        })
        .collect()
}

fn default_param_description(name: &str) -> String {
    match name {
        "account_id" => "The account (any id in open mode).".to_owned(),
        "gateway" | "gateway_id" => "The gateway's id.".to_owned(),
        "index" => "The Vectorize index's name.".to_owned(),
        "id" => "The object's id.".to_owned(),
        other => format!("The `{other}`."),
    }
}

/// `post_client_v4_accounts_account_id_ai_run_model`: unique because (method, path) is.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    let mut separated = false;
    for c in path.chars() {
        if c.is_ascii_alphanumeric() {
            if !separated {
                id.push('_');
                separated = true;
            }
            id.push(c.to_ascii_lowercase());
        } else {
            separated = false;
        }
    }
    // `…/{gateway_id}` and `…/{gateway_id}/` differ only by their last slash.
    if path.ends_with('/') && path.len() > 1 {
        id.push_str("_slash");
    }
    id
}
