//! Fine-tunes in PostgreSQL, shared by every node of a cluster: one row per fine-tune and one
//! per uploaded asset (its bytes). Inference needs files, so a node writes a fine-tune's assets
//! under its cache directory the first time it uses them; assets never change once uploaded,
//! so a cached copy is never stale.

use std::fs;
use std::path::PathBuf;

use kiln_core::limits::LoraLimits;
use kiln_core::{KilnError, KilnResult};
use kiln_postgres::{Migration, PgError, Pool};

use super::files::{io_error, write_atomically};
use super::Backend;
use crate::{
    already_uploaded, scan_weights_header, Finetune, TensorHeader, CONFIG_FILE, WEIGHTS_FILE,
};

static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "fine-tunes and their assets",
    sql: "
CREATE TABLE finetunes (
    account TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    description TEXT NOT NULL,
    public BOOLEAN NOT NULL,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    PRIMARY KEY (account, id),
    UNIQUE (account, name)
);
CREATE INDEX finetunes_public ON finetunes (created_at, id) WHERE public;
CREATE TABLE finetune_assets (
    account TEXT NOT NULL,
    id TEXT NOT NULL,
    file_name TEXT NOT NULL,
    contents BYTEA NOT NULL,
    PRIMARY KEY (account, id, file_name),
    FOREIGN KEY (account, id) REFERENCES finetunes (account, id) ON DELETE CASCADE
);
",
}];

const COLUMNS: &str = "id, name, model, description, public, created_at, modified_at";

pub(crate) struct Postgres {
    pool: Pool,
    cache: PathBuf,
}

impl Postgres {
    pub(crate) fn open(url: &str, cache: PathBuf) -> KilnResult<Self> {
        let pool = Pool::open(url, 2).map_err(storage)?;
        pool.migrate("finetunes", MIGRATIONS).map_err(storage)?;
        Ok(Self { pool, cache })
    }

    fn query(&self, sql: String, account: Option<String>) -> KilnResult<Vec<Finetune>> {
        self.pool
            .run(move |client| {
                let rows = match &account {
                    Some(account) => client.query(&sql, &[account])?,
                    None => client.query(&sql, &[])?,
                };
                Ok(rows
                    .iter()
                    .map(|row| Finetune {
                        id: row.get(0),
                        name: row.get(1),
                        model: row.get(2),
                        description: row.get(3),
                        public: row.get(4),
                        created_at: row.get(5),
                        modified_at: row.get(6),
                    })
                    .collect())
            })
            .map_err(storage)
    }
}

