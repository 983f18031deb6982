//! Dynamic routes (spec §4.10): named graphs of elements, kept in versions, one of which is
//! deployed, that the compat endpoint runs for `model: "dynamic/<name>"`.
//!
//! The JSON is that of Cloudflare's SDK (`aiGateway.dynamicRouting`): a route is
//! `{id, name, account_tag, gateway_id, created_at, modified_at, elements, deployment, version}`
//! with the deployed version's elements; creating a route writes its first version and deploys
//! it. A route with no deployment runs its latest version.

mod condition;
mod counters;
mod graph;
mod rows;

use kiln_core::time::utc_timestamp;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};

use crate::{db_error, gateways};
use rows::*;

pub use condition::{Condition, Op};
pub use counters::{Counters, Live, MAX_COUNTERS};
pub use graph::{
    Element, Graph, Kind, ModelTarget, RateRule, Reached, Surroundings, MAX_ELEMENTS,
    MAX_PERCENTAGE_BRANCHES, MAX_STEPS,
};

/// Routes per gateway.
pub const MAX_ROUTES_PER_GATEWAY: usize = 100;
/// Versions, and deployments, per route.
pub const MAX_VERSIONS_PER_ROUTE: usize = 1000;
/// Route names, in characters: the name goes into `model: "dynamic/<name>"`.
pub const MAX_NAME_CHARS: usize = 64;
const MAX_COMMENT_CHARS: usize = 1024;

pub fn create_schema(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS dynamic_routes (
             account TEXT NOT NULL,
             gateway TEXT NOT NULL,
             id TEXT NOT NULL,
             name TEXT NOT NULL,
             created_at TEXT NOT NULL,
             modified_at TEXT NOT NULL,
             PRIMARY KEY (account, gateway, id),
             UNIQUE (account, gateway, name)
         );
         CREATE TABLE IF NOT EXISTS dynamic_route_versions (
             account TEXT NOT NULL,
             gateway TEXT NOT NULL,
             route TEXT NOT NULL,
             id TEXT NOT NULL,
             elements TEXT NOT NULL,
             comment TEXT,
             created_at TEXT NOT NULL,
             PRIMARY KEY (account, gateway, route, id)
         );
         CREATE TABLE IF NOT EXISTS dynamic_route_deployments (
             account TEXT NOT NULL,
             gateway TEXT NOT NULL,
             route TEXT NOT NULL,
             id TEXT NOT NULL,
             version TEXT NOT NULL,
             comment TEXT,
             created_at TEXT NOT NULL,
             PRIMARY KEY (account, gateway, route, id)
         );",
    )
}

/// A route's deployed (or latest) version, ready to walk.
#[derive(Debug, Clone)]
pub struct Runnable {
    pub route_id: String,
    pub name: String,
    pub version_id: String,
    pub graph: Graph,
}

/// `POST …/gateways/{gateway}/routes {name, elements}`: the route, its first version, and
/// that version's deployment.
pub fn create(db: &Connection, account: &str, gateway: &str, body: &Value) -> KilnResult<Value> {
    gateways::get(db, account, gateway)?;
    let object = object(body)?;
    let name = checked_name(object.get("name"))?;
    let elements = object.get("elements").unwrap_or(&Value::Null);
    Graph::parse(elements)?;
    let count: usize = db
        .query_row(
            "SELECT COUNT(*) FROM dynamic_routes WHERE account = ?1 AND gateway = ?2",
            params![account, gateway],
            |row| row.get(0),
        )
        .map_err(db_error)?;
    if count >= MAX_ROUTES_PER_GATEWAY {
        return Err(KilnError::bad_input(format!(
            "the gateway already has {MAX_ROUTES_PER_GATEWAY} dynamic routes, the most allowed"
        )));
    }
    check_name_free(db, account, gateway, &name)?;
    let id = new_id();
    let now = utc_timestamp();
    let transaction = db.unchecked_transaction().map_err(db_error)?;
    transaction
        .execute(
            "INSERT INTO dynamic_routes (account, gateway, id, name, created_at, modified_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![account, gateway, id, name, now],
        )
        .map_err(db_error)?;
    let version = insert_version(&transaction, (account, gateway, &id), elements, None)?;
    insert_deployment(&transaction, (account, gateway, &id), &version, None)?;
    transaction.commit().map_err(db_error)?;
    get(db, account, gateway, &id)
}

