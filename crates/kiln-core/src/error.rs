//! The one table from error kind to HTTP status and Workers AI error code (spec §1.3).

use std::fmt;

/// What went wrong, independent of transport. The status and code live in [`ERROR_TABLE`] only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Input failed schema validation or a semantic check.
    BadInput,
    /// Invalid data type for base64 input.
    InvalidData,
    /// The body or a required header is missing.
    IncompleteRequest,
    /// The model id is not in the catalog, or the catalog has it but nothing local serves it.
    NoSuchModel,
    /// The model id is malformed.
    InvalidModelId,
    /// The model does not support LoRA inference.
    LoraUnsupported,
    /// A fine-tune's assets are missing or invalid (wrong file, rank, model type, format).
    InvalidFinetune,
    /// The body is larger than the configured limit.
    RequestTooLarge,
    /// The request ran past its deadline.
    Timeout,
    /// The client went away or the request was cancelled.
    Aborted,
    /// Daily free neuron allocation used up.
    AccountLimited,
    /// Queue full, or `rejectIfBusy` and no free slot.
    OutOfCapacity,
    /// Missing or bad credentials.
    Authentication,
    /// Good credentials that do not reach this account or lack the scope for this route.
    Forbidden,
    /// The account's requests per minute for this task (or model) are used up.
    RateLimited,
    /// No route for that URI.
    RouteNotFound,
    /// The route exists but the object it names does not (a gateway, say).
    NotFound,
    /// The object already exists (a gateway id in use).
    Conflict,
    /// A custom provider's settings are invalid (its base URL, say).
    InvalidProvider,
    /// An authenticated gateway got no valid `cf-aig-authorization`.
    GatewayUnauthorized,
    /// The gateway's rate limit is used up for this window.
    GatewayRateLimited,
    /// The gateway could not reach a provider, or no fallback step answered.
    UpstreamFailed,
    /// The provider did not send its first byte within `cf-aig-request-timeout`.
    UpstreamTimeout,
    /// The egress policy refuses the address a provider URL leads to (loopback, private, …).
    EgressRefused,
    /// The request has already passed through this gateway: a provider routes back to it.
    GatewayLoop,
    /// Method exists on the path but not with this verb.
    MethodNotAllowed,
    /// The server is draining before it stops (SIGTERM): its readiness check says so.
    Draining,
    /// The shared rate-limit store (Redis, `--redis-url`) did not answer in time: the request
    /// is refused rather than admitted uncounted.
    LimiterUnavailable,
    /// The shared database of a cluster (PostgreSQL, `--postgres-url`) did not answer in
    /// time: the request is refused rather than served on state that may be stale.
    StorageUnavailable,
    /// In a cluster, the node that serves the requested model did not answer (or no live node
    /// serves it any more): 503 rather than a hang.
    NodeUnavailable,
    /// A bug or an engine failure; never the caller's fault.
    Internal,
}

/// One row of the error table.
pub struct ErrorRow {
    pub kind: ErrorKind,
    pub status: u16,
    pub code: u32,
    /// Used when a call site gives no message of its own.
    pub default_message: &'static str,
}

/// The single source of truth for status codes and Workers AI codes.
pub const ERROR_TABLE: &[ErrorRow] = &[
    row(ErrorKind::BadInput, 400, 5006, "AiError: Bad input"),
    row(
        ErrorKind::InvalidData,
        400,
        5004,
        "Invalid data type for base64 input",
    ),
    row(
        ErrorKind::IncompleteRequest,
        400,
        3003,
        "Request is missing headers or body",
    ),
    row(ErrorKind::NoSuchModel, 400, 5007, "No such model or task"),
    row(
        ErrorKind::InvalidModelId,
        404,
        3042,
        "The model name is invalid",
    ),
    row(
        ErrorKind::LoraUnsupported,
        405,
        5005,
        "The model does not support LoRa inference",
    ),
    row(
        ErrorKind::InvalidFinetune,
        400,
        3039,
        "Finetune is missing required files",
    ),
    row(
        ErrorKind::RequestTooLarge,
        413,
        3006,
        "Request is too large",
    ),
    row(ErrorKind::Timeout, 408, 3007, "Request timeout"),
    row(ErrorKind::Aborted, 408, 3008, "Request was aborted"),
    row(
        ErrorKind::AccountLimited,
        429,
        3036,
        "You have used up your daily free allocation of 10,000 neurons",
    ),
    row(
        ErrorKind::OutOfCapacity,
        429,
        3040,
        "Capacity temporarily exceeded, please try again.",
    ),
    row(
        ErrorKind::Authentication,
        401,
        10000,
        "Authentication error",
    ),
    row(ErrorKind::Forbidden, 403, 10000, "Authentication error"),
    // Observed from Workers AI (cloudflare/ai#657): 429 / 3021.
    row(
        ErrorKind::RateLimited,
        429,
        3021,
        "rate limiting: inference request per min rate reached",
    ),
    row(ErrorKind::RouteNotFound, 404, 7000, "No route for that URI"),
    // AI Gateway management codes (spec §4.14: 1003 duplicate, 1004 not found).
    row(ErrorKind::NotFound, 404, 1004, "Not found"),
    row(ErrorKind::Conflict, 409, 1003, "Already exists"),
    row(ErrorKind::InvalidProvider, 400, 1002, "Invalid provider"),
    // Gateway request codes: 2009 is observed (spec §4.2). Cloudflare documents the 429 but not
    // its code, nor codes for upstream failures: 2003, 2005 and 2006 are Kiln's choice.
    row(ErrorKind::GatewayUnauthorized, 401, 2009, "Unauthorized"),
    row(ErrorKind::GatewayRateLimited, 429, 2003, "Rate limited"),
    row(
        ErrorKind::UpstreamFailed,
        502,
        2005,
        "Failed to get a response from the provider",
    ),
    row(
        ErrorKind::UpstreamTimeout,
        504,
        2006,
        "The provider did not answer in time",
    ),
    // Kiln's own: a refused address is the operator's policy, not a provider failure.
    row(
        ErrorKind::EgressRefused,
        403,
        2007,
        "The egress policy refuses this provider address",
    ),
    row(
        ErrorKind::GatewayLoop,
        508,
        2008,
        "The request has already passed through this gateway",
    ),
    row(
        ErrorKind::MethodNotAllowed,
        405,
        10405,
        "Method not allowed",
    ),
    // Kiln's own: readiness while a SIGTERM drains the server.
    row(
        ErrorKind::Draining,
        503,
        3050,
        "The server is shutting down; send new requests elsewhere",
    ),
    // Kiln's own: the rate-limit store shared by a cluster's nodes is unreachable.
    row(
        ErrorKind::LimiterUnavailable,
        503,
        3051,
        "Rate limits cannot be checked right now; retry shortly",
    ),
    // Kiln's own: the database shared by a cluster's nodes is unreachable.
    row(
        ErrorKind::StorageUnavailable,
        503,
        3052,
        "Shared storage is unreachable right now; retry shortly",
    ),
    // Kiln's own: the cluster node serving the model is gone or not answering.
    row(
        ErrorKind::NodeUnavailable,
        503,
        3053,
        "The node serving this model is unreachable; retry shortly",
    ),
    row(ErrorKind::Internal, 500, 5000, "Internal error"),
];

