//! One gateway request as it is logged (spec §4.6) and counted in analytics (§4.8).

use serde_json::{Map, Value};

/// Everything the gateway knows about one request once it has answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogRecord {
    /// A ULID: sortable by creation time, returned as `cf-aig-log-id`.
    pub id: String,
    pub account: String,
    pub gateway: String,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// `workers-ai`, `custom-{slug}`, `compat`, …
    pub provider: String,
    pub model: String,
    /// The model's task (`Text Generation`, …) when known.
    pub model_type: Option<String>,
    /// The path after the gateway, e.g. `workers-ai/@cf/meta/llama-3.1-8b-instruct`.
    pub path: String,
    /// `universal`, `workers-ai`, `compat`, `provider` or `binding`.
    pub request_type: String,
    pub duration_ms: u64,
    pub status_code: u16,
    pub success: bool,
    pub cached: bool,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// US dollars; `None` when the response carried no token counts.
    pub cost: Option<f64>,
    /// Whether `cost` came from `cf-aig-custom-cost`.
    pub custom_cost: bool,
    /// `cf-aig-metadata` (at most 5 entries, scalar values).
    pub metadata: Option<Map<String, Value>>,
    /// Universal endpoint: which step answered.
    pub step: Option<u32>,
    /// `cf-aig-event-id`.
    pub event_id: Option<String>,
    pub request_content_type: Option<String>,
    pub response_content_type: Option<String>,
    pub user_agent: Option<String>,
    /// The request carried a valid `cf-aig-authorization`.
    pub authentication: bool,
    /// Bodies as sent and received; empty when larger than the log size limit.
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    /// Sizes of the bodies as they were on the wire (even when not stored).
    pub request_size: u64,
    pub response_size: u64,
}
