//! Versioned schema migrations, recorded per component in `kiln_migrations`.

use std::collections::BTreeSet;

use postgres::Client;

use crate::error::{PgError, PgErrorKind};

/// One step of a component's schema. Versions start at 1 and never change once released:
/// a later change is a new migration.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) fn apply(
    client: &mut Client,
    component: &str,
    migrations: &[Migration],
) -> Result<(), PgError> {
    let mut tx = client.transaction()?;
    // Nodes starting together queue here; the lock is per schema, released at commit.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('kiln_migrations:' || current_schema()))",
        &[],
    )?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS kiln_migrations (
             component TEXT NOT NULL,
             version INTEGER NOT NULL,
             name TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
             PRIMARY KEY (component, version)
         )",
    )?;
    let applied: BTreeSet<i32> = tx
        .query(
            "SELECT version FROM kiln_migrations WHERE component = $1",
            &[&component],
        )?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let newest_known = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(newer) = applied.iter().find(|v| **v > newest_known) {
        return Err(PgError::new(
            PgErrorKind::Other,
            format!(
                "the database's {component} schema is at version {newer}, newer than this \
                 build knows ({newest_known}); upgrade Kiln on this node"
            ),
        ));
    }
    for migration in migrations {
        if applied.contains(&migration.version) {
            continue;
        }
        tracing::info!(
            component,
            version = migration.version,
            name = migration.name,
            "applying PostgreSQL migration"
        );
        tx.batch_execute(migration.sql)?;
        tx.execute(
            "INSERT INTO kiln_migrations (component, version, name) VALUES ($1, $2, $3)",
            &[&component, &migration.version, &migration.name],
        )?;
    }
    tx.commit()?;
    Ok(())
}
