//! Accounts and their plans.

use std::fmt;
use std::str::FromStr;

use kiln_core::{KilnError, KilnResult};
use serde::{Deserialize, Serialize};

/// How an account's neuron spend is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// The daily free neuron allocation is enforced.
    Free,
    /// Usage is counted but never refused.
    Paid,
}

impl Plan {
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Paid => "paid",
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Plan {
    type Err = KilnError;

    fn from_str(text: &str) -> KilnResult<Plan> {
        match text.trim().to_ascii_lowercase().as_str() {
            "free" => Ok(Plan::Free),
            "paid" => Ok(Plan::Paid),
            _ => Err(KilnError::bad_input(format!(
                "unknown plan {text:?} (expected free or paid)"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub plan: Plan,
    pub created_at_ms: i64,
}

/// Longest account or token name we keep; names are labels, not documents.
pub(crate) const MAX_NAME_CHARS: usize = 200;

/// A caller-chosen account id: 1..=64 of `[A-Za-z0-9_-]`, so it is safe in URL paths.
pub(crate) fn validate_account_id(id: &str) -> KilnResult<()> {
    let shape_ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if shape_ok {
        Ok(())
    } else {
        Err(KilnError::bad_input(
            "account id must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'",
        ))
    }
}

pub(crate) fn validate_name(what: &str, name: &str) -> KilnResult<()> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(KilnError::bad_input(format!(
            "{what} name must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(())
}

/// 32 lowercase hex characters, the shape of a Cloudflare account id.
pub(crate) fn generate_account_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
