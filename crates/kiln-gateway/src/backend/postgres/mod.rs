//! The PostgreSQL backend: gateway objects, logs, analytics, (without Redis) the response
//! cache, and the features beside gateways (custom providers, stored keys, datasets,
//! evaluations, dynamic routes) in one database (and schema, from the URL's `search_path`)
//! shared by every node of a cluster.
//!
//! Calls go through a `kiln_postgres::Pool` (its own threads, every call bounded by
//! [`kiln_postgres::CALL_TIMEOUT`]); an unreachable server is 503 / 3052. A gateway change
//! sends `NOTIFY kiln_gateways` from a trigger, so each node drops the gateways it holds in
//! memory (see `GatewayStore::resolve`). Each node's writer commits through a [`PostgresSink`]
//! on a pool of its own, so a long batch never holds up the REST API's reads.

mod analytics;
mod cache;
mod datasets;
mod gateways;
mod logs;
mod providers;
mod routes;
mod schema;
mod sink;

use std::fmt::Write as _;

use kiln_core::{KilnError, KilnResult};
use kiln_postgres::types::ToSql;
use kiln_postgres::{Client, Listener, PgError, Pool};
use rusqlite::types::Value as Sql;
use serde_json::Value;

use super::{Backend, FeatureRows};
use crate::analytics::Report;
use crate::cache::CacheEntry;
use crate::gateways::GatewayCheck;
use crate::logs::{BodyPart, LogPage, LogQuery};
use crate::Gateway;

pub(crate) use sink::PostgresSink;

/// Connections for the REST API and cache lookups.
const POOL_THREADS: usize = 4;
/// The channel gateway changes are announced on.
const CHANNEL: &str = "kiln_gateways";

pub(crate) struct PostgresBackend {
    pool: Pool,
    url: String,
    /// Whether the response cache is the `gateway_cache` table (no Redis).
    cache_in_table: bool,
}

impl PostgresBackend {
    /// Connects to `url` and applies the schema's migrations.
    pub(crate) fn connect(url: &str, cache_in_table: bool) -> KilnResult<PostgresBackend> {
        let pool = Pool::open(url, POOL_THREADS).map_err(storage_error)?;
        pool.migrate("gateway", schema::MIGRATIONS)
            .map_err(storage_error)?;
        Ok(PostgresBackend {
            pool,
            url: url.to_owned(),
            cache_in_table,
        })
    }

    /// Calls `on_change` after every gateway change in this schema, from any node, and after
    /// every reconnection of the listening thread (when changes may have been missed).
    pub(crate) fn listen(&self, on_change: impl Fn() + Send + 'static) -> KilnResult<Listener> {
        let schema: String = self
            .pool
            .run(|client| Ok(client.query_one("SELECT current_schema()", &[])?.get(0)))
            .map_err(storage_error)?;
        self.pool
            .listen(CHANNEL, move |payload| {
                if payload.is_none_or(|payload| payload == schema) {
                    on_change();
                }
            })
            .map_err(storage_error)
    }

    /// The writer's sink for the journal named `journal`.
    pub(crate) fn sink(&self, journal: &str) -> KilnResult<PostgresSink> {
        PostgresSink::open(&self.url, journal, self.cache_in_table)
    }

    fn run<T, F>(&self, job: F) -> KilnResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Client) -> Result<T, PgError> + Send + 'static,
    {
        self.pool.run(job).map_err(storage_error)
    }
}

impl Backend for PostgresBackend {
    fn create_gateway(&self, account: &str, body: &Value) -> KilnResult<Gateway> {
        gateways::create(self, account, body)
    }

    fn list_gateways(&self, account: &str) -> KilnResult<Vec<Gateway>> {
        gateways::list(self, account)
    }

    fn get_gateway(&self, account: &str, id: &str) -> KilnResult<Gateway> {
        gateways::get(self, account, id)
    }

    fn update_gateway(&self, account: &str, id: &str, body: &Value) -> KilnResult<Gateway> {
        gateways::update(self, account, id, body)
    }

    fn delete_gateway(&self, account: &str, id: &str) -> KilnResult<Gateway> {
        gateways::delete(self, account, id)
    }

    fn cached(&self, key: &[u8; 32], now_ms: i64) -> KilnResult<Option<CacheEntry>> {
        cache::lookup(self, key, now_ms)
    }

    fn purge_cache(&self, account: &str, gateway: &str) -> KilnResult<()> {
        cache::purge_gateway(self, account, gateway)
    }

