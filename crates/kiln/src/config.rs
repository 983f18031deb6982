//! The one configuration struct: every field is a flag, a `KILN_*` variable and a `kiln.toml` key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use kiln_accounts::Plan;
use kiln_core::InputLimits;
use kiln_http::platform::{AuthMode, PlatformSettings};
use kiln_http::{BrowserPolicy, EgressPolicy, PublicUrl};
use serde::Deserialize;

const BUILT_IN: &str = include_str!("../default-kiln.toml");

/// Settings for `kiln serve`. Unset fields fall back to `kiln.toml`, then to the built-in file.
#[derive(Args, Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Configuration file layered over the built-in defaults [default: ./kiln.toml if present].
    #[arg(long, env = "KILN_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:8787].
    #[arg(long, env = "KILN_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Where models and state live [default: $HOME/.cache/kiln/data].
    #[arg(long, env = "KILN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Other Kiln data directories to take verified model files from before downloading
    /// (a copied or shared cache: offline installs), comma-separated.
    #[arg(long, env = "KILN_MODEL_MIRRORS", value_delimiter = ',')]
    pub model_mirrors: Option<Vec<PathBuf>>,

    /// CPU threads per engine [default: all cores].
    #[arg(long, env = "KILN_THREADS")]
    pub threads: Option<u32>,

    /// Local models to load, comma-separated; empty for none (a router in a cluster)
    /// [default: smollm2-135m-instruct,all-minilm-l6-v2].
    #[arg(long, env = "KILN_MODELS", value_delimiter = ',')]
    pub models: Option<Vec<String>>,

    /// Models fetched on first run but loaded only on their first request, comma-separated
    /// [default: the speech and image models and EmbeddingGemma]. A failed fetch is a warning,
    /// not a failed start.
    #[arg(long, env = "KILN_FETCH", value_delimiter = ',')]
    pub fetch: Option<Vec<String>>,

    /// LLM context window in tokens, per parallel slot [default: the model's, at most 4096].
    #[arg(long, env = "KILN_CONTEXT_SIZE")]
    pub context_size: Option<u32>,

    /// Requests each LLM runs at once (sequence slots sharing one batch); each slot gets the
    /// full context window [default: 4].
    #[arg(long, env = "KILN_PARALLEL")]
    pub parallel: Option<u32>,

    /// Greedy (`temperature: 0`) and seeded requests give the same text whatever else the
    /// server runs or ran: each runs in LLM forward passes of its own, without the prefix
    /// cache. Costs their batching and prefix reuse (README, "Reproducible output")
    /// [default: false].
    #[arg(long, env = "KILN_REPRODUCIBLE", num_args = 0..=1, default_missing_value = "true")]
    pub reproducible: Option<bool>,

    /// Requests that may wait per model for a free slot before new ones get 429 [default: 64].
    #[arg(long, env = "KILN_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,

    /// Seconds before a request ends with 408 [default: 300].
    #[arg(long, env = "KILN_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,

    /// Largest accepted request body in bytes [default: 16 MiB].
    #[arg(long, env = "KILN_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Memory the loaded models may hold together, in MiB; loading another model first unloads
    /// the least recently used idle ones [default: 80% of physical memory].
    #[arg(long, env = "KILN_MEMORY_BUDGET_MIB")]
    pub memory_budget_mib: Option<u64>,

    /// Seconds a model may sit idle before it is unloaded (it loads again on its next request)
    /// [default: never unload].
    #[arg(long, env = "KILN_KEEP_ALIVE_SECS")]
    pub keep_alive_secs: Option<u64>,

    /// The AI Gateway's database (gateways, logs, cache, analytics) [default: DATA_DIR/gateway.db].
    #[arg(long, env = "KILN_GATEWAY_DB")]
    pub gateway_db: Option<PathBuf>,

    /// Bytes the AI Gateway's response cache may hold on disk, in MiB; the oldest entries go
    /// first [default: 1024].
    #[arg(long, env = "KILN_GATEWAY_CACHE_MIB")]
    pub gateway_cache_mib: Option<u64>,

    /// Where Vectorize indexes live [default: DATA_DIR/vectorize].
    #[arg(long, env = "KILN_VECTORIZE_DIR")]
    pub vectorize_dir: Option<PathBuf>,

    /// The account that a Worker's AI binding acts for (its requests name none) [default: local].
    #[arg(long, env = "KILN_BINDING_ACCOUNT")]
    pub binding_account: Option<String>,

    /// Base URL clients reach Kiln at, for the URLs it hands out (a gateway's `getUrl`), e.g.
    /// behind a proxy [default: the request's forwarded host or `Host`, else the listening
    /// address].
    #[arg(long, env = "KILN_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// When requests need an API token: `auto` (open until the first token exists), `open`
    /// (never: a single-user machine) or `tokens` (always) [default: auto].
    #[arg(long, env = "KILN_AUTH")]
    pub auth: Option<AuthMode>,

    /// Accounts, API tokens and usage [default: DATA_DIR/accounts.db].
    #[arg(long, env = "KILN_ACCOUNTS_DB")]
    pub accounts_db: Option<PathBuf>,

    /// PostgreSQL holding accounts, API tokens, the usage ledger, spending limits, the batch
    /// queue and LoRA fine-tunes instead of --accounts-db, --batch-db and DATA_DIR/finetunes,
    /// shared by every Kiln node given the same URL, e.g.
    /// `postgres://kiln:secret@db:5432/kiln`; another schema than `public` with
    /// `?options=-csearch_path%3Dname` (docs/cluster.md) [default: none].
    #[arg(long, env = "KILN_POSTGRES_URL")]
    pub postgres_url: Option<String>,

    /// The durable queue of `?queueRequest=true` batches [default: DATA_DIR/batches.db].
    #[arg(long, env = "KILN_BATCH_DB")]
    pub batch_db: Option<PathBuf>,

    /// Apply Workers AI's per-task requests-per-minute limits per account (`[rpm_limits]` in
    /// kiln.toml overrides them by model id or task name) [default: while API tokens are
    /// required, not in open mode].
    #[arg(long, env = "KILN_RATE_LIMITS", num_args = 0..=1, default_missing_value = "true")]
    pub rate_limits: Option<bool>,

    /// Redis holding the per-minute rate-limit windows, shared exactly by every Kiln node
    /// given the same URL, e.g. `redis://127.0.0.1:6379` (docs/cluster.md). Unreachable Redis:
    /// rate-limited requests get 503 / 3051 [default: none; windows in this process's memory].
    #[arg(long, env = "KILN_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key Kiln writes (several clusters on one Redis) [default: kiln:rl:].
    #[arg(long, env = "KILN_REDIS_KEY_PREFIX")]
    pub redis_key_prefix: Option<String>,

    /// NATS (with JetStream) carrying Vectorize's changes as one stream that every Kiln node
    /// given the same URL applies in order, so any node answers queries, e.g.
    /// `nats://127.0.0.1:4222` (docs/cluster.md) [default: none; indexes on this node only].
    #[arg(long, env = "KILN_NATS_URL")]
    pub nats_url: Option<String>,

    /// This cluster's name on NATS: the JetStream stream of Vectorize's changes, and the
    /// subject its nodes announce themselves on (nodes of one cluster name the same one;
    /// letters, digits, `-` and `_`) [default: KILN_VECTORIZE].
    #[arg(long, env = "KILN_NATS_STREAM")]
    pub nats_stream: Option<String>,

    /// This node's name in a cluster: its directory row and batch claims carry it
    /// (docs/cluster.md); 1 to 64 of A-Z a-z 0-9 . _ - [default: the host name].
    #[arg(long, env = "KILN_NODE_NAME")]
    pub node_name: Option<String>,

    /// Where the other nodes of a cluster reach this node's API, to forward requests for the
    /// models it serves [default: http://LISTEN, or http://HOSTNAME:PORT when listening on
    /// every address].
    #[arg(long, env = "KILN_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// Neurons a free-plan account may spend per UTC day [default: 10000].
    #[arg(long, env = "KILN_FREE_NEURONS_PER_DAY")]
    pub free_neurons_per_day: Option<f64>,

    /// Plan of accounts not made with `kiln accounts create` (e.g. the open-mode account):
    /// `paid` (usage counted, never refused) or `free` [default: paid].
    #[arg(long, env = "KILN_DEFAULT_PLAN")]
    pub default_plan: Option<Plan>,

    /// Hosts, IP addresses or CIDR networks that custom providers and the universal endpoint
    /// may reach although they are loopback, private, link-local or Kiln's own, comma-separated
    /// (e.g. `127.0.0.1,10.0.0.0/8,llm.lan`) [default: none].
    #[arg(long, env = "KILN_EGRESS_ALLOW", value_delimiter = ',')]
    pub egress_allow: Option<Vec<String>>,

    /// Whether custom providers and the universal endpoint may reach public addresses; `false`
    /// limits them to `--egress-allow` (no host name is resolved unless it is listed there)
    /// [default: true].
    #[arg(long, env = "KILN_EGRESS_PUBLIC", num_args = 0..=1, default_missing_value = "true")]
    pub egress_public: Option<bool>,

    /// Seconds a provider call may take to connect [default: 10].
    #[arg(long, env = "KILN_EGRESS_CONNECT_TIMEOUT_SECS")]
    pub egress_connect_timeout_secs: Option<u64>,

    /// Seconds a whole provider call may take, its streamed answer included [default: the
    /// request timeout].
    #[arg(long, env = "KILN_EGRESS_TIMEOUT_SECS")]
    pub egress_timeout_secs: Option<u64>,

    /// Host names requests may address Kiln by, beyond IP addresses, `localhost`, names
    /// without a dot and `--public-url`'s host (a guard against DNS rebinding), comma-separated;
    /// `*` allows any [default: none].
    #[arg(long, env = "KILN_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Option<Vec<String>>,

    /// Browser origins allowed to call Kiln (CORS), comma-separated: `scheme://host[:port]`,
    /// `scheme://host:*` or `*`. Requests from any other `Origin` are refused [default: none;
    /// Kiln's own pages only].
    #[arg(long, env = "KILN_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,

    /// While API tokens are required, let Worker binding routes serve loopback callers without
    /// a token (as the binding account) [default: false: they need a token].
    #[arg(long, env = "KILN_TRUST_LOCAL_BINDINGS", num_args = 0..=1, default_missing_value = "true")]
    pub trust_local_bindings: Option<bool>,

    /// Seconds between a SIGTERM and closing the listener: `GET /readyz` answers 503 meanwhile
    /// while requests are still served, so a load balancer stops sending new ones first
    /// [default: 0]. Requests in flight then get up to the request timeout to finish.
    #[arg(long, env = "KILN_DRAIN_GRACE_SECS")]
    pub drain_grace_secs: Option<u64>,

    /// Do not fetch missing models; fail instead.
    #[arg(long, env = "KILN_OFFLINE", num_args = 0..=1, default_missing_value = "true")]
    pub offline: Option<bool>,

    /// Task name → local model serving every catalog id of that task (file only).
    #[arg(skip)]
    pub task_defaults: BTreeMap<String, String>,

    /// Model id → local model (file only).
    #[arg(skip)]
    pub aliases: BTreeMap<String, String>,

    /// Model id or task name → requests per minute per account, 0 for unlimited (file only).
    #[arg(skip)]
    pub rpm_limits: BTreeMap<String, u32>,

    /// Bounds on inputs that drive work or memory (`[limits.*]` tables, file only).
    #[arg(skip)]
    pub limits: Option<InputLimits>,
}

