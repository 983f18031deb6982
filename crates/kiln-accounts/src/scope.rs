//! What a token may do. Names are stable: they are stored in SQLite and typed on the CLI.

use std::fmt;
use std::str::FromStr;

use kiln_core::{KilnError, KilnResult};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Run models, search the catalog, read usage, batch.
    #[serde(rename = "workers-ai:read")]
    WorkersAiRead,
    /// Create fine-tunes and upload their assets.
    #[serde(rename = "workers-ai:edit")]
    WorkersAiEdit,
    /// Read gateway objects, logs and analytics.
    #[serde(rename = "ai-gateway:read")]
    AiGatewayRead,
    /// Gateway CRUD, log patch/delete, custom providers.
    #[serde(rename = "ai-gateway:edit")]
    AiGatewayEdit,
    /// Call an authenticated gateway.
    #[serde(rename = "ai-gateway:run")]
    AiGatewayRun,
    /// Describe, list, query and getByIds on indexes.
    #[serde(rename = "vectorize:read")]
    VectorizeRead,
    /// Create/delete indexes, insert/upsert/deleteByIds, metadata index changes.
    #[serde(rename = "vectorize:edit")]
    VectorizeEdit,
    /// List, create and revoke the account's API tokens (never with scopes the token itself
    /// lacks).
    #[serde(rename = "api-tokens:edit")]
    ApiTokensEdit,
}

impl Scope {
    pub const ALL: [Scope; 8] = [
        Scope::WorkersAiRead,
        Scope::WorkersAiEdit,
        Scope::AiGatewayRead,
        Scope::AiGatewayEdit,
        Scope::AiGatewayRun,
        Scope::VectorizeRead,
        Scope::VectorizeEdit,
        Scope::ApiTokensEdit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::WorkersAiRead => "workers-ai:read",
            Scope::WorkersAiEdit => "workers-ai:edit",
            Scope::AiGatewayRead => "ai-gateway:read",
            Scope::AiGatewayEdit => "ai-gateway:edit",
            Scope::AiGatewayRun => "ai-gateway:run",
            Scope::VectorizeRead => "vectorize:read",
            Scope::VectorizeEdit => "vectorize:edit",
            Scope::ApiTokensEdit => "api-tokens:edit",
        }
    }

    /// The read scope an edit scope implies, if any.
    pub fn implied_read(self) -> Option<Scope> {
        match self {
            Scope::WorkersAiEdit => Some(Scope::WorkersAiRead),
            Scope::AiGatewayEdit => Some(Scope::AiGatewayRead),
            Scope::VectorizeEdit => Some(Scope::VectorizeRead),
            _ => None,
        }
    }

    /// Whether holding `self` grants `wanted`.
    pub fn grants(self, wanted: Scope) -> bool {
        self == wanted || self.implied_read() == Some(wanted)
    }

    /// A comma-separated list (`workers-ai:read, vectorize:edit`), or `all`. The result is
    /// deduplicated and in [`Scope::ALL`] order; an empty list is refused.
    pub fn parse_list(text: &str) -> KilnResult<Vec<Scope>> {
        let mut scopes = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item.eq_ignore_ascii_case("all") {
                scopes.extend(Scope::ALL);
            } else {
                scopes.push(item.parse()?);
            }
        }
        if scopes.is_empty() {
            return Err(KilnError::bad_input("at least one scope is required"));
        }
        scopes.sort();
        scopes.dedup();
        Ok(scopes)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = KilnError;

    fn from_str(text: &str) -> KilnResult<Scope> {
        let text = text.trim();
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                KilnError::bad_input(format!(
                    "unknown scope {text:?} (expected one of: all, {})",
                    known.join(", ")
                ))
            })
    }
}

/// A valid token lacked the scope a route needs (HTTP 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingScope {
    pub scope: Scope,
}

impl fmt::Display for MissingScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "this API token lacks the {} permission", self.scope)
    }
}

impl std::error::Error for MissingScope {}