    fn list_logs(&self, account: &str, gateway: &str, query: &LogQuery) -> KilnResult<LogPage> {
        logs::list(self, account, gateway, query)
    }

    fn get_log(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Value> {
        logs::get(self, account, gateway, id)
    }

    fn log_body(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        part: BodyPart,
    ) -> KilnResult<(Option<String>, Vec<u8>)> {
        logs::body(self, account, gateway, id, part)
    }

    fn delete_logs(
        &self,
        account: &str,
        gateway: &str,
        query: &LogQuery,
        limit: Option<u64>,
    ) -> KilnResult<u64> {
        logs::delete(self, account, gateway, query, limit)
    }

    fn patch_log(&self, account: &str, gateway: &str, id: &str, body: &Value) -> KilnResult<Value> {
        logs::patch(self, account, gateway, id, body)
    }

    fn analytics(&self, account: &str, gateway: &str, report: &Report) -> KilnResult<Value> {
        analytics::report(self, account, gateway, report)
    }
}

impl GatewayCheck for PostgresBackend {
    fn check_gateway(&self, account: &str, gateway: &str) -> KilnResult<()> {
        gateways::get(self, account, gateway).map(drop)
    }
}

impl FeatureRows for PostgresBackend {
    fn purge_features(&self, account: &str, gateway: &str) -> KilnResult<()> {
        let key = [account, gateway].map(str::to_owned);
        self.run(move |client| {
            let mut tx = client.transaction()?;
            for table in [
                "gateway_provider_configs",
                "gateway_datasets",
                "gateway_evaluations",
                "gateway_routes",
                "gateway_route_versions",
                "gateway_route_deployments",
            ] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE account = $1 AND gateway = $2"),
                    &[&key[0], &key[1]],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }
}

/// As a request sees it: an outage is 503 / 3052, anything else a 500.
pub(crate) fn storage_error(error: PgError) -> KilnError {
    error.into_kiln("gateway storage")
}

/// A bound value that can cross to the pool's threads.
type Param = Box<dyn ToSql + Sync + Send>;

/// `sql` written with a `?` per value (as the log queries are) → PostgreSQL's `$n`, each cast
/// to its value's type so the server never has to guess it; NULL is written in place.
fn numbered(sql: &str, values: Vec<Sql>) -> (String, Vec<Param>) {
    let mut text = String::with_capacity(sql.len() + 8 * values.len());
    let mut params: Vec<Param> = Vec::with_capacity(values.len());
    let mut values = values.into_iter();
    for character in sql.chars() {
        if character != '?' {
            text.push(character);
            continue;
        }
        let cast = match values.next() {
            None | Some(Sql::Null) => {
                text.push_str("NULL");
                continue;
            }
            Some(Sql::Integer(number)) => {
                params.push(Box::new(number));
                "bigint"
            }
            Some(Sql::Real(number)) => {
                params.push(Box::new(number));
                "float8"
            }
            Some(Sql::Text(string)) => {
                params.push(Box::new(string));
                "text"
            }
            Some(Sql::Blob(bytes)) => {
                params.push(Box::new(bytes));
                "bytea"
            }
        };
        let _ = write!(text, "${}::{cast}", params.len());
    }
    (text, params)
}

/// The parameters as the client takes them.
fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|param| param.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// `postgres://user@host:port/database`, without the password or options, for logs.
pub(crate) fn describe_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let rest = rest.split('?').next().unwrap_or_default();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or_default();
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    format!("{scheme}://{authority}/{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_and_typed() {
        let (sql, params) = numbered(
            "a = ? AND b IS NOT DISTINCT FROM ? AND c > ? AND d = ? AND e = ?",
            vec![
                Sql::Integer(1),
                Sql::Null,
                Sql::Real(0.5),
                Sql::Text("x".into()),
                Sql::Blob(vec![1]),
            ],
        );
        assert_eq!(
            sql,
            "a = $1::bigint AND b IS NOT DISTINCT FROM NULL AND c > $2::float8 \
             AND d = $3::text AND e = $4::bytea"
        );
        assert_eq!(params.len(), 4);
    }

    #[test]
    fn urls_are_described_without_passwords() {
        assert_eq!(
            describe_url("postgres://kiln:secret@db.internal:5432/kiln?options=-csearch_path%3Dx"),
            "postgres://kiln@db.internal:5432/kiln"
        );
        assert_eq!(describe_url("postgresql://db/kiln"), "postgresql://db/kiln");
    }
}