const fn row(kind: ErrorKind, status: u16, code: u32, default_message: &'static str) -> ErrorRow {
    ErrorRow {
        kind,
        status,
        code,
        default_message,
    }
}

impl ErrorKind {
    fn row(self) -> &'static ErrorRow {
        ERROR_TABLE
            .iter()
            .find(|r| r.kind == self)
            .expect("every ErrorKind has a row in ERROR_TABLE")
    }

    pub fn status(self) -> u16 {
        self.row().status
    }

    pub fn code(self) -> u32 {
        self.row().code
    }

    pub fn default_message(self) -> &'static str {
        self.row().default_message
    }
}

/// An error with its kind and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KilnError {
    pub kind: ErrorKind,
    pub message: String,
    /// Seconds until a refused request may succeed: sent as `retry-after` on 429s.
    pub retry_after_secs: Option<u64>,
}

pub type KilnResult<T> = Result<T, KilnError>;

impl KilnError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_secs = Some(seconds.max(1));
        self
    }

    /// A schema or semantic validation failure, worded as Workers AI words it.
    pub fn bad_input(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::BadInput, format!("AiError: Bad input: {detail}"))
    }

    pub fn no_such_model(model: &str) -> Self {
        Self::new(
            ErrorKind::NoSuchModel,
            format!("No such model {model} or task"),
        )
    }

    pub fn internal(detail: impl fmt::Display) -> Self {
        Self::new(
            ErrorKind::Internal,
            format!("AiError: Internal error: {detail}"),
        )
    }

    pub fn capacity() -> Self {
        Self::new(
            ErrorKind::OutOfCapacity,
            ErrorKind::OutOfCapacity.default_message(),
        )
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    pub fn code(&self) -> u32 {
        self.kind.code()
    }
}

impl fmt::Display for KilnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message)
    }
}

impl std::error::Error for KilnError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_exactly_one_row() {
        let kinds = [
            ErrorKind::BadInput,
            ErrorKind::InvalidData,
            ErrorKind::IncompleteRequest,
            ErrorKind::NoSuchModel,
            ErrorKind::InvalidModelId,
            ErrorKind::LoraUnsupported,
            ErrorKind::InvalidFinetune,
            ErrorKind::RequestTooLarge,
            ErrorKind::Timeout,
            ErrorKind::Aborted,
            ErrorKind::AccountLimited,
            ErrorKind::OutOfCapacity,
            ErrorKind::Authentication,
            ErrorKind::Forbidden,
            ErrorKind::RateLimited,
            ErrorKind::RouteNotFound,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::InvalidProvider,
            ErrorKind::GatewayUnauthorized,
            ErrorKind::GatewayRateLimited,
            ErrorKind::UpstreamFailed,
            ErrorKind::UpstreamTimeout,
            ErrorKind::EgressRefused,
            ErrorKind::GatewayLoop,
            ErrorKind::MethodNotAllowed,
            ErrorKind::Draining,
            ErrorKind::LimiterUnavailable,
            ErrorKind::StorageUnavailable,
            ErrorKind::NodeUnavailable,
            ErrorKind::Internal,
        ];
        for kind in kinds {
            assert_eq!(
                ERROR_TABLE.iter().filter(|r| r.kind == kind).count(),
                1,
                "{kind:?}"
            );
        }
        assert_eq!(ERROR_TABLE.len(), kinds.len());
    }

    #[test]
    fn spec_codes() {
        assert_eq!(
            (ErrorKind::BadInput.status(), ErrorKind::BadInput.code()),
            (400, 5006)
        );
        assert_eq!(
            (
                ErrorKind::NoSuchModel.status(),
                ErrorKind::NoSuchModel.code()
            ),
            (400, 5007)
        );
        assert_eq!(ErrorKind::RequestTooLarge.code(), 3006);
        assert_eq!(
            (ErrorKind::Timeout.status(), ErrorKind::Timeout.code()),
            (408, 3007)
        );
        assert_eq!(
            (
                ErrorKind::OutOfCapacity.status(),
                ErrorKind::OutOfCapacity.code()
            ),
            (429, 3040)
        );
    }
}
