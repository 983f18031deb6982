//! Where this node keeps what a cluster may share: accounts, batches, the AI Gateway, LoRA
//! fine-tunes and Vectorize, each on its embedded default or on the services named by
//! `--postgres-url`, `--redis-url` and `--nats-url`; and how the node names itself to the
//! others.

use std::net::SocketAddr;

use super::*;

impl ServeConfig {
    /// This cluster's name on NATS (`--nats-stream`).
    fn nats_stream(&self) -> String {
        self.nats_stream
            .clone()
            .unwrap_or_else(|| kiln_nats::DEFAULT_STREAM.to_owned())
    }

    /// Where this node keeps its place in the shared Vectorize stream: with the index files
    /// that place describes (the store reads only directories there).
    pub fn vectorize_log_options(&self) -> kiln_nats::VectorizeLogOptions {
        kiln_nats::VectorizeLogOptions {
            stream: self.nats_stream(),
            position_file: self.vectorize_dir().join("shared-log.position"),
            max_part_bytes: None,
        }
    }

    /// The NATS subject the nodes of this cluster announce themselves on: named after the
    /// cluster's stream, so clusters sharing one NATS server never meet.
    pub fn nodes_subject(&self) -> String {
        format!("kiln.nodes.{}", self.nats_stream().to_lowercase())
    }

    /// The AI Gateway: one SQLite file, or with --postgres-url shared by the cluster (objects,
    /// logs and analytics in PostgreSQL; the response cache in Redis when --redis-url is set,
    /// under the --redis-key-prefix followed by `gw:`), with this node's write journal beside
    /// where its SQLite file would be.
    pub fn gateway_store(&self) -> kiln_gateway::GatewayDb {
        let Some(url) = &self.postgres_url else {
            return kiln_gateway::GatewayDb::Sqlite(self.gateway_db());
        };
        let redis_prefix = match &self.redis_key_prefix {
            Some(prefix) => format!("{prefix}gw:"),
            None => kiln_gateway::DEFAULT_REDIS_PREFIX.to_owned(),
        };
        kiln_gateway::GatewayDb::Shared {
            postgres_url: url.clone(),
            redis_url: self.redis_url.clone(),
            redis_prefix,
            journal_dir: self.gateway_db().with_extension("shared-journal.d"),
        }
    }

    /// LoRA fine-tunes: files in the data dir, or PostgreSQL shared by a cluster (adapter
    /// files then cached in the data dir on first use).
    pub fn finetune_store(&self) -> kiln_finetune::FinetuneDb {
        match &self.postgres_url {
            Some(url) => kiln_finetune::FinetuneDb::Postgres {
                url: url.clone(),
                cache: self.data_dir().join("finetunes-cache"),
            },
            None => kiln_finetune::FinetuneDb::Files(self.data_dir().join("finetunes")),
        }
    }

    /// Where accounts live: connects to PostgreSQL and applies its migrations when
    /// --postgres-url is set, else names the SQLite file.
    pub fn accounts_store(&self) -> anyhow::Result<kiln_accounts::AccountsDb> {
        match &self.postgres_url {
            Some(url) => kiln_accounts::AccountsDb::postgres(url)
                .map_err(|error| anyhow::anyhow!("--postgres-url: {}", error.message)),
            None => Ok(kiln_accounts::AccountsDb::Sqlite(self.accounts_db())),
        }
    }

    /// Where the batch queue lives: the --postgres-url database when set (claims are leases, so
    /// a dead node's items run on another), else the SQLite file.
    pub fn batch_store(&self) -> anyhow::Result<kiln_batch::BatchDb> {
        Ok(match &self.postgres_url {
            Some(url) => kiln_batch::BatchDb::postgres(url, &self.node_name()?),
            None => kiln_batch::BatchDb::Sqlite(self.batch_db()),
        })
    }

    /// `--advertise-url`, or the listening address (the host name when it is every address).
    pub fn advertise_url(&self, listening: SocketAddr) -> anyhow::Result<String> {
        if let Some(url) = &self.advertise_url {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "--advertise-url must be an http:// or https:// URL; got {url:?}"
            );
            return Ok(url.trim_end_matches('/').to_owned());
        }
        if listening.ip().is_unspecified() {
            return Ok(format!("http://{}:{}", self.node_name()?, listening.port()));
        }
        Ok(format!("http://{listening}"))
    }

    /// `--node-name`, or the host name (a Kubernetes pod's name), or `kiln`.
    pub fn node_name(&self) -> anyhow::Result<String> {
        let name = match &self.node_name {
            Some(name) => name.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|host| host.trim().to_owned())
                .ok()
                .filter(|host| is_node_name(host))
                .unwrap_or_else(|| "kiln".to_owned()),
        };
        anyhow::ensure!(
            is_node_name(&name),
            "--node-name must be 1 to 64 of A-Z a-z 0-9 . _ -; got {name:?}"
        );
        Ok(name)
    }

    /// The shared rate-limit windows of `--redis-url`, if set (nothing is dialled yet).
    pub fn redis_limits(&self) -> anyhow::Result<Option<kiln_accounts::RedisLimits>> {
        let Some(url) = &self.redis_url else {
            return Ok(None);
        };
        let prefix = self
            .redis_key_prefix
            .as_deref()
            .unwrap_or(kiln_accounts::RedisLimits::DEFAULT_PREFIX);
        kiln_accounts::RedisLimits::new(url, prefix)
            .map(Some)
            .map_err(|error| anyhow::anyhow!("--redis-url: {error}"))
    }
}