/// The gateway's routes, oldest first.
pub fn list(db: &Connection, account: &str, gateway: &str) -> KilnResult<Vec<Value>> {
    gateways::get(db, account, gateway)?;
    let mut statement = db
        .prepare(
            "SELECT id, name, created_at, modified_at FROM dynamic_routes
             WHERE account = ?1 AND gateway = ?2 ORDER BY rowid",
        )
        .map_err(db_error)?;
    let rows = statement
        .query_map(params![account, gateway], route_from_row)
        .map_err(db_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_error)?;
    rows.into_iter()
        .map(|row| route_json(db, account, gateway, row))
        .collect()
}

pub fn get(db: &Connection, account: &str, gateway: &str, id: &str) -> KilnResult<Value> {
    let row = route_row(db, account, gateway, id)?;
    route_json(db, account, gateway, row)
}

/// `PATCH …/routes/{id} {name}`.
pub fn rename(
    db: &Connection,
    account: &str,
    gateway: &str,
    id: &str,
    body: &Value,
) -> KilnResult<Value> {
    let row = route_row(db, account, gateway, id)?;
    let name = checked_name(object(body)?.get("name"))?;
    if name != row.name {
        check_name_free(db, account, gateway, &name)?;
    }
    db.execute(
        "UPDATE dynamic_routes SET name = ?4, modified_at = ?5
         WHERE account = ?1 AND gateway = ?2 AND id = ?3",
        params![account, gateway, id, name, utc_timestamp()],
    )
    .map_err(db_error)?;
    get(db, account, gateway, id)
}

/// Deletes the route with its versions and deployments; answers the route as it was.
pub fn delete(db: &Connection, account: &str, gateway: &str, id: &str) -> KilnResult<Value> {
    let route = get(db, account, gateway, id)?;
    let transaction = db.unchecked_transaction().map_err(db_error)?;
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
    transaction.commit().map_err(db_error)?;
    Ok(route)
}

/// `POST …/routes/{id}/versions {elements, comment}`: a new version, not yet deployed.
pub fn create_version(
    db: &Connection,
    account: &str,
    gateway: &str,
    id: &str,
    body: &Value,
) -> KilnResult<Value> {
    route_row(db, account, gateway, id)?;
    let object = object(body)?;
    let elements = object.get("elements").unwrap_or(&Value::Null);
    Graph::parse(elements)?;
    let comment = checked_comment(object.get("comment"))?;
    check_room(
        db,
        "dynamic_route_versions",
        (account, gateway, id),
        "versions",
    )?;
    let transaction = db.unchecked_transaction().map_err(db_error)?;
    let version = insert_version(&transaction, (account, gateway, id), elements, comment)?;
    touch(&transaction, (account, gateway, id))?;
    transaction.commit().map_err(db_error)?;
    let route = route_row(db, account, gateway, id)?;
    let active = active_version(db, (account, gateway, id))?;
    Ok(version_detail(
        account, gateway, &route, &version, &active.id,
    ))
}

/// The route's versions, oldest first.
pub fn list_versions(
    db: &Connection,
    account: &str,
    gateway: &str,
    id: &str,
) -> KilnResult<Vec<Value>> {
    route_row(db, account, gateway, id)?;
    let active = active_version(db, (account, gateway, id))?;
    Ok(versions(db, (account, gateway, id))?
        .iter()
        .map(|version| version_json(version, version.id == active.id))
        .collect())
}

pub fn get_version(
    db: &Connection,
    account: &str,
    gateway: &str,
    id: &str,
    version_id: &str,
) -> KilnResult<Value> {
    let route = route_row(db, account, gateway, id)?;
    let version = version_row(db, (account, gateway, id), version_id)?
        .ok_or_else(|| no_version(id, version_id))?;
    let active = active_version(db, (account, gateway, id))?;
    Ok(version_detail(
        account, gateway, &route, &version, &active.id,
    ))
}

/// `POST …/routes/{id}/deployments {version_id, comment}`: deploys the version; answers the
/// route as it now runs.
pub fn create_deployment(
    db: &Connection,
    account: &str,
    gateway: &str,
    id: &str,
    body: &Value,
) -> KilnResult<Value> {
    route_row(db, account, gateway, id)?;
    let object = object(body)?;
    let version_id = object
        .get("version_id")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| KilnError::bad_input("'version_id' is required"))?;
    let comment = checked_comment(object.get("comment"))?;
    let version = version_row(db, (account, gateway, id), version_id)?
        .ok_or_else(|| no_version(id, version_id))?;
    check_room(
        db,
        "dynamic_route_deployments",
        (account, gateway, id),
        "deployments",
    )?;
    let transaction = db.unchecked_transaction().map_err(db_error)?;
    insert_deployment(&transaction, (account, gateway, id), &version, comment)?;
    touch(&transaction, (account, gateway, id))?;
    transaction.commit().map_err(db_error)?;
    get(db, account, gateway, id)
}

