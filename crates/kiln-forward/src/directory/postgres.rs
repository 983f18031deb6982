//! The directory as a PostgreSQL table: each beat rewrites this node's row and reads everyone
//! else's, aged on the database's clock whatever the nodes' clocks say.

use std::time::Duration;

use kiln_core::{KilnError, KilnResult};
use kiln_http::forward::Peer;
use kiln_postgres::{Migration, PgError, Pool};

use super::{Announcement, Beacon, NodeDirectory, PeerRow, FORGET_AFTER};

/// The database's clock in milliseconds.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "the nodes of a cluster and what they serve",
    sql: "
CREATE TABLE cluster_nodes (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    serves TEXT[] NOT NULL,
    load INTEGER NOT NULL,
    seen_ms BIGINT NOT NULL
);
",
}];

pub(super) struct TableBeacon {
    pool: Pool,
}

impl TableBeacon {
    pub(super) fn open(postgres_url: &str) -> KilnResult<Self> {
        let pool = Pool::open(postgres_url, 1).map_err(storage)?;
        pool.migrate("nodes", MIGRATIONS).map_err(storage)?;
        Ok(Self { pool })
    }
}

impl Beacon for TableBeacon {
    /// Writes this node's row (or removes it while draining) and reads everyone else's.
    fn beat(
        &self,
        directory: &NodeDirectory,
        url: &str,
        announcement: Option<Announcement>,
    ) -> KilnResult<()> {
        let name = directory.name.clone();
        let url = url.to_owned();
        let upsert = format!(
            "INSERT INTO cluster_nodes (name, url, serves, load, seen_ms)
             VALUES ($1, $2, $3, $4, {NOW_MS})
             ON CONFLICT (name) DO UPDATE SET url = excluded.url, serves = excluded.serves,
                 load = excluded.load, seen_ms = excluded.seen_ms"
        );
        let select = format!(
            "SELECT name, url, serves, load, {NOW_MS} - seen_ms FROM cluster_nodes
             WHERE name <> $1 AND seen_ms > {NOW_MS} - $2"
        );
        let forget_after_ms = i64::try_from(FORGET_AFTER.as_millis()).unwrap_or(i64::MAX);
        let rows = self
            .pool
            .run(move |client| {
                match &announcement {
                    Some(announcement) => {
                        let load = i32::try_from(announcement.load).unwrap_or(i32::MAX);
                        client.execute(&upsert, &[&name, &url, &announcement.serves, &load])?;
                    }
                    None => {
                        client.execute("DELETE FROM cluster_nodes WHERE name = $1", &[&name])?;
                    }
                }
                let rows = client.query(&select, &[&name, &forget_after_ms])?;
                Ok(rows
                    .iter()
                    .map(|row| {
                        let age_ms = u64::try_from(row.get::<_, i64>(4)).unwrap_or(0);
                        PeerRow::seen(
                            Peer {
                                name: row.get(0),
                                url: row.get(1),
                            },
                            row.get::<_, Vec<String>>(2).into_iter().collect(),
                            u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
                            Duration::from_millis(age_ms),
                        )
                    })
                    .collect::<Vec<_>>())
            })
            .map_err(storage)?;
        directory.replace_peers(rows);
        Ok(())
    }
}

fn storage(error: PgError) -> KilnError {
    error.into_kiln("cluster directory")
}