impl ServeConfig {
    /// Layers `self` (flags and environment) over the config file over the built-in file.
    pub fn resolve(self) -> anyhow::Result<ServeConfig> {
        let built_in: ServeConfig = toml::from_str(BUILT_IN).context("built-in configuration")?;
        let file = match &self.config {
            Some(path) => Some(read_file(path)?),
            None if Path::new("kiln.toml").exists() => Some(read_file(Path::new("kiln.toml"))?),
            None => None,
        };
        let base = match file {
            Some(file) => file.over(built_in),
            None => built_in,
        };
        Ok(self.over(base))
    }

    /// Fields set in `self` win; tables are merged with `self`'s entries winning.
    fn over(self, base: ServeConfig) -> ServeConfig {
        let mut task_defaults = base.task_defaults;
        task_defaults.extend(self.task_defaults);
        let mut aliases = base.aliases;
        aliases.extend(self.aliases);
        let mut rpm_limits = base.rpm_limits;
        rpm_limits.extend(self.rpm_limits);
        ServeConfig {
            config: self.config.or(base.config),
            listen: self.listen.or(base.listen),
            data_dir: self.data_dir.or(base.data_dir),
            model_mirrors: self.model_mirrors.or(base.model_mirrors),
            threads: self.threads.or(base.threads),
            models: self.models.or(base.models),
            fetch: self.fetch.or(base.fetch),
            context_size: self.context_size.or(base.context_size),
            parallel: self.parallel.or(base.parallel),
            reproducible: self.reproducible.or(base.reproducible),
            queue_capacity: self.queue_capacity.or(base.queue_capacity),
            request_timeout_secs: self.request_timeout_secs.or(base.request_timeout_secs),
            max_body_bytes: self.max_body_bytes.or(base.max_body_bytes),
            memory_budget_mib: self.memory_budget_mib.or(base.memory_budget_mib),
            keep_alive_secs: self.keep_alive_secs.or(base.keep_alive_secs),
            gateway_db: self.gateway_db.or(base.gateway_db),
            binding_account: self.binding_account.or(base.binding_account),
            public_url: self.public_url.or(base.public_url),
            vectorize_dir: self.vectorize_dir.or(base.vectorize_dir),
            gateway_cache_mib: self.gateway_cache_mib.or(base.gateway_cache_mib),
            offline: self.offline.or(base.offline),
            drain_grace_secs: self.drain_grace_secs.or(base.drain_grace_secs),
            egress_allow: self.egress_allow.or(base.egress_allow),
            egress_public: self.egress_public.or(base.egress_public),
            egress_connect_timeout_secs: self
                .egress_connect_timeout_secs
                .or(base.egress_connect_timeout_secs),
            egress_timeout_secs: self.egress_timeout_secs.or(base.egress_timeout_secs),
            allowed_hosts: self.allowed_hosts.or(base.allowed_hosts),
            cors_origins: self.cors_origins.or(base.cors_origins),
            trust_local_bindings: self.trust_local_bindings.or(base.trust_local_bindings),
            auth: self.auth.or(base.auth),
            accounts_db: self.accounts_db.or(base.accounts_db),
            postgres_url: self.postgres_url.or(base.postgres_url),
            batch_db: self.batch_db.or(base.batch_db),
            rate_limits: self.rate_limits.or(base.rate_limits),
            redis_url: self.redis_url.or(base.redis_url),
            redis_key_prefix: self.redis_key_prefix.or(base.redis_key_prefix),
            nats_url: self.nats_url.or(base.nats_url),
            nats_stream: self.nats_stream.or(base.nats_stream),
            node_name: self.node_name.or(base.node_name),
            advertise_url: self.advertise_url.or(base.advertise_url),
            free_neurons_per_day: self.free_neurons_per_day.or(base.free_neurons_per_day),
            default_plan: self.default_plan.or(base.default_plan),
            task_defaults,
            aliases,
            rpm_limits,
            limits: self.limits.or(base.limits),
        }
    }