/// The route's deployments, oldest first.
pub fn list_deployments(
    db: &Connection,
    account: &str,
    gateway: &str,
    id: &str,
) -> KilnResult<Vec<Value>> {
    route_row(db, account, gateway, id)?;
    let mut statement = db
        .prepare(
            "SELECT id, version, comment, created_at FROM dynamic_route_deployments
             WHERE account = ?1 AND gateway = ?2 AND route = ?3 ORDER BY rowid",
        )
        .map_err(db_error)?;
    let rows = statement
        .query_map(params![account, gateway, id], deployment_from_row)
        .map_err(db_error)?;
    rows.map(|row| row.map(|d| deployment_json(&d)).map_err(db_error))
        .collect()
}

/// The route `name` of a gateway as requests run it.
pub fn runnable(db: &Connection, account: &str, gateway: &str, name: &str) -> KilnResult<Runnable> {
    let row = db
        .query_row(
            "SELECT id, name, created_at, modified_at FROM dynamic_routes
             WHERE account = ?1 AND gateway = ?2 AND name = ?3",
            params![account, gateway, name],
            route_from_row,
        )
        .optional()
        .map_err(db_error)?
        .ok_or_else(|| {
            KilnError::new(
                ErrorKind::NotFound,
                format!(
                    "no dynamic route named {name:?} in gateway {gateway:?}: create it at \
                     /accounts/{account}/ai-gateway/gateways/{gateway}/routes"
                ),
            )
        })?;
    let version = active_version(db, (account, gateway, &row.id))?;
    let graph = Graph::parse(&version.elements).map_err(|error| {
        KilnError::internal(format!("stored route {:?}: {}", row.name, error.message))
    })?;
    Ok(Runnable {
        route_id: row.id,
        name: row.name,
        version_id: version.id,
        graph,
    })
}

/// Removes every route of a gateway (when the gateway goes).
pub fn purge_gateway(db: &Connection, account: &str, gateway: &str) -> rusqlite::Result<()> {
    for table in [
        "dynamic_routes",
        "dynamic_route_versions",
        "dynamic_route_deployments",
    ] {
        db.execute(
            &format!("DELETE FROM {table} WHERE account = ?1 AND gateway = ?2"),
            params![account, gateway],
        )?;
    }
    Ok(())
}

fn object(body: &Value) -> KilnResult<&Map<String, Value>> {
    body.as_object()
        .ok_or_else(|| KilnError::bad_input("the body must be a JSON object"))
}

/// A route name: 1 to 64 characters, none of them `/`, white space or control characters.
fn checked_name(name: Option<&Value>) -> KilnResult<String> {
    match name.and_then(Value::as_str) {
        Some(name)
            if !name.is_empty()
                && name.chars().count() <= MAX_NAME_CHARS
                && !name
                    .chars()
                    .any(|c| c == '/' || c.is_whitespace() || c.is_control()) =>
        {
            Ok(name.to_owned())
        }
        _ => Err(KilnError::bad_input(format!(
            "'name' is required: 1 to {MAX_NAME_CHARS} characters without '/' or spaces (it \
             is called as model \"dynamic/<name>\")"
        ))),
    }
}

fn checked_comment(comment: Option<&Value>) -> KilnResult<Option<String>> {
    match comment {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.chars().count() <= MAX_COMMENT_CHARS => {
            Ok(Some(text.clone()))
        }
        Some(_) => Err(KilnError::bad_input(format!(
            "'comment' must be a string of at most {MAX_COMMENT_CHARS} characters"
        ))),
    }
}

fn check_name_free(db: &Connection, account: &str, gateway: &str, name: &str) -> KilnResult<()> {
    let taken: bool = db
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM dynamic_routes
                            WHERE account = ?1 AND gateway = ?2 AND name = ?3)",
            params![account, gateway, name],
            |row| row.get(0),
        )
        .map_err(db_error)?;
    if taken {
        return Err(KilnError::new(
            ErrorKind::Conflict,
            format!("gateway {gateway:?} already has a dynamic route named {name:?}"),
        ));
    }
    Ok(())
}

fn check_room(db: &Connection, table: &str, scope: Scope<'_>, what: &str) -> KilnResult<()> {
    let (account, gateway, route) = scope;
    let count: usize = db
        .query_row(
            &format!(
                "SELECT COUNT(*) FROM {table} WHERE account = ?1 AND gateway = ?2 AND route = ?3"
            ),
            params![account, gateway, route],
            |row| row.get(0),
        )
        .map_err(db_error)?;
    if count >= MAX_VERSIONS_PER_ROUTE {
        return Err(KilnError::bad_input(format!(
            "the route already has {MAX_VERSIONS_PER_ROUTE} {what}, the most allowed: create a \
             new route"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
