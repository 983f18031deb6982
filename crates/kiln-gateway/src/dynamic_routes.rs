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
use rusqlite::{params, Connection};
use serde_json::{Map, Value};

use rows::*;

pub use condition::{Condition, Op};
pub use counters::{Counters, Live, MAX_COUNTERS};
pub use graph::{
    Element, Graph, Kind, ModelTarget, RateRule, Reached, Surroundings, MAX_ELEMENTS,
    MAX_PERCENTAGE_BRANCHES, MAX_STEPS,
};
pub(crate) use rows::{DeploymentRow, NewRoute, RouteRow, RouteRows, Scope, VersionRow};

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
pub(crate) fn create<D: RouteRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    body: &Value,
) -> KilnResult<Value> {
    db.check_gateway(account, gateway)?;
    let object = object(body)?;
    let name = checked_name(object.get("name"))?;
    let elements = object.get("elements").unwrap_or(&Value::Null);
    Graph::parse(elements)?;
    if db.count_routes(account, gateway)? >= MAX_ROUTES_PER_GATEWAY {
        return Err(KilnError::bad_input(format!(
            "the gateway already has {MAX_ROUTES_PER_GATEWAY} dynamic routes, the most allowed"
        )));
    }
    check_name_free(db, account, gateway, &name)?;
    let now = utc_timestamp();
    let version = new_version(elements, None);
    let route = NewRoute {
        account,
        gateway,
        row: RouteRow {
            id: new_id(),
            name,
            created_at: now.clone(),
            modified_at: now,
        },
        deployment: new_deployment(&version, None),
        version,
    };
    db.insert_route(&route)?;
    get(db, account, gateway, &route.row.id)
}

/// The gateway's routes, oldest first.
pub(crate) fn list<D: RouteRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
) -> KilnResult<Vec<Value>> {
    db.check_gateway(account, gateway)?;
    db.routes(account, gateway)?
        .into_iter()
        .map(|row| route_json(db, account, gateway, row))
        .collect()
}

pub(crate) fn get<D: RouteRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    id: &str,
) -> KilnResult<Value> {
    let row = route_row(db, account, gateway, id)?;
    route_json(db, account, gateway, row)
}

/// `PATCH …/routes/{id} {name}`.
pub(crate) fn rename<D: RouteRows + ?Sized>(
    db: &D,
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
    db.rename_route((account, gateway, id), &name, &utc_timestamp())?;
    get(db, account, gateway, id)
}

/// Deletes the route with its versions and deployments; answers the route as it was.
pub(crate) fn delete<D: RouteRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    id: &str,
) -> KilnResult<Value> {
    let route = get(db, account, gateway, id)?;
    db.delete_route((account, gateway, id))?;
    Ok(route)
}

/// `POST …/routes/{id}/versions {elements, comment}`: a new version, not yet deployed.
pub(crate) fn create_version<D: RouteRows + ?Sized>(
    db: &D,
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
    let scope = (account, gateway, id);
    check_room(db.count_versions(scope)?, "versions")?;
    let version = new_version(elements, comment);
    db.insert_version(scope, &version)?;
    let route = route_row(db, account, gateway, id)?;
    let active = active_version(db, scope)?;
    Ok(version_detail(
        account, gateway, &route, &version, &active.id,
    ))
}

/// The route's versions, oldest first.
pub(crate) fn list_versions<D: RouteRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    id: &str,
) -> KilnResult<Vec<Value>> {
    route_row(db, account, gateway, id)?;
    let active = active_version(db, (account, gateway, id))?;
    Ok(db
        .versions((account, gateway, id))?
        .iter()
        .map(|version| version_json(version, version.id == active.id))
        .collect())
}

pub(crate) fn get_version<D: RouteRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    id: &str,
    version_id: &str,
) -> KilnResult<Value> {
    let route = route_row(db, account, gateway, id)?;
    let version = db
        .version_row((account, gateway, id), version_id)?
        .ok_or_else(|| no_version(id, version_id))?;
    let active = active_version(db, (account, gateway, id))?;
    Ok(version_detail(
        account, gateway, &route, &version, &active.id,
    ))
}

/// `POST …/routes/{id}/deployments {version_id, comment}`: deploys the version; answers the
/// route as it now runs.
pub(crate) fn create_deployment<D: RouteRows + ?Sized>(
    db: &D,
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
    let scope = (account, gateway, id);
    let version = db
        .version_row(scope, version_id)?
        .ok_or_else(|| no_version(id, version_id))?;
    check_room(db.count_deployments(scope)?, "deployments")?;
    db.insert_deployment(scope, &new_deployment(&version, comment))?;
    get(db, account, gateway, id)
}

/// The route's deployments, oldest first.
pub(crate) fn list_deployments<D: RouteRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    id: &str,
) -> KilnResult<Vec<Value>> {
    route_row(db, account, gateway, id)?;
    Ok(db
        .deployments((account, gateway, id))?
        .iter()
        .map(deployment_json)
        .collect())
}

/// The route `name` of a gateway as requests run it.
pub(crate) fn runnable<D: RouteRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    name: &str,
) -> KilnResult<Runnable> {
    let row = db.route_named(account, gateway, name)?.ok_or_else(|| {
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

fn check_name_free<D: RouteRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    name: &str,
) -> KilnResult<()> {
    if db.route_name_taken(account, gateway, name)? {
        return Err(KilnError::new(
            ErrorKind::Conflict,
            format!("gateway {gateway:?} already has a dynamic route named {name:?}"),
        ));
    }
    Ok(())
}

/// Versions and deployments per route are bounded.
fn check_room(count: usize, what: &str) -> KilnResult<()> {
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
