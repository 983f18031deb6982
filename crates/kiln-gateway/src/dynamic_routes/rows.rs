//! The rows of a route, its versions and deployments, and their JSON.

use kiln_core::time::utc_timestamp;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

use crate::{db_error, gateways};

#[derive(Debug, Clone)]
pub(crate) struct RouteRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) created_at: String,
    pub(crate) modified_at: String,
}

#[derive(Debug, Clone)]
pub(crate) struct VersionRow {
    pub(crate) id: String,
    pub(crate) elements: Value,
    pub(crate) comment: Option<String>,
    pub(crate) created_at: String,
}

#[derive(Debug, Clone)]
pub(crate) struct DeploymentRow {
    pub(crate) id: String,
    pub(crate) version: String,
    pub(crate) comment: Option<String>,
    pub(crate) created_at: String,
}

/// Which route: `(account, gateway, route id)`.
pub(crate) type Scope<'a> = (&'a str, &'a str, &'a str);

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Where routes, versions and deployments are kept: SQLite (below) or PostgreSQL
/// (`backend::postgres::routes`).
pub(crate) trait RouteRows: gateways::GatewayCheck {
    fn count_routes(&self, account: &str, gateway: &str) -> KilnResult<usize>;
    fn route_name_taken(&self, account: &str, gateway: &str, name: &str) -> KilnResult<bool>;
    /// The route with its first version and that version's deployment, in one transaction.
    fn insert_route(&self, route: &NewRoute<'_>) -> KilnResult<()>;
    fn route(&self, scope: Scope<'_>) -> KilnResult<Option<RouteRow>>;
    fn route_named(&self, account: &str, gateway: &str, name: &str)
        -> KilnResult<Option<RouteRow>>;
    /// The gateway's routes, oldest first.
    fn routes(&self, account: &str, gateway: &str) -> KilnResult<Vec<RouteRow>>;
    fn rename_route(&self, scope: Scope<'_>, name: &str, modified_at: &str) -> KilnResult<()>;
    /// The route with its versions and deployments, in one transaction.
    fn delete_route(&self, scope: Scope<'_>) -> KilnResult<()>;
    /// The version, and the route's `modified_at`, in one transaction.
    fn insert_version(&self, scope: Scope<'_>, version: &VersionRow) -> KilnResult<()>;
    /// The deployment, and the route's `modified_at`, in one transaction.
    fn insert_deployment(&self, scope: Scope<'_>, deployment: &DeploymentRow) -> KilnResult<()>;
    fn version_row(&self, scope: Scope<'_>, version: &str) -> KilnResult<Option<VersionRow>>;
    /// The route's versions, oldest first.
    fn versions(&self, scope: Scope<'_>) -> KilnResult<Vec<VersionRow>>;
    fn count_versions(&self, scope: Scope<'_>) -> KilnResult<usize>;
    fn count_deployments(&self, scope: Scope<'_>) -> KilnResult<usize>;
    fn latest_deployment(&self, scope: Scope<'_>) -> KilnResult<Option<DeploymentRow>>;
    /// The route's deployments, oldest first.
    fn deployments(&self, scope: Scope<'_>) -> KilnResult<Vec<DeploymentRow>>;
}

/// A route as created: its row, first version and deployment.
pub(crate) struct NewRoute<'a> {
    pub(crate) account: &'a str,
    pub(crate) gateway: &'a str,
    pub(crate) row: RouteRow,
    pub(crate) version: VersionRow,
    pub(crate) deployment: DeploymentRow,
}

pub(super) fn new_version(elements: &Value, comment: Option<String>) -> VersionRow {
    VersionRow {
        id: new_id(),
        elements: elements.clone(),
        comment,
        created_at: utc_timestamp(),
    }
}

pub(super) fn new_deployment(version: &VersionRow, comment: Option<String>) -> DeploymentRow {
    DeploymentRow {
        id: new_id(),
        version: version.id.clone(),
        comment,
        created_at: utc_timestamp(),
    }
}

/// The route, or `NotFound` (also when the gateway does not exist).
pub(super) fn route_row<D: RouteRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    id: &str,
) -> KilnResult<RouteRow> {
    db.check_gateway(account, gateway)?;
    db.route((account, gateway, id))?.ok_or_else(|| {
        KilnError::new(
            ErrorKind::NotFound,
            format!("no dynamic route with id {id:?}"),
        )
    })
}

/// The deployed version, or the latest one if none is deployed.
pub(super) fn active_version<D: RouteRows + ?Sized>(
    db: &D,
    scope: Scope<'_>,
) -> KilnResult<VersionRow> {
    if let Some(deployment) = db.latest_deployment(scope)? {
        if let Some(version) = db.version_row(scope, &deployment.version)? {
            return Ok(version);
        }
    }
    db.versions(scope)?
        .pop()
        .ok_or_else(|| KilnError::internal(format!("dynamic route {:?} has no version", scope.2)))
}

pub(super) fn route_json<D: RouteRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    row: RouteRow,
) -> KilnResult<Value> {
    let scope = (account, gateway, row.id.as_str());
    let deployment = db.latest_deployment(scope)?;
    let active = active_version(db, scope)?;
    Ok(json!({
        "id": row.id,
        "name": row.name,
        "account_tag": account,
        "gateway_id": gateway,
        "created_at": row.created_at,
        "modified_at": row.modified_at,
        "elements": active.elements,
        "deployment": deployment.as_ref().map(deployment_json),
        "version": version_json(&active, true),
    }))
}

/// A version as lists and routes show it; `data` is its elements as a JSON string.
pub(super) fn version_json(version: &VersionRow, active: bool) -> Value {
    json!({
        "version_id": version.id,
        "active": if active { "true" } else { "false" },
        "created_at": version.created_at,
        "data": version.elements.to_string(),
        "comment": version.comment,
    })
}

/// A version with its route's fields (`GET …/versions/{version_id}`, and a new version).
pub(super) fn version_detail(
    account: &str,
    gateway: &str,
    route: &RouteRow,
    version: &VersionRow,
    active_id: &str,
) -> Value {
    let mut detail = version_json(version, version.id == active_id);
    let extra = json!({
        "id": route.id,
        "name": route.name,
        "account_tag": account,
        "gateway_id": gateway,
        "modified_at": route.modified_at,
        "elements": version.elements,
    });
    if let (Some(detail), Value::Object(extra)) = (detail.as_object_mut(), extra) {
        detail.extend(extra);
    }
    detail
}

pub(super) fn deployment_json(deployment: &DeploymentRow) -> Value {
    json!({
        "deployment_id": deployment.id,
        "version_id": deployment.version,
        "created_at": deployment.created_at,
        "comment": deployment.comment,
    })
}

pub(super) fn no_version(route: &str, version: &str) -> KilnError {
    KilnError::new(
        ErrorKind::NotFound,
        format!("dynamic route {route:?} has no version {version:?}"),
    )
}

impl RouteRows for Connection {
    fn count_routes(&self, account: &str, gateway: &str) -> KilnResult<usize> {
        self.query_row(
            "SELECT COUNT(*) FROM dynamic_routes WHERE account = ?1 AND gateway = ?2",
            params![account, gateway],
            |row| row.get(0),
        )
        .map_err(db_error)
    }

    fn route_name_taken(&self, account: &str, gateway: &str, name: &str) -> KilnResult<bool> {
        self.query_row(
            "SELECT EXISTS (SELECT 1 FROM dynamic_routes
                            WHERE account = ?1 AND gateway = ?2 AND name = ?3)",
            params![account, gateway, name],
            |row| row.get(0),
        )
        .map_err(db_error)
    }

    fn insert_route(&self, route: &NewRoute<'_>) -> KilnResult<()> {
        let scope = (route.account, route.gateway, route.row.id.as_str());
        let transaction = self.unchecked_transaction().map_err(db_error)?;
        transaction
            .execute(
                "INSERT INTO dynamic_routes (account, gateway, id, name, created_at, modified_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    route.account,
                    route.gateway,
                    route.row.id,
                    route.row.name,
                    route.row.created_at,
                    route.row.modified_at
                ],
            )
            .map_err(db_error)?;
        add_version(&transaction, scope, &route.version)?;
        add_deployment(&transaction, scope, &route.deployment)?;
        transaction.commit().map_err(db_error)
    }

    fn route(&self, scope: Scope<'_>) -> KilnResult<Option<RouteRow>> {
        let (account, gateway, id) = scope;
        self.query_row(
            "SELECT id, name, created_at, modified_at FROM dynamic_routes
             WHERE account = ?1 AND gateway = ?2 AND id = ?3",
            params![account, gateway, id],
            route_from_row,
        )
        .optional()
        .map_err(db_error)
    }

    fn route_named(
        &self,
        account: &str,
        gateway: &str,
        name: &str,
    ) -> KilnResult<Option<RouteRow>> {
        self.query_row(
            "SELECT id, name, created_at, modified_at FROM dynamic_routes
             WHERE account = ?1 AND gateway = ?2 AND name = ?3",
            params![account, gateway, name],
            route_from_row,
        )
        .optional()
        .map_err(db_error)
    }

    fn routes(&self, account: &str, gateway: &str) -> KilnResult<Vec<RouteRow>> {
        let mut statement = self
            .prepare(
                "SELECT id, name, created_at, modified_at FROM dynamic_routes
                 WHERE account = ?1 AND gateway = ?2 ORDER BY rowid",
            )
            .map_err(db_error)?;
        let rows = statement
            .query_map(params![account, gateway], route_from_row)
            .map_err(db_error)?;
        rows.map(|row| row.map_err(db_error)).collect()
    }

    fn rename_route(&self, scope: Scope<'_>, name: &str, modified_at: &str) -> KilnResult<()> {
        let (account, gateway, id) = scope;
        self.execute(
            "UPDATE dynamic_routes SET name = ?4, modified_at = ?5
             WHERE account = ?1 AND gateway = ?2 AND id = ?3",
            params![account, gateway, id, name, modified_at],
        )
        .map_err(db_error)
        .map(drop)
    }

    fn delete_route(&self, scope: Scope<'_>) -> KilnResult<()> {
        let (account, gateway, id) = scope;
        let transaction = self.unchecked_transaction().map_err(db_error)?;
        for table in [
            "dynamic_route_versions",
            "dynamic_route_deployments",
            "dynamic_routes",
        ] {
            let column = if table == "dynamic_routes" {
                "id"
            } else {
                "route"
            };
            transaction
                .execute(
                    &format!(
                        "DELETE FROM {table} WHERE account = ?1 AND gateway = ?2 AND {column} = ?3"
                    ),
                    params![account, gateway, id],
                )
                .map_err(db_error)?;
        }
        transaction.commit().map_err(db_error)
    }

    fn insert_version(&self, scope: Scope<'_>, version: &VersionRow) -> KilnResult<()> {
        let transaction = self.unchecked_transaction().map_err(db_error)?;
        add_version(&transaction, scope, version)?;
        touch(&transaction, scope)?;
        transaction.commit().map_err(db_error)
    }

    fn insert_deployment(&self, scope: Scope<'_>, deployment: &DeploymentRow) -> KilnResult<()> {
        let transaction = self.unchecked_transaction().map_err(db_error)?;
        add_deployment(&transaction, scope, deployment)?;
        touch(&transaction, scope)?;
        transaction.commit().map_err(db_error)
    }

    fn version_row(&self, scope: Scope<'_>, version: &str) -> KilnResult<Option<VersionRow>> {
        let (account, gateway, route) = scope;
        self.query_row(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM dynamic_route_versions
                 WHERE account = ?1 AND gateway = ?2 AND route = ?3 AND id = ?4"
            ),
            params![account, gateway, route, version],
            version_from_row,
        )
        .optional()
        .map_err(db_error)
    }

    fn versions(&self, scope: Scope<'_>) -> KilnResult<Vec<VersionRow>> {
        let (account, gateway, route) = scope;
        let mut statement = self
            .prepare(&format!(
                "SELECT {VERSION_COLUMNS} FROM dynamic_route_versions
                 WHERE account = ?1 AND gateway = ?2 AND route = ?3 ORDER BY rowid"
            ))
            .map_err(db_error)?;
        let rows = statement
            .query_map(params![account, gateway, route], version_from_row)
            .map_err(db_error)?;
        rows.map(|row| row.map_err(db_error)).collect()
    }

    fn count_versions(&self, scope: Scope<'_>) -> KilnResult<usize> {
        count_of(self, "dynamic_route_versions", scope)
    }

    fn count_deployments(&self, scope: Scope<'_>) -> KilnResult<usize> {
        count_of(self, "dynamic_route_deployments", scope)
    }

    fn latest_deployment(&self, scope: Scope<'_>) -> KilnResult<Option<DeploymentRow>> {
        let (account, gateway, route) = scope;
        self.query_row(
            "SELECT id, version, comment, created_at FROM dynamic_route_deployments
             WHERE account = ?1 AND gateway = ?2 AND route = ?3 ORDER BY rowid DESC LIMIT 1",
            params![account, gateway, route],
            deployment_from_row,
        )
        .optional()
        .map_err(db_error)
    }

    fn deployments(&self, scope: Scope<'_>) -> KilnResult<Vec<DeploymentRow>> {
        let (account, gateway, route) = scope;
        let mut statement = self
            .prepare(
                "SELECT id, version, comment, created_at FROM dynamic_route_deployments
                 WHERE account = ?1 AND gateway = ?2 AND route = ?3 ORDER BY rowid",
            )
            .map_err(db_error)?;
        let rows = statement
            .query_map(params![account, gateway, route], deployment_from_row)
            .map_err(db_error)?;
        rows.map(|row| row.map_err(db_error)).collect()
    }
}

fn add_version(db: &Connection, scope: Scope<'_>, version: &VersionRow) -> KilnResult<()> {
    let (account, gateway, route) = scope;
    db.execute(
        "INSERT INTO dynamic_route_versions
             (account, gateway, route, id, elements, comment, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            account,
            gateway,
            route,
            version.id,
            version.elements.to_string(),
            version.comment,
            version.created_at,
        ],
    )
    .map_err(db_error)
    .map(drop)
}

fn add_deployment(db: &Connection, scope: Scope<'_>, deployment: &DeploymentRow) -> KilnResult<()> {
    let (account, gateway, route) = scope;
    db.execute(
        "INSERT INTO dynamic_route_deployments
             (account, gateway, route, id, version, comment, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            account,
            gateway,
            route,
            deployment.id,
            deployment.version,
            deployment.comment,
            deployment.created_at
        ],
    )
    .map_err(db_error)
    .map(drop)
}

fn touch(db: &Connection, scope: Scope<'_>) -> KilnResult<()> {
    let (account, gateway, route) = scope;
    db.execute(
        "UPDATE dynamic_routes SET modified_at = ?4
         WHERE account = ?1 AND gateway = ?2 AND id = ?3",
        params![account, gateway, route, utc_timestamp()],
    )
    .map_err(db_error)
    .map(drop)
}

fn count_of(db: &Connection, table: &str, scope: Scope<'_>) -> KilnResult<usize> {
    let (account, gateway, route) = scope;
    db.query_row(
        &format!("SELECT COUNT(*) FROM {table} WHERE account = ?1 AND gateway = ?2 AND route = ?3"),
        params![account, gateway, route],
        |row| row.get(0),
    )
    .map_err(db_error)
}

fn route_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RouteRow> {
    Ok(RouteRow {
        id: row.get(0)?,
        name: row.get(1)?,
        created_at: row.get(2)?,
        modified_at: row.get(3)?,
    })
}

const VERSION_COLUMNS: &str = "id, elements, comment, created_at";

fn version_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    let elements: String = row.get(1)?;
    Ok(VersionRow {
        id: row.get(0)?,
        elements: serde_json::from_str(&elements).unwrap_or(Value::Null),
        comment: row.get(2)?,
        created_at: row.get(3)?,
    })
}

fn deployment_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRow> {
    Ok(DeploymentRow {
        id: row.get(0)?,
        version: row.get(1)?,
        comment: row.get(2)?,
        created_at: row.get(3)?,
    })
}
