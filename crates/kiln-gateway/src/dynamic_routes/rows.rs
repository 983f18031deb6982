//! The rows of a route, its versions and deployments, and their JSON.

use kiln_core::time::utc_timestamp;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

use crate::{db_error, gateways};

pub(super) struct RouteRow {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) created_at: String,
    pub(super) modified_at: String,
}

pub(super) struct VersionRow {
    pub(super) id: String,
    pub(super) elements: Value,
    pub(super) comment: Option<String>,
    pub(super) created_at: String,
}

pub(super) struct DeploymentRow {
    pub(super) id: String,
    pub(super) version: String,
    pub(super) comment: Option<String>,
    pub(super) created_at: String,
}

/// Which route: `(account, gateway, route id)`.
pub(super) type Scope<'a> = (&'a str, &'a str, &'a str);

pub(super) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub(super) fn insert_version(
    db: &Connection,
    scope: Scope<'_>,
    elements: &Value,
    comment: Option<String>,
) -> KilnResult<VersionRow> {
    let (account, gateway, route) = scope;
    let version = VersionRow {
        id: new_id(),
        elements: elements.clone(),
        comment,
        created_at: utc_timestamp(),
    };
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
    .map_err(db_error)?;
    Ok(version)
}

pub(super) fn insert_deployment(
    db: &Connection,
    scope: Scope<'_>,
    version: &VersionRow,
    comment: Option<String>,
) -> KilnResult<()> {
    let (account, gateway, route) = scope;
    db.execute(
        "INSERT INTO dynamic_route_deployments
             (account, gateway, route, id, version, comment, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            account,
            gateway,
            route,
            new_id(),
            version.id,
            comment,
            utc_timestamp()
        ],
    )
    .map_err(db_error)
    .map(drop)
}

pub(super) fn touch(db: &Connection, scope: Scope<'_>) -> KilnResult<()> {
    let (account, gateway, route) = scope;
    db.execute(
        "UPDATE dynamic_routes SET modified_at = ?4
         WHERE account = ?1 AND gateway = ?2 AND id = ?3",
        params![account, gateway, route, utc_timestamp()],
    )
    .map_err(db_error)
    .map(drop)
}

pub(super) fn route_row(
    db: &Connection,
    account: &str,
    gateway: &str,
    id: &str,
) -> KilnResult<RouteRow> {
    gateways::get(db, account, gateway)?;
    db.query_row(
        "SELECT id, name, created_at, modified_at FROM dynamic_routes
         WHERE account = ?1 AND gateway = ?2 AND id = ?3",
        params![account, gateway, id],
        route_from_row,
    )
    .optional()
    .map_err(db_error)?
    .ok_or_else(|| {
        KilnError::new(
            ErrorKind::NotFound,
            format!("no dynamic route with id {id:?}"),
        )
    })
}

pub(super) fn route_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RouteRow> {
    Ok(RouteRow {
        id: row.get(0)?,
        name: row.get(1)?,
        created_at: row.get(2)?,
        modified_at: row.get(3)?,
    })
}

pub(super) const VERSION_COLUMNS: &str = "id, elements, comment, created_at";

pub(super) fn version_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    let elements: String = row.get(1)?;
    Ok(VersionRow {
        id: row.get(0)?,
        elements: serde_json::from_str(&elements).unwrap_or(Value::Null),
        comment: row.get(2)?,
        created_at: row.get(3)?,
    })
}

pub(super) fn deployment_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRow> {
    Ok(DeploymentRow {
        id: row.get(0)?,
        version: row.get(1)?,
        comment: row.get(2)?,
        created_at: row.get(3)?,
    })
}

pub(super) fn version_row(
    db: &Connection,
    scope: Scope<'_>,
    version: &str,
) -> KilnResult<Option<VersionRow>> {
    let (account, gateway, route) = scope;
    db.query_row(
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

pub(super) fn versions(db: &Connection, scope: Scope<'_>) -> KilnResult<Vec<VersionRow>> {
    let (account, gateway, route) = scope;
    let mut statement = db
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

pub(super) fn latest_deployment(
    db: &Connection,
    scope: Scope<'_>,
) -> KilnResult<Option<DeploymentRow>> {
    let (account, gateway, route) = scope;
    db.query_row(
        "SELECT id, version, comment, created_at FROM dynamic_route_deployments
         WHERE account = ?1 AND gateway = ?2 AND route = ?3 ORDER BY rowid DESC LIMIT 1",
        params![account, gateway, route],
        deployment_from_row,
    )
    .optional()
    .map_err(db_error)
}

/// The deployed version, or the latest one if none is deployed.
pub(super) fn active_version(db: &Connection, scope: Scope<'_>) -> KilnResult<VersionRow> {
    if let Some(deployment) = latest_deployment(db, scope)? {
        if let Some(version) = version_row(db, scope, &deployment.version)? {
            return Ok(version);
        }
    }
    versions(db, scope)?
        .pop()
        .ok_or_else(|| KilnError::internal(format!("dynamic route {:?} has no version", scope.2)))
}

pub(super) fn route_json(
    db: &Connection,
    account: &str,
    gateway: &str,
    row: RouteRow,
) -> KilnResult<Value> {
    let scope = (account, gateway, row.id.as_str());
    let deployment = latest_deployment(db, scope)?;
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
