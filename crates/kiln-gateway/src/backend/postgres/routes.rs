//! Dynamic routes, their versions and deployments on PostgreSQL: a route deployed through one
//! node runs on every node.

use kiln_core::{ErrorKind, KilnError, KilnResult};
use kiln_postgres::{PgError, Row, Transaction};
use serde_json::Value;

use super::{storage_error, PostgresBackend};
use crate::dynamic_routes::{DeploymentRow, NewRoute, RouteRow, RouteRows, Scope, VersionRow};

/// `(account, gateway, route)` owned, to move into a pool call.
fn owned(scope: Scope<'_>) -> [String; 3] {
    [scope.0, scope.1, scope.2].map(str::to_owned)
}

fn route_from_row(row: &Row) -> Result<RouteRow, PgError> {
    Ok(RouteRow {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        created_at: row.try_get(2)?,
        modified_at: row.try_get(3)?,
    })
}

fn version_from_row(row: &Row) -> Result<VersionRow, PgError> {
    let elements: String = row.try_get(1)?;
    Ok(VersionRow {
        id: row.try_get(0)?,
        elements: serde_json::from_str(&elements).unwrap_or(Value::Null),
        comment: row.try_get(2)?,
        created_at: row.try_get(3)?,
    })
}

fn deployment_from_row(row: &Row) -> Result<DeploymentRow, PgError> {
    Ok(DeploymentRow {
        id: row.try_get(0)?,
        version: row.try_get(1)?,
        comment: row.try_get(2)?,
        created_at: row.try_get(3)?,
    })
}

fn add_version(
    tx: &mut Transaction<'_>,
    scope: &[String; 3],
    version: &VersionRow,
) -> Result<(), PgError> {
    tx.execute(
        "INSERT INTO gateway_route_versions
             (account, gateway, route, id, elements, comment, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &scope[0],
            &scope[1],
            &scope[2],
            &version.id,
            &version.elements.to_string(),
            &version.comment,
            &version.created_at,
        ],
    )?;
    Ok(())
}

fn add_deployment(
    tx: &mut Transaction<'_>,
    scope: &[String; 3],
    deployment: &DeploymentRow,
) -> Result<(), PgError> {
    tx.execute(
        "INSERT INTO gateway_route_deployments
             (account, gateway, route, id, version, comment, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &scope[0],
            &scope[1],
            &scope[2],
            &deployment.id,
            &deployment.version,
            &deployment.comment,
            &deployment.created_at,
        ],
    )?;
    Ok(())
}

fn touch(tx: &mut Transaction<'_>, scope: &[String; 3]) -> Result<(), PgError> {
    tx.execute(
        "UPDATE gateway_routes SET modified_at = $4
         WHERE account = $1 AND gateway = $2 AND id = $3",
        &[
            &scope[0],
            &scope[1],
            &scope[2],
            &kiln_core::time::utc_timestamp(),
        ],
    )?;
    Ok(())
}

/// Two nodes naming a route alike at once: the second is told, as when it checked first.
fn named_once(outcome: Result<(), PgError>, gateway: &str, name: &str) -> KilnResult<()> {
    match outcome {
        Err(error) if error.is_unique_violation() => Err(KilnError::new(
            ErrorKind::Conflict,
            format!("gateway {gateway:?} already has a dynamic route named {name:?}"),
        )),
        other => other.map_err(storage_error),
    }
}

impl PostgresBackend {
    /// `SELECT COUNT(*)` of a route's rows in `table` (a fixed name, never the request's).
    fn count_route_rows(&self, table: &'static str, scope: Scope<'_>) -> KilnResult<usize> {
        let key = owned(scope);
        let count: i64 = self.run(move |client| {
            Ok(client
                .query_one(
                    &format!(
                        "SELECT COUNT(*) FROM {table}
                         WHERE account = $1 AND gateway = $2 AND route = $3"
                    ),
                    &[&key[0], &key[1], &key[2]],
                )?
                .try_get(0)?)
        })?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }
}

impl RouteRows for PostgresBackend {
    fn count_routes(&self, account: &str, gateway: &str) -> KilnResult<usize> {
        let key = [account, gateway].map(str::to_owned);
        let count: i64 = self.run(move |client| {
            Ok(client
                .query_one(
                    "SELECT COUNT(*) FROM gateway_routes WHERE account = $1 AND gateway = $2",
                    &[&key[0], &key[1]],
                )?
                .try_get(0)?)
        })?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    fn route_name_taken(&self, account: &str, gateway: &str, name: &str) -> KilnResult<bool> {
        Ok(self.route_named(account, gateway, name)?.is_some())
    }

    fn insert_route(&self, route: &NewRoute<'_>) -> KilnResult<()> {
        let scope = [route.account, route.gateway, route.row.id.as_str()].map(str::to_owned);
        let (name, created_at, modified_at) = (
            route.row.name.clone(),
            route.row.created_at.clone(),
            route.row.modified_at.clone(),
        );
        let (version, deployment) = (route.version.clone(), route.deployment.clone());
        let inserted = self.pool.run(move |client| {
            let mut tx = client.transaction()?;
            tx.execute(
                "INSERT INTO gateway_routes (account, gateway, id, name, created_at, modified_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &scope[0],
                    &scope[1],
                    &scope[2],
                    &name,
                    &created_at,
                    &modified_at,
                ],
            )?;
            add_version(&mut tx, &scope, &version)?;
            add_deployment(&mut tx, &scope, &deployment)?;
            tx.commit()?;
            Ok(())
        });
        named_once(inserted, route.gateway, &route.row.name)
    }

