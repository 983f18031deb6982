//! API token secrets: their shape, generation and hashing, and what a token is allowed.
//!
//! A secret is `kiln_<id>_<random>`: `id` is 16 lowercase hex characters (the row's key, not
//! secret), `random` is 43 alphanumeric characters from a CSPRNG (43 × log2(62) ≈ 256.03 bits).
//! Only sha256 of the whole secret is stored.

use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::scope::{MissingScope, Scope};

const PREFIX: &str = "kiln_";
const ID_LEN: usize = 16;
const RANDOM_LEN: usize = 43;
const SECRET_LEN: usize = PREFIX.len() + ID_LEN + 1 + RANDOM_LEN;

/// A token as listed and as `authenticate` returns it. Holds nothing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at_ms: i64,
    pub revoked: bool,
}

impl TokenInfo {
    /// Whether this token may act with `scope` (an edit scope implies its read scope).
    pub fn allows(&self, scope: Scope) -> bool {
        !self.revoked && self.scopes.iter().any(|held| held.grants(scope))
    }

    /// [`TokenInfo::allows`] as a `Result`, for `?` in handlers.
    pub fn require(&self, scope: Scope) -> Result<(), MissingScope> {
        if self.allows(scope) {
            Ok(())
        } else {
            Err(MissingScope { scope })
        }
    }
}

pub(crate) type SecretHash = [u8; 32];

/// A fresh (id, secret) pair.
pub(crate) fn generate_secret() -> (String, String) {
    let id = hex::encode(rand::random::<[u8; ID_LEN / 2]>());
    // rand::rng() is a CSPRNG (ChaCha, seeded and reseeded from the OS).
    let random = Alphanumeric.sample_string(&mut rand::rng(), RANDOM_LEN);
    let secret = format!("{PREFIX}{id}_{random}");
    (id, secret)
}

/// The token id inside a well-formed secret; `None` for anything else.
pub(crate) fn token_id_of(secret: &str) -> Option<&str> {
    if secret.len() != SECRET_LEN {
        return None;
    }
    let rest = secret.strip_prefix(PREFIX)?;
    let (id, random) = (rest.get(..ID_LEN)?, rest.get(ID_LEN..)?);
    let random = random.strip_prefix('_')?;
    let id_ok = id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let random_ok = random.bytes().all(|b| b.is_ascii_alphanumeric());
    (id_ok && random_ok).then_some(id)
}

pub(crate) fn hash_secret(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// Constant-time, so response timing says nothing about how much of a guess was right.
pub(crate) fn hash_matches(stored: &SecretHash, secret: &str) -> bool {
    bool::from(stored.ct_eq(&hash_secret(secret)))
}

/// Scopes as stored: comma-separated names.
pub(crate) fn scopes_to_text(scopes: &[Scope]) -> String {
    let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    names.join(",")
}

/// Scopes as stored, skipping names this build does not know (a newer build wrote them) so
/// one odd row cannot lock everyone out.
pub(crate) fn scopes_from_text(text: &str) -> Vec<Scope> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .filter_map(|name| match name.parse() {
            Ok(scope) => Some(scope),
            Err(_) => {
                tracing::warn!(scope = name, "ignoring unknown stored token scope");
                None
            }
        })
        .collect()
}