impl Backend for Postgres {
    fn insert(&self, account: &str, finetune: &Finetune, max_per_account: usize) -> KilnResult<()> {
        let (account, finetune) = (account.to_owned(), finetune.clone());
        let finetune_name = finetune.name.clone();
        let limit = i64::try_from(max_per_account).unwrap_or(i64::MAX);
        let existing = self
            .pool
            .run(move |client| {
                let mut transaction = client.transaction()?;
                // One creation per account at a time, on every node: the count and the name
                // check below hold until the insert commits.
                transaction.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('kiln-finetunes:' || $1))",
                    &[&account],
                )?;
                let names: Vec<String> = transaction
                    .query("SELECT name FROM finetunes WHERE account = $1", &[&account])?
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                let full = i64::try_from(names.len()).unwrap_or(i64::MAX) >= limit;
                if full || names.contains(&finetune.name) {
                    return Ok(Some(names));
                }
                transaction.execute(
                    &format!(
                        "INSERT INTO finetunes (account, {COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    ),
                    &[
                        &account,
                        &finetune.id,
                        &finetune.name,
                        &finetune.model,
                        &finetune.description,
                        &finetune.public,
                        &finetune.created_at,
                        &finetune.modified_at,
                    ],
                )?;
                transaction.commit()?;
                Ok(None)
            })
            .map_err(storage)?;
        match existing {
            // Refused: the same message as the files backend gives.
            Some(names) => crate::check_room(&names, &finetune_name, max_per_account),
            None => Ok(()),
        }
    }

    fn list(&self, account: &str) -> KilnResult<Vec<Finetune>> {
        self.query(
            format!("SELECT {COLUMNS} FROM finetunes WHERE account = $1 ORDER BY created_at, id"),
            Some(account.to_owned()),
        )
    }

    fn list_public(&self) -> KilnResult<Vec<Finetune>> {
        self.query(
            format!("SELECT {COLUMNS} FROM finetunes WHERE public ORDER BY created_at, id"),
            None,
        )
    }

    fn asset(&self, account: &str, id: &str, file_name: &str) -> KilnResult<Option<Vec<u8>>> {
        let key = (account.to_owned(), id.to_owned(), file_name.to_owned());
        self.pool
            .run(move |client| {
                let row = client.query_opt(
                    "SELECT contents FROM finetune_assets
                     WHERE account = $1 AND id = $2 AND file_name = $3",
                    &[&key.0, &key.1, &key.2],
                )?;
                Ok(row.map(|row| row.get(0)))
            })
            .map_err(storage)
    }

    fn has_asset(&self, account: &str, id: &str, file_name: &str) -> KilnResult<bool> {
        let key = (account.to_owned(), id.to_owned(), file_name.to_owned());
        self.pool
            .run(move |client| {
                let row = client.query_one(
                    "SELECT EXISTS (SELECT 1 FROM finetune_assets
                     WHERE account = $1 AND id = $2 AND file_name = $3)",
                    &[&key.0, &key.1, &key.2],
                )?;
                Ok(row.get(0))
            })
            .map_err(storage)
    }

    fn put_asset(
        &self,
        account: &str,
        id: &str,
        file_name: &str,
        contents: &[u8],
    ) -> KilnResult<()> {
        let key = (account.to_owned(), id.to_owned(), file_name.to_owned());
        let contents = contents.to_vec();
        let inserted = self.pool.run(move |client| {
            client.execute(
                "INSERT INTO finetune_assets (account, id, file_name, contents)
                 VALUES ($1, $2, $3, $4)",
                &[&key.0, &key.1, &key.2, &contents],
            )?;
            Ok(())
        });
        match inserted {
            Err(error) if error.is_unique_violation() => Err(already_uploaded(file_name)),
            other => other.map_err(storage),
        }
    }

    fn weights_header(
        &self,
        account: &str,
        id: &str,
        limits: &LoraLimits,
    ) -> KilnResult<Option<Vec<TensorHeader>>> {
        let key = (account.to_owned(), id.to_owned());
        // The length and the first 8 bytes (the header's length), then only the header.
        let found = self
            .pool
            .run(move |client| {
                let Some(row) = client.query_opt(
                    "SELECT octet_length(contents)::bigint, substring(contents FROM 1 FOR 8)
                     FROM finetune_assets
                     WHERE account = $1 AND id = $2 AND file_name = $3",
                    &[&key.0, &key.1, &WEIGHTS_FILE],
                )?
                else {
                    return Ok(None);
                };
                let file_len: i64 = row.get(0);
                let prefix: Vec<u8> = row.get(1);
                let declared = prefix
                    .get(..8)
                    .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                    .map_or(0, u64::from_le_bytes);
                // Never more than the value itself holds; scan_weights_header checks the rest.
                let take = declared
                    .min(u64::try_from(file_len).unwrap_or(0))
                    .min(i32::MAX as u64 - 8);
                let take = i32::try_from(take + 8).unwrap_or(i32::MAX);
                let header: Vec<u8> = client
                    .query_one(
                        "SELECT substring(contents FROM 1 FOR $4) FROM finetune_assets
                         WHERE account = $1 AND id = $2 AND file_name = $3",
                        &[&key.0, &key.1, &WEIGHTS_FILE, &take],
                    )?
                    .get(0);
                Ok(Some((header, u64::try_from(file_len).unwrap_or(0))))
            })
            .map_err(storage)?;
        match found {
            Some((header, file_len)) => scan_weights_header(&header, file_len, limits).map(Some),
            None => Ok(None),
        }
    }

    fn local_dir(&self, account: &str, id: &str) -> KilnResult<PathBuf> {
        let dir = self.cache.join(account).join(id);
        for file in [CONFIG_FILE, WEIGHTS_FILE] {
            if dir.join(file).is_file() {
                continue;
            }
            let Some(contents) = self.asset(account, id, file)? else {
                // The caller checked both are uploaded; one vanishing means a deleted account.
                return Err(KilnError::internal(format!(
                    "fine-tune {id}: {file} is gone"
                )));
            };
            fs::create_dir_all(&dir).map_err(io_error)?;
            write_atomically(&dir, file, &contents)?;
        }
        Ok(dir)
    }
}

fn storage(error: PgError) -> KilnError {
    error.into_kiln("fine-tunes")
}
