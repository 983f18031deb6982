//! What a model request may do and what it costs: [`Platform::admit`] applies the per-task
//! requests-per-minute limit and the daily free allocation before any work starts; the
//! [`Meter`] it returns turns the request's usage into neurons (catalog rates, spec §7) and
//! books them for the account and UTC day.

use std::sync::Arc;

use kiln_accounts::{default_limit_per_minute, Refused, Usage as Booked};
use kiln_catalog::{CatalogEntry, NeuronRates};
use kiln_core::{ErrorKind, KilnError, KilnResult, Task, Usage};

use super::{Caller, Platform};

/// Token counts of a response whose output has no `usage` field (embeddings), carried in the
/// response's extensions for Kiln's own callers (a batch item's `usage`), never on the wire.
#[derive(Debug, Clone, Copy)]
pub struct ReportedUsage(pub Usage);

/// Books one request's cost; cheap to clone into a stream.
#[derive(Clone)]
pub struct Meter {
    platform: Arc<Platform>,
    account: String,
    /// The model id the caller named: usage is reported under it.
    model: String,
    /// The catalog rates it is priced at (its own, or its task's representative's).
    rates: Option<&'static NeuronRates>,
}

impl Meter {
    /// The account the request is booked to.
    pub fn account(&self) -> &str {
        &self.account
    }
}

impl Platform {
    /// Admits one request of `caller` for `model` (`priced` is the catalog entry whose rates
    /// apply) or refuses it with 429: 3021 past the minute's limit, 3036 past a free account's
    /// daily neurons. Both carry `retry-after`.
    pub fn admit(
        self: &Arc<Self>,
        caller: &Caller,
        task: Task,
        model: &str,
        priced: Option<&'static CatalogEntry>,
    ) -> KilnResult<Meter> {
        let account = caller.account.as_str();
        if caller.rate_limited && self.rate_limits_apply() {
            let (key, limit) = self.limit_for(task, model, priced);
            self.limiter.check_and_count(account, &key, limit).map_err(
                |refused| match refused {
                    Refused::Limited(refused) => KilnError::new(
                        ErrorKind::RateLimited,
                        format!(
                            "rate limiting: inference request per min rate reached ({} requests \
                             per minute for {key})",
                            refused.limit
                        ),
                    )
                    .with_retry_after(refused.retry_after_secs),
                    // Never admitted uncounted: a cluster's limits would silently vanish.
                    Refused::Unavailable(_) => KilnError::new(
                        ErrorKind::LimiterUnavailable,
                        ErrorKind::LimiterUnavailable.default_message(),
                    )
                    .with_retry_after(1),
                },
            )?;
        }
        let plan = self
            .accounts
            .account(account)
            .ok()
            .flatten()
            .map_or(self.settings.default_plan, |account| account.plan);
        self.ledger
            .check_allowance(account, plan, self.settings.free_neurons_per_day)
            .map_err(|exhausted| {
                let now = self.clock.now_unix_ms();
                let seconds = (exhausted.resets_at_ms - now).max(0) as u64 / 1000;
                KilnError::new(
                    ErrorKind::AccountLimited,
                    format!(
                        "You have used up your daily free allocation of {} neurons, please \
                         upgrade to Cloudflare's Workers Paid plan if you would like to continue \
                         usage (it resets at 00:00 UTC)",
                        exhausted.allocation
                    ),
                )
                .with_retry_after(seconds + 1)
            })?;
        Ok(Meter {
            platform: self.clone(),
            account: account.to_owned(),
            model: model.to_owned(),
            rates: priced.and_then(|entry| entry.neurons.as_ref()),
        })
    }

    /// `--rate-limits` when given; else only while tokens are required, since in open mode
    /// there is one user, whom a per-account limit would only throttle.
    pub fn rate_limits_apply(&self) -> bool {
        self.settings.rate_limits.unwrap_or_else(|| !self.is_open())
    }

    /// The window key and its requests per minute: a configured limit for the model or its
    /// task, else Workers AI's (which has per-model exceptions, counted per model).
    fn limit_for(
        &self,
        task: Task,
        model: &str,
        priced: Option<&'static CatalogEntry>,
    ) -> (String, u32) {
        let overrides = &self.settings.rpm_overrides;
        let names = [Some(model), priced.map(|entry| entry.name.as_str())];
        for name in names.into_iter().flatten() {
            if let Some(limit) = overrides.get(name) {
                return (name.to_owned(), *limit);
            }
        }
        if let Some(limit) = overrides.get(task.name()) {
            return (task.name().to_owned(), *limit);
        }
        let name = priced.map_or(model, |entry| entry.name.as_str());
        let limit = default_limit_per_minute(task, name);
        if limit == default_limit_per_minute(task, "") {
            (task.name().to_owned(), limit)
        } else {
            (name.to_owned(), limit)
        }
    }
}

impl Meter {
    /// Books a text request by its tokens; returns its neurons (`usage.neurons`).
    pub fn charge_tokens(&self, usage: &Usage) -> f64 {
        let neurons = self.rates.map_or(0.0, |rates| {
            rates.neurons_for_tokens(
                u64::from(usage.prompt_tokens),
                u64::from(usage.cached_tokens),
                u64::from(usage.completion_tokens),
            )
        });
        self.book(Booked {
            requests: 1,
            input_tokens: u64::from(usage.prompt_tokens),
            output_tokens: u64::from(usage.completion_tokens),
            neurons,
        })
    }