    fn route(&self, scope: Scope<'_>) -> KilnResult<Option<RouteRow>> {
        let key = owned(scope);
        self.run(move |client| {
            client
                .query_opt(
                    "SELECT id, name, created_at, modified_at FROM gateway_routes
                     WHERE account = $1 AND gateway = $2 AND id = $3",
                    &[&key[0], &key[1], &key[2]],
                )?
                .map(|row| route_from_row(&row))
                .transpose()
        })
    }

    fn route_named(
        &self,
        account: &str,
        gateway: &str,
        name: &str,
    ) -> KilnResult<Option<RouteRow>> {
        let key = [account, gateway, name].map(str::to_owned);
        self.run(move |client| {
            client
                .query_opt(
                    "SELECT id, name, created_at, modified_at FROM gateway_routes
                     WHERE account = $1 AND gateway = $2 AND name = $3",
                    &[&key[0], &key[1], &key[2]],
                )?
                .map(|row| route_from_row(&row))
                .transpose()
        })
    }

    fn routes(&self, account: &str, gateway: &str) -> KilnResult<Vec<RouteRow>> {
        let key = [account, gateway].map(str::to_owned);
        self.run(move |client| {
            client
                .query(
                    "SELECT id, name, created_at, modified_at FROM gateway_routes
                     WHERE account = $1 AND gateway = $2 ORDER BY seq",
                    &[&key[0], &key[1]],
                )?
                .iter()
                .map(route_from_row)
                .collect()
        })
    }

    fn rename_route(&self, scope: Scope<'_>, name: &str, modified_at: &str) -> KilnResult<()> {
        let key = owned(scope);
        let (new_name, modified_at) = (name.to_owned(), modified_at.to_owned());
        let renamed = self.pool.run(move |client| {
            client.execute(
                "UPDATE gateway_routes SET name = $4, modified_at = $5
                 WHERE account = $1 AND gateway = $2 AND id = $3",
                &[&key[0], &key[1], &key[2], &new_name, &modified_at],
            )?;
            Ok(())
        });
        named_once(renamed, scope.1, name)
    }

    fn delete_route(&self, scope: Scope<'_>) -> KilnResult<()> {
        let key = owned(scope);
        self.run(move |client| {
            let mut tx = client.transaction()?;
            for (table, column) in [
                ("gateway_route_versions", "route"),
                ("gateway_route_deployments", "route"),
                ("gateway_routes", "id"),
            ] {
                tx.execute(
                    &format!(
                        "DELETE FROM {table} WHERE account = $1 AND gateway = $2 AND {column} = $3"
                    ),
                    &[&key[0], &key[1], &key[2]],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn insert_version(&self, scope: Scope<'_>, version: &VersionRow) -> KilnResult<()> {
        let (key, version) = (owned(scope), version.clone());
        self.run(move |client| {
            let mut tx = client.transaction()?;
            add_version(&mut tx, &key, &version)?;
            touch(&mut tx, &key)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn insert_deployment(&self, scope: Scope<'_>, deployment: &DeploymentRow) -> KilnResult<()> {
        let (key, deployment) = (owned(scope), deployment.clone());
        self.run(move |client| {
            let mut tx = client.transaction()?;
            add_deployment(&mut tx, &key, &deployment)?;
            touch(&mut tx, &key)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn version_row(&self, scope: Scope<'_>, version: &str) -> KilnResult<Option<VersionRow>> {
        let (key, version) = (owned(scope), version.to_owned());
        self.run(move |client| {
            client
                .query_opt(
                    "SELECT id, elements, comment, created_at FROM gateway_route_versions
                     WHERE account = $1 AND gateway = $2 AND route = $3 AND id = $4",
                    &[&key[0], &key[1], &key[2], &version],
                )?
                .map(|row| version_from_row(&row))
                .transpose()
        })
    }

    fn versions(&self, scope: Scope<'_>) -> KilnResult<Vec<VersionRow>> {
        let key = owned(scope);
        self.run(move |client| {
            client
                .query(
                    "SELECT id, elements, comment, created_at FROM gateway_route_versions
                     WHERE account = $1 AND gateway = $2 AND route = $3 ORDER BY seq",
                    &[&key[0], &key[1], &key[2]],
                )?
                .iter()
                .map(version_from_row)
                .collect()
        })
    }

    fn count_versions(&self, scope: Scope<'_>) -> KilnResult<usize> {
        self.count_route_rows("gateway_route_versions", scope)
    }

    fn count_deployments(&self, scope: Scope<'_>) -> KilnResult<usize> {
        self.count_route_rows("gateway_route_deployments", scope)
    }

    fn latest_deployment(&self, scope: Scope<'_>) -> KilnResult<Option<DeploymentRow>> {
        let key = owned(scope);
        self.run(move |client| {
            client
                .query_opt(
                    "SELECT id, version, comment, created_at FROM gateway_route_deployments
                     WHERE account = $1 AND gateway = $2 AND route = $3
                     ORDER BY seq DESC LIMIT 1",
                    &[&key[0], &key[1], &key[2]],
                )?
                .map(|row| deployment_from_row(&row))
                .transpose()
        })
    }

    fn deployments(&self, scope: Scope<'_>) -> KilnResult<Vec<DeploymentRow>> {
        let key = owned(scope);
        self.run(move |client| {
            client
                .query(
                    "SELECT id, version, comment, created_at FROM gateway_route_deployments
                     WHERE account = $1 AND gateway = $2 AND route = $3 ORDER BY seq",
                    &[&key[0], &key[1], &key[2]],
                )?
                .iter()
                .map(deployment_from_row)
                .collect()
        })
    }
}
