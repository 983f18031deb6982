//! Custom providers and stored provider keys (BYOK) on PostgreSQL, shared by every node: a key
//! stored through one node is used by requests through any.

use kiln_core::KilnResult;
use kiln_postgres::{PgError, Row};

use super::{storage_error, PostgresBackend};
use crate::provider_configs::{alias_taken, preview, ConfigRows, KeyLookup};
use crate::providers::ProviderRows;
use crate::ProviderConfig;

impl ProviderRows for PostgresBackend {
    fn insert_provider(&self, account: &str, slug: &str, text: &str) -> KilnResult<bool> {
        let row = [account, slug, text].map(str::to_owned);
        self.run(move |client| {
            let inserted = client.execute(
                "INSERT INTO gateway_custom_providers (account, slug, provider)
                 VALUES ($1, $2, $3) ON CONFLICT (account, slug) DO NOTHING",
                &[&row[0], &row[1], &row[2]],
            )?;
            Ok(inserted > 0)
        })
    }

    fn provider_texts(&self, account: &str) -> KilnResult<Vec<String>> {
        let account = account.to_owned();
        self.run(move |client| {
            client
                .query(
                    "SELECT provider FROM gateway_custom_providers WHERE account = $1
                     ORDER BY slug",
                    &[&account],
                )?
                .iter()
                .map(|row| Ok(row.try_get(0)?))
                .collect()
        })
    }

    fn provider_text(&self, account: &str, slug: &str) -> KilnResult<Option<String>> {
        let key = [account, slug].map(str::to_owned);
        self.run(move |client| {
            client
                .query_opt(
                    "SELECT provider FROM gateway_custom_providers
                     WHERE account = $1 AND slug = $2",
                    &[&key[0], &key[1]],
                )?
                .map(|row| Ok(row.try_get(0)?))
                .transpose()
        })
    }

    fn replace_provider(&self, account: &str, slug: &str, text: &str) -> KilnResult<()> {
        let row = [account, slug, text].map(str::to_owned);
        self.run(move |client| {
            client.execute(
                "UPDATE gateway_custom_providers SET provider = $3
                 WHERE account = $1 AND slug = $2",
                &[&row[0], &row[1], &row[2]],
            )?;
            Ok(())
        })
    }

    fn delete_provider(&self, account: &str, slug: &str) -> KilnResult<()> {
        let key = [account, slug].map(str::to_owned);
        self.run(move |client| {
            client.execute(
                "DELETE FROM gateway_custom_providers WHERE account = $1 AND slug = $2",
                &[&key[0], &key[1]],
            )?;
            Ok(())
        })
    }
}

const COLUMNS: &str = "id, gateway, alias, provider_slug, default_config, secret, secret_id, \
                       rate_limit, rate_limit_period, modified_at";

fn config_from_row(row: &Row) -> Result<(ProviderConfig, String), PgError> {
    let secret: String = row.try_get(5)?;
    let unsigned = |value: Option<i64>| value.map(|value| u64::try_from(value).unwrap_or(0));
    let config = ProviderConfig {
        id: row.try_get(0)?,
        gateway: row.try_get(1)?,
        alias: row.try_get(2)?,
        provider_slug: row.try_get(3)?,
        default_config: row.try_get(4)?,
        secret_id: row.try_get(6)?,
        secret_preview: preview(&secret),
        rate_limit: unsigned(row.try_get(7)?),
        rate_limit_period: unsigned(row.try_get(8)?),
        modified_at: row.try_get(9)?,
    };
    Ok((config, secret))
}

fn signed(value: Option<u64>) -> Option<i64> {
    value.map(|value| i64::try_from(value).unwrap_or(i64::MAX))
}