    /// Books a request priced per unit other than tokens: `amount` of the first rate whose unit
    /// mentions `unit` (`audio minute`, `characters`, `images`, …). Returns its neurons.
    pub fn charge_units(&self, unit: &str, amount: f64) -> f64 {
        let neurons = self
            .rates
            .and_then(|rates| rates.units.iter().find(|rate| rate.unit.contains(unit)))
            .map_or(0.0, |rate| rate.neurons * amount / unit_size(&rate.unit));
        self.book(Booked {
            requests: 1,
            neurons,
            ..Booked::default()
        })
    }

    fn book(&self, usage: Booked) -> f64 {
        self.platform
            .ledger
            .record(&self.account, &self.model, &usage);
        usage.neurons
    }
}

/// How many units one price covers: `per M images` is per million, `per 1k characters` per
/// thousand.
fn unit_size(unit: &str) -> f64 {
    if unit.starts_with("per M ") {
        1_000_000.0
    } else if unit.starts_with("per 1k ") {
        1_000.0
    } else {
        1.0
    }
}

/// A usage object with `neurons` added.
pub fn with_neurons(mut usage: serde_json::Value, neurons: f64) -> serde_json::Value {
    if let Some(fields) = usage.as_object_mut() {
        fields.insert("neurons".to_owned(), serde_json::json!(rounded(neurons)));
    }
    usage
}

/// `usage.neurons` as Workers AI reports it: a fraction, not a float's noise.
pub fn rounded(neurons: f64) -> f64 {
    (neurons * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use kiln_accounts::{AccountStore, Plan, SystemClock};

    use super::*;
    use crate::platform::{AuthMode, PlatformSettings};

    fn platform(overrides: &[(&str, u32)]) -> (tempfile::TempDir, Platform) {
        let dir = tempfile::tempdir().expect("temp dir");
        let accounts = Arc::new(AccountStore::open(&dir.path().join("a.db")).expect("db"));
        let settings = PlatformSettings {
            auth: AuthMode::Open,
            rate_limits: Some(true),
            rpm_overrides: overrides
                .iter()
                .map(|(name, limit)| ((*name).to_owned(), *limit))
                .collect::<HashMap<_, _>>(),
            free_neurons_per_day: 10_000.0,
            default_plan: Plan::Paid,
            default_account: "local".into(),
            trust_local_bindings: false,
        };
        let platform = Platform::new(accounts, Arc::new(SystemClock), settings).expect("platform");
        (dir, platform)
    }

    #[test]
    fn limits_come_from_the_model_then_the_task_then_workers_ai() {
        let (_dir, defaults) = platform(&[]);
        let llama = "@cf/meta/llama-3.1-8b-instruct";
        assert_eq!(
            defaults.limit_for(Task::TextGeneration, llama, None),
            ("Text Generation".to_owned(), 300)
        );
        let exception = "@cf/qwen/qwen1.5-14b-chat-awq";
        assert_eq!(
            defaults.limit_for(Task::TextGeneration, exception, None),
            (exception.to_owned(), 150),
            "Workers AI's per-model exceptions are counted per model"
        );
        let (_dir, configured) = platform(&[(llama, 5), ("Text Embeddings", 0)]);
        assert_eq!(
            configured.limit_for(Task::TextGeneration, llama, None),
            (llama.to_owned(), 5)
        );
        assert_eq!(
            configured
                .limit_for(Task::TextEmbeddings, "@cf/baai/bge-small-en-v1.5", None)
                .1,
            0,
            "0 is unlimited"
        );
    }

    #[test]
    fn unset_rate_limits_apply_only_while_tokens_are_required() {
        let (dir, mut platform) = platform(&[]);
        platform.settings.rate_limits = None;
        assert!(!platform.rate_limits_apply(), "open mode");
        platform.settings.auth = AuthMode::Tokens;
        assert!(platform.rate_limits_apply(), "tokens mode");
        platform.settings.auth = AuthMode::Auto;
        assert!(!platform.rate_limits_apply(), "auto mode before any token");
        platform
            .accounts
            .create_account(Some("team"), "team", Plan::Free)
            .expect("account");
        platform
            .accounts
            .create_token("team", "t", &[kiln_accounts::Scope::WorkersAiRead])
            .expect("token");
        assert!(
            platform.rate_limits_apply(),
            "auto mode once a token exists"
        );
        platform.settings.rate_limits = Some(false);
        assert!(!platform.rate_limits_apply(), "--rate-limits false");
        drop(dir);
    }

    #[test]
    fn unit_prices_scale_by_their_unit() {
        assert_eq!(unit_size("per M images"), 1_000_000.0);
        assert_eq!(unit_size("per 1k characters"), 1_000.0);
        assert_eq!(unit_size("per audio minute"), 1.0);
        assert_eq!(rounded(0.123_456_789), 0.123_457);
    }
}