    pub fn limits(&self) -> InputLimits {
        self.limits.clone().unwrap_or_default()
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8787)))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(kiln_store::default_data_dir)
    }

    /// The model store under [`Self::data_dir`], with the configured mirrors.
    pub fn model_store(&self) -> kiln_store::ModelStore {
        kiln_store::ModelStore::new(self.data_dir())
            .with_mirrors(self.model_mirrors.clone().unwrap_or_default())
    }

    pub fn threads(&self) -> u32 {
        self.threads
            .filter(|&t| t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u32))
    }

    /// Empty names are dropped: `--models ""` (`KILN_MODELS=`) loads none, a pure router in a
    /// cluster.
    pub fn models(&self) -> Vec<String> {
        named(&self.models)
    }

    pub fn fetch(&self) -> Vec<String> {
        named(&self.fetch)
    }

    pub fn parallel(&self) -> u32 {
        self.parallel.filter(|&p| p > 0).unwrap_or(4)
    }

    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity.unwrap_or(64)
    }

    pub fn drain_grace(&self) -> Duration {
        Duration::from_secs(self.drain_grace_secs.unwrap_or(0))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.unwrap_or(300))
    }

    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes.unwrap_or(16 * 1024 * 1024)
    }

    pub fn memory_budget_bytes(&self) -> Option<u64> {
        let mib = self
            .memory_budget_mib
            .or_else(|| physical_memory_mib().map(|total| total / 10 * 8))?;
        Some(mib.saturating_mul(1024 * 1024))
    }

    pub fn keep_alive(&self) -> Option<Duration> {
        self.keep_alive_secs.map(Duration::from_secs)
    }

    pub fn vectorize_dir(&self) -> PathBuf {
        self.vectorize_dir
            .clone()
            .unwrap_or_else(|| self.data_dir().join("vectorize"))
    }

    pub fn binding_account(&self) -> String {
        self.binding_account
            .clone()
            .unwrap_or_else(|| "local".into())
    }

    pub fn gateway_db(&self) -> PathBuf {
        self.gateway_db
            .clone()
            .unwrap_or_else(|| self.data_dir().join("gateway.db"))
    }

    pub fn gateway_cache_bytes(&self) -> i64 {
        self.gateway_cache_mib
            .unwrap_or(1024)
            .saturating_mul(1024 * 1024) as i64
    }

    pub fn offline(&self) -> bool {
        self.offline.unwrap_or(false)
    }

    pub fn reproducible(&self) -> bool {
        self.reproducible.unwrap_or(false)
    }

    pub fn accounts_db(&self) -> PathBuf {
        self.accounts_db
            .clone()
            .unwrap_or_else(|| self.data_dir().join("accounts.db"))
    }

    pub fn batch_db(&self) -> PathBuf {
        self.batch_db
            .clone()
            .unwrap_or_else(|| self.data_dir().join("batches.db"))
    }

    /// `--public-url` checked and without its trailing `/`, or the address Kiln listens on
    /// (`127.0.0.1` for an unspecified IP, which no client can dial).
    pub fn public_url(&self, listening: SocketAddr) -> anyhow::Result<PublicUrl> {
        if let Some(url) = &self.public_url {
            let trimmed = url.trim().trim_end_matches('/');
            let host = trimmed
                .strip_prefix("http://")
                .or_else(|| trimmed.strip_prefix("https://"));
            anyhow::ensure!(
                host.is_some_and(|host| !host.is_empty() && !host.contains(char::is_whitespace)),
                "--public-url must be an http:// or https:// URL, got `{url}`"
            );
            return Ok(PublicUrl::Configured(trimmed.to_owned()));
        }
        let mut dialable = listening;
        if dialable.ip().is_unspecified() {
            dialable.set_ip(if dialable.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        Ok(PublicUrl::Listening(format!("http://{dialable}")))
    }

    /// Where provider calls may go. `own`: the addresses this server answers on.
    pub fn egress_policy(&self, own: Vec<std::net::IpAddr>) -> anyhow::Result<EgressPolicy> {
        let allow = self.egress_allow.clone().unwrap_or_default();
        let mut policy = EgressPolicy::new(&allow, own).map_err(anyhow::Error::msg)?;
        if self.egress_public == Some(false) {
            policy = policy.without_public();
        }
        Ok(policy.with_timeouts(
            Duration::from_secs(self.egress_connect_timeout_secs.unwrap_or(10).max(1)),
            Duration::from_secs(
                self.egress_timeout_secs
                    .map_or_else(|| self.request_timeout().as_secs(), |secs| secs.max(1)),
            ),
        ))
    }

    /// Which hosts and origins browsers may use; `public_url`: this server's own base URL.
    pub fn browser_policy(&self, public_url: &PublicUrl) -> anyhow::Result<BrowserPolicy> {
        let hosts = self.allowed_hosts.clone().unwrap_or_default();
        let origins = self.cors_origins.clone().unwrap_or_default();
        let policy = BrowserPolicy::new(&hosts, &origins).map_err(anyhow::Error::msg)?;
        let base = public_url.base();
        let authority = base
            .split_once("://")
            .map_or(base, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        Ok(policy.with_host(authority))
    }

    pub fn platform_settings(&self) -> PlatformSettings {
        PlatformSettings {
            auth: self.auth.unwrap_or_default(),
            rate_limits: self.rate_limits,
            rpm_overrides: self.rpm_limits.clone().into_iter().collect(),
            free_neurons_per_day: self.free_neurons_per_day.unwrap_or(10_000.0),
            default_plan: self.default_plan.unwrap_or(Plan::Paid),
            default_account: self.binding_account(),
            trust_local_bindings: self.trust_local_bindings.unwrap_or(false),
        }
    }
}

/// `MemTotal` from `/proc/meminfo` (Linux); elsewhere the budget must be set explicitly.
fn physical_memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn is_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn read_file(path: &Path) -> anyhow::Result<ServeConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

mod stores;

/// A list flag's names without the empty ones an empty value (`--fetch ""`) gives.
fn named(list: &Option<Vec<String>>) -> Vec<String> {
    list.iter()
        .flatten()
        .map(|name| name.trim())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests;