impl ConfigRows for PostgresBackend {
    fn count_configs(&self, account: &str, gateway: &str) -> KilnResult<usize> {
        let key = [account, gateway].map(str::to_owned);
        let count: i64 = self.run(move |client| {
            Ok(client
                .query_one(
                    "SELECT COUNT(*) FROM gateway_provider_configs
                     WHERE account = $1 AND gateway = $2",
                    &[&key[0], &key[1]],
                )?
                .try_get(0)?)
        })?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    fn insert_config(
        &self,
        account: &str,
        config: &ProviderConfig,
        secret: &str,
    ) -> KilnResult<()> {
        let (account, row, secret) = (account.to_owned(), config.clone(), secret.to_owned());
        let inserted = self.pool.run(move |client| {
            let mut tx = client.transaction()?;
            if row.default_config {
                // One default key per provider: the newest one takes over.
                tx.execute(
                    "UPDATE gateway_provider_configs SET default_config = false
                     WHERE account = $1 AND gateway = $2 AND provider_slug = $3",
                    &[&account, &row.gateway, &row.provider_slug],
                )?;
            }
            tx.execute(
                "INSERT INTO gateway_provider_configs (account, gateway, id, alias,
                     provider_slug, default_config, secret, secret_id, rate_limit,
                     rate_limit_period, modified_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &account,
                    &row.gateway,
                    &row.id,
                    &row.alias,
                    &row.provider_slug,
                    &row.default_config,
                    &secret,
                    &row.secret_id,
                    &signed(row.rate_limit),
                    &signed(row.rate_limit_period),
                    &row.modified_at,
                ],
            )?;
            tx.commit()?;
            Ok(())
        });
        match inserted {
            Err(error) if error.is_unique_violation() => Err(alias_taken(config)),
            other => other.map_err(storage_error),
        }
    }

    fn configs(&self, account: &str, gateway: &str) -> KilnResult<Vec<ProviderConfig>> {
        let key = [account, gateway].map(str::to_owned);
        self.run(move |client| {
            client
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM gateway_provider_configs
                         WHERE account = $1 AND gateway = $2 ORDER BY seq"
                    ),
                    &[&key[0], &key[1]],
                )?
                .iter()
                .map(|row| config_from_row(row).map(|(config, _)| config))
                .collect()
        })
    }

    fn config(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Option<ProviderConfig>> {
        let key = [account, gateway, id].map(str::to_owned);
        self.run(move |client| {
            client
                .query_opt(
                    &format!(
                        "SELECT {COLUMNS} FROM gateway_provider_configs
                         WHERE account = $1 AND gateway = $2 AND id = $3"
                    ),
                    &[&key[0], &key[1], &key[2]],
                )?
                .map(|row| config_from_row(&row).map(|(config, _)| config))
                .transpose()
        })
    }

    fn delete_config(&self, account: &str, gateway: &str, id: &str) -> KilnResult<()> {
        let key = [account, gateway, id].map(str::to_owned);
        self.run(move |client| {
            client.execute(
                "DELETE FROM gateway_provider_configs
                 WHERE account = $1 AND gateway = $2 AND id = $3",
                &[&key[0], &key[1], &key[2]],
            )?;
            Ok(())
        })
    }

    fn key_row(&self, lookup: &KeyLookup<'_>) -> KilnResult<Option<(ProviderConfig, String)>> {
        let texts = [
            lookup.account,
            lookup.gateway,
            lookup.slugs[0],
            lookup.slugs[1],
            lookup.wanted,
        ]
        .map(str::to_owned);
        let or_default = lookup.or_default;
        self.run(move |client| {
            client
                .query_opt(
                    &format!(
                        "SELECT {COLUMNS} FROM gateway_provider_configs
                         WHERE account = $1 AND gateway = $2 AND provider_slug IN ($3, $4)
                           AND (alias = $5 OR ($6 AND default_config))
                         ORDER BY alias = $5 DESC, default_config DESC, seq DESC LIMIT 1"
                    ),
                    &[
                        &texts[0],
                        &texts[1],
                        &texts[2],
                        &texts[3],
                        &texts[4],
                        &or_default,
                    ],
                )?
                .map(|row| config_from_row(&row))
                .transpose()
        })
    }
}
