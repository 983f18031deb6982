//! Datasets and evaluations on PostgreSQL: an evaluation measures the shared logs.

use kiln_core::KilnResult;
use kiln_postgres::{PgError, Row};
use rusqlite::types::Value as Sql;

use super::{numbered, refs, PostgresBackend};
use crate::datasets::{filters_from_text, filters_text, union_sql_in, DatasetRows};
use crate::evaluations::{EvaluationRows, Totals};
use crate::logs::Dialect;
use crate::Dataset;

const COLUMNS: &str = "id, account, gateway, name, enable, filters, created_at, modified_at";

fn dataset_from_row(row: &Row) -> Result<Dataset, PgError> {
    let filters: String = row.try_get(5)?;
    let filters = filters_from_text(&filters).ok_or_else(|| {
        PgError::new(
            kiln_postgres::PgErrorKind::Other,
            "stored dataset filters are not a JSON array",
        )
    })?;
    Ok(Dataset {
        id: row.try_get(0)?,
        account: row.try_get(1)?,
        gateway: row.try_get(2)?,
        name: row.try_get(3)?,
        enable: row.try_get(4)?,
        filters,
        created_at: row.try_get(6)?,
        modified_at: row.try_get(7)?,
    })
}

impl DatasetRows for PostgresBackend {
    fn count_datasets(&self, account: &str, gateway: &str) -> KilnResult<usize> {
        let key = [account, gateway].map(str::to_owned);
        let count: i64 = self.run(move |client| {
            Ok(client
                .query_one(
                    "SELECT COUNT(*) FROM gateway_datasets WHERE account = $1 AND gateway = $2",
                    &[&key[0], &key[1]],
                )?
                .try_get(0)?)
        })?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    fn insert_dataset(&self, dataset: &Dataset) -> KilnResult<()> {
        let (row, filters) = (dataset.clone(), filters_text(dataset));
        self.run(move |client| {
            client.execute(
                "INSERT INTO gateway_datasets
                     (account, gateway, id, name, enable, filters, created_at, modified_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &row.account,
                    &row.gateway,
                    &row.id,
                    &row.name,
                    &row.enable,
                    &filters,
                    &row.created_at,
                    &row.modified_at,
                ],
            )?;
            Ok(())
        })
    }

    fn datasets(&self, account: &str, gateway: &str) -> KilnResult<Vec<Dataset>> {
        let key = [account, gateway].map(str::to_owned);
        self.run(move |client| {
            client
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM gateway_datasets
                         WHERE account = $1 AND gateway = $2 ORDER BY seq"
                    ),
                    &[&key[0], &key[1]],
                )?
                .iter()
                .map(dataset_from_row)
                .collect()
        })
    }

    fn dataset(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Option<Dataset>> {
        let key = [account, gateway, id].map(str::to_owned);
        self.run(move |client| {
            client
                .query_opt(
                    &format!(
                        "SELECT {COLUMNS} FROM gateway_datasets
                         WHERE account = $1 AND gateway = $2 AND id = $3"
                    ),
                    &[&key[0], &key[1], &key[2]],
                )?
                .map(|row| dataset_from_row(&row))
                .transpose()
        })
    }

    fn update_dataset(&self, dataset: &Dataset) -> KilnResult<()> {
        let (row, filters) = (dataset.clone(), filters_text(dataset));
        self.run(move |client| {
            client.execute(
                "UPDATE gateway_datasets SET name = $4, enable = $5, filters = $6,
                     modified_at = $7
                 WHERE account = $1 AND gateway = $2 AND id = $3",
                &[
                    &row.account,
                    &row.gateway,
                    &row.id,
                    &row.name,
                    &row.enable,
                    &filters,
                    &row.modified_at,
                ],
            )?;
            Ok(())
        })
    }

    fn delete_dataset(&self, account: &str, gateway: &str, id: &str) -> KilnResult<()> {
        let key = [account, gateway, id].map(str::to_owned);
        self.run(move |client| {
            client.execute(
                "DELETE FROM gateway_datasets WHERE account = $1 AND gateway = $2 AND id = $3",
                &[&key[0], &key[1], &key[2]],
            )?;
            Ok(())
        })
    }
}

impl EvaluationRows for PostgresBackend {
    fn measure(&self, account: &str, gateway: &str, chosen: &[Dataset]) -> KilnResult<Totals> {
        let (union, bound) = union_sql_in(chosen, Dialect::Postgres)?;
        let mut values = vec![Sql::Text(account.into()), Sql::Text(gateway.into())];
        values.extend(bound);
        let (sql, params) = numbered(
            &format!(
                "SELECT COUNT(*), COUNT(cost), AVG(cost)::float8, AVG(duration)::float8,
                        COUNT(feedback),
                        COALESCE(SUM(CASE WHEN feedback = 1 THEN 1 ELSE 0 END), 0)::bigint
                 FROM gateway_logs AS logs WHERE account = ? AND gateway = ? AND ({union})"
            ),
            values,
        );
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        self.run(move |client| {
            let row = client.query_one(&sql, &refs(&params))?;
            Ok(Totals {
                logs: count(row.try_get(0)?),
                costed: count(row.try_get(1)?),
                average_cost: row.try_get(2)?,
                average_duration: row.try_get(3)?,
                rated: count(row.try_get(4)?),
                thumbs_up: count(row.try_get(5)?),
            })
        })
    }

    fn insert_evaluation(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        text: &str,
    ) -> KilnResult<()> {
        let row = [account, gateway, id, text].map(str::to_owned);
        self.run(move |client| {
            client.execute(
                "INSERT INTO gateway_evaluations (account, gateway, id, evaluation)
                 VALUES ($1, $2, $3, $4)",
                &[&row[0], &row[1], &row[2], &row[3]],
            )?;
            Ok(())
        })
    }

    fn evaluation_texts(&self, account: &str, gateway: &str) -> KilnResult<Vec<String>> {
        let key = [account, gateway].map(str::to_owned);
        self.run(move |client| {
            client
                .query(
                    "SELECT evaluation FROM gateway_evaluations
                     WHERE account = $1 AND gateway = $2 ORDER BY seq",
                    &[&key[0], &key[1]],
                )?
                .iter()
                .map(|row| Ok(row.try_get(0)?))
                .collect()
        })
    }

    fn evaluation_text(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
    ) -> KilnResult<Option<String>> {
        let key = [account, gateway, id].map(str::to_owned);
        self.run(move |client| {
            client
                .query_opt(
                    "SELECT evaluation FROM gateway_evaluations
                     WHERE account = $1 AND gateway = $2 AND id = $3",
                    &[&key[0], &key[1], &key[2]],
                )?
                .map(|row| Ok(row.try_get(0)?))
                .transpose()
        })
    }

    fn delete_evaluation(&self, account: &str, gateway: &str, id: &str) -> KilnResult<()> {
        let key = [account, gateway, id].map(str::to_owned);
        self.run(move |client| {
            client.execute(
                "DELETE FROM gateway_evaluations WHERE account = $1 AND gateway = $2 AND id = $3",
                &[&key[0], &key[1], &key[2]],
            )?;
            Ok(())
        })
    }
}
