//! SQLite files: opening connections (WAL), the versioned schema migrations, and what moving a
//! database file safely takes (no `-wal`/`-shm` left beside it).
//!
//! Migrations live in `projection/migrations/NNNN_name.sql`, are compiled in, and are applied
//! in order inside one transaction each; `schema_version` records which ran. A database whose
//! schema is newer than this build is refused rather than guessed at.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::FromSql;
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use cart_domain::ids::{CartId, TenantId};

use crate::error::ProjectionError;

/// `(version, name, sql)`, in order. Append only; never edit a released migration.
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/0001_init.sql")),
    (
        2,
        "partial_user_index",
        include_str!("../../migrations/0002_partial_user_index.sql"),
    ),
    (
        3,
        "states_written_behind",
        include_str!("../../migrations/0003_states_written_behind.sql"),
    ),
    (
        4,
        "dropped_indexes",
        include_str!("../../migrations/0004_dropped_indexes.sql"),
    ),
    (
        5,
        "subscription_details",
        include_str!("../../migrations/0005_subscription_details.sql"),
    ),
];

/// The tables whose secondary indexes a catch-up from far behind drops (see
/// [`drop_indexes`]).
const VIEW_TABLES: &str = "'carts', 'cart_lines', 'orders'";

/// How long a connection waits for a lock held by another (e.g. a checkpoint) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Page cache of the writer connection, KiB: the hot part of the views stays in memory, so an
/// update reads no page back from the file or the WAL.
const WRITER_CACHE_KIB: u32 = 64 * 1024;

/// WAL pages after which a commit folds the WAL into the database file. A checkpoint syncs
/// both files on the writer thread, and a catching-up batch dirties ~1,000 pages, so SQLite's
/// default (1,000) would checkpoint after nearly every batch; 8,192 (32 MiB) checkpoints once
/// per several batches, and pages changed by several of them are copied once.
const CHECKPOINT_PAGES: u32 = 8192;

/// Prepared statements a read connection keeps.
const READER_STATEMENTS: usize = 64;

/// The newest schema version this build knows.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// Opens (creating if needed) the database the writer owns: WAL journal, `synchronous=NORMAL`
/// (a commit does not wait for the disk; the writer's sync thread syncs the WAL before the
/// commit's messages are acknowledged, see [`crate::write::durability`]), checkpoints every
/// [`CHECKPOINT_PAGES`], migrated to the latest schema.
/// Temporary data (sorts, statement journals) stays in memory: it never needs to survive a
/// crash, and writing it to a file cost as much as the views themselves.
pub fn open_writer(path: &Path) -> Result<Connection, ProjectionError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| ProjectionError::Io {
            what: "cannot create the database directory",
            path: dir.display().to_string(),
            source,
        })?;
    }
    let mut conn = Connection::open(path).map_err(ProjectionError::db("open database"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(ProjectionError::db("busy timeout"))?;
    let mode: String = query_value(&conn, "PRAGMA journal_mode = WAL", "enable WAL")?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(ProjectionError::Io {
            what: "SQLite refused WAL mode for",
            path: path.display().to_string(),
            source: std::io::Error::other(format!("journal_mode is {mode}")),
        });
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES};"
    ))
    .map_err(ProjectionError::db("pragmas"))?;
    // Indexes dropped by a catch-up that did not finish come back first, so migrations and
    // queries find the schema they expect.
    let has_dropped: bool = query_value(
        &conn,
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dropped_indexes')",
        "read schema",
    )?;
    if has_dropped {
        restore_indexes(&mut conn)?;
    }
    migrate(&mut conn)?;
    Ok(conn)
}

/// Drops the secondary indexes of the view tables, keeping their SQL in `dropped_indexes`
/// (one transaction). Returns how many were dropped.
pub fn drop_indexes(conn: &mut Connection) -> Result<usize, ProjectionError> {
    let tx = conn
        .transaction()
        .map_err(ProjectionError::db("begin dropping indexes"))?;
    let indexes = view_indexes(&tx)?;
    for (name, sql) in &indexes {
        tx.execute(
            "INSERT INTO dropped_indexes (name, sql) VALUES (?1, ?2)",
            params![name, sql],
        )
        .and_then(|_| tx.execute_batch(&format!("DROP INDEX \"{name}\"")))
        .map_err(ProjectionError::db("drop index"))?;
    }
    tx.commit()
        .map_err(ProjectionError::db("commit dropping indexes"))?;
    Ok(indexes.len())
}

/// `(name, sql)` of the secondary indexes of the view tables, by name.
pub fn view_indexes(conn: &Connection) -> Result<Vec<(String, String)>, ProjectionError> {
    names_and_sql(
        conn,
        &format!(
            "SELECT name, sql FROM sqlite_master
             WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ({VIEW_TABLES})
             ORDER BY name"
        ),
    )
}

/// Whether indexes are listed in `dropped_indexes` (the schema is migrated).
pub fn indexes_dropped(conn: &Connection) -> Result<bool, ProjectionError> {
    query_value(
        conn,
        "SELECT EXISTS (SELECT 1 FROM dropped_indexes)",
        "read dropped indexes",
    )
}

/// The one value `query` (without parameters) selects; `what` names it in the error.
pub fn query_value<T: FromSql>(
    conn: &Connection,
    query: &str,
    what: &'static str,
) -> Result<T, ProjectionError> {
    conn.query_row(query, [], |r| r.get(0))
        .map_err(ProjectionError::db(what))
}

/// The `(name, sql)` rows of `query`.
fn names_and_sql(conn: &Connection, query: &str) -> Result<Vec<(String, String)>, ProjectionError> {
    conn.prepare(query)
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(ProjectionError::db("list indexes"))
}

/// Creates the indexes listed in `dropped_indexes` again (one transaction). Returns how many.
pub fn restore_indexes(conn: &mut Connection) -> Result<usize, ProjectionError> {
    let tx = conn
        .transaction()
        .map_err(ProjectionError::db("begin restoring indexes"))?;
    let indexes = names_and_sql(&tx, "SELECT name, sql FROM dropped_indexes ORDER BY name")?;
    for (name, sql) in &indexes {
        tx.execute_batch(sql)
            .and_then(|_| tx.execute("DELETE FROM dropped_indexes WHERE name = ?1", [name]))
            .map_err(ProjectionError::db("restore index"))?;
    }
    tx.commit()
        .map_err(ProjectionError::db("commit restoring indexes"))?;
    Ok(indexes.len())
}

/// A connection for queries: never writes (`query_only`), so a bug cannot change the views.
pub fn open_reader(path: &Path) -> Result<Connection, ProjectionError> {
    let conn = Connection::open(path).map_err(ProjectionError::db("open database for reading"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(ProjectionError::db("busy timeout"))?;
    conn.execute_batch("PRAGMA query_only = ON;")
        .map_err(ProjectionError::db("pragmas"))?;
    // The cart list alone has ~40 shapes (status × since × user × cursor): keep them all.
    conn.set_prepared_statement_cache_capacity(READER_STATEMENTS);
    Ok(conn)
}

/// Applies every migration newer than the database's version. Returns the resulting version.
pub fn migrate(conn: &mut Connection) -> Result<u32, ProjectionError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at TEXT NOT NULL
         );",
    )
    .map_err(ProjectionError::db("create schema_version"))?;
    let current: u32 = query_value(
        conn,
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        "read schema_version",
    )?;
    if current > latest_version() {
        return Err(ProjectionError::SchemaTooNew {
            found: current,
            known: latest_version(),
        });
    }
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let failed = |source| ProjectionError::Migration {
            version,
            name,
            source,
        };
        let tx = conn.transaction().map_err(failed)?;
        tx.execute_batch(sql).map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![version, name, now_rfc3339()],
        )
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(version, name, "applied database migration");
    }
    Ok(latest_version())
}

/// The last applied stream sequence.
pub fn checkpoint(conn: &Connection) -> Result<u64, ProjectionError> {
    read_sequence(conn, "SELECT last_sequence FROM checkpoint WHERE id = 1")
}

/// The sequence `query` reads from the checkpoint row (0 without one).
fn read_sequence(conn: &Connection, query: &str) -> Result<u64, ProjectionError> {
    let seq: Option<i64> = conn
        .prepare_cached(query)
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
        .map_err(ProjectionError::db("read checkpoint"))?;
    Ok(seq.map(to_u64).unwrap_or(0))
}

pub fn set_checkpoint(conn: &Connection, seq: u64) -> Result<(), ProjectionError> {
    conn.prepare_cached(
        "UPDATE checkpoint SET last_sequence = ?1 WHERE id = 1 AND last_sequence < ?1",
    )
    .and_then(|mut s| s.execute(params![to_i64(seq)]))
    .map_err(ProjectionError::db("write checkpoint"))?;
    Ok(())
}

/// The checkpoint at the last write of the cart states (see `migrations/0003`): every stored
/// state includes its cart's messages up to it.
pub fn states_checkpoint(conn: &Connection) -> Result<u64, ProjectionError> {
    read_sequence(conn, "SELECT states_sequence FROM checkpoint WHERE id = 1")
}

pub fn set_states_checkpoint(conn: &Connection, seq: u64) -> Result<(), ProjectionError> {
    conn.prepare_cached("UPDATE checkpoint SET states_sequence = ?1 WHERE id = 1")
        .and_then(|mut s| s.execute(params![to_i64(seq)]))
        .map_err(ProjectionError::db("write states checkpoint"))?;
    Ok(())
}

/// A message the database has applied, to recognise the stream it was built from by: the
/// sequence and subject of the newest message applied to a cart (`None` without a cart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    pub sequence: u64,
    pub subject: String,
}

/// The [`Witness`] of the database: its cart with the highest version (the stream sequence of
/// the cart's last applied message), on that cart's subject.
pub fn witness(conn: &Connection) -> Result<Option<Witness>, ProjectionError> {
    let newest: Option<(String, String, i64)> = conn
        .query_row(
            "SELECT tenant, cart_id, version FROM carts ORDER BY version DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(ProjectionError::db("read the newest cart"))?;
    Ok(newest.and_then(|(tenant, cart, version)| {
        let tenant = TenantId::parse(&tenant).ok()?;
        let cart = CartId::parse(&cart).ok()?;
        Some(Witness {
            sequence: to_u64(version),
            subject: shared::subjects::cart_events(&tenant, &cart),
        })
    }))
}

/// Folds the WAL into the main file and leaves WAL mode, so the file alone is the database
/// and can be renamed. Needs to be the only connection to the file.
pub fn fold_wal(conn: &Connection) -> Result<(), ProjectionError> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(ProjectionError::db("checkpoint WAL"))?;
    let mode: String = query_value(conn, "PRAGMA journal_mode = DELETE", "leave WAL mode")?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(ProjectionError::Db {
            what: "leave WAL mode (another connection is still open)",
            source: rusqlite::Error::InvalidQuery,
        });
    }
    Ok(())
}

/// `path` with `suffix` appended to the file name (`x.db` → `x.db-wal`).
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Deletes a database file and its journal files; missing files are fine.
pub fn remove_files(path: &Path) -> Result<(), ProjectionError> {
    for p in [
        path.to_path_buf(),
        sibling(path, "-wal"),
        sibling(path, "-shm"),
        sibling(path, "-journal"),
    ] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ProjectionError::Io {
                    what: "cannot remove",
                    path: p.display().to_string(),
                    source,
                });
            }
        }
    }
    Ok(())
}

pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// SQLite integers are signed; sequences and counts beyond `i64::MAX` do not occur.
pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_refuse_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/p.db");
        let conn = open_writer(&path).unwrap();
        assert_eq!(checkpoint(&conn).unwrap(), 0);
        set_checkpoint(&conn, 7).unwrap();
        set_checkpoint(&conn, 3).unwrap();
        assert_eq!(
            checkpoint(&conn).unwrap(),
            7,
            "the checkpoint never moves back"
        );
        drop(conn);

        let mut conn = open_writer(&path).unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), latest_version());
        let rows: u32 = conn
            .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, latest_version());
        conn.execute("INSERT INTO schema_version VALUES (999, 'future', 'x')", [])
            .unwrap();
        drop(conn);
        let err = open_writer(&path).unwrap_err();
        assert!(
            matches!(err, ProjectionError::SchemaTooNew { found: 999, .. }),
            "{err}"
        );
    }

    #[test]
    fn anonymous_carts_stay_out_of_the_user_index() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&dir.path().join("p.db")).unwrap();
        // That user lists still use it: queries::tests.
        let partial: bool = conn
            .query_row(
                "SELECT partial FROM pragma_index_list('carts') WHERE name = 'carts_by_user'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(partial, "carts_by_user leaves out carts without a user");
    }

    #[test]
    fn dropped_indexes_come_back_identical_when_restored_or_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let mut conn = open_writer(&path).unwrap();
        let before = view_indexes(&conn).unwrap();
        assert!(
            before.iter().any(|(n, _)| n == "carts_by_status"),
            "{before:?}"
        );
        assert_eq!(drop_indexes(&mut conn).unwrap(), before.len());
        assert!(indexes_dropped(&conn).unwrap());
        assert!(view_indexes(&conn).unwrap().is_empty());
        assert_eq!(restore_indexes(&mut conn).unwrap(), before.len());
        assert_eq!(view_indexes(&conn).unwrap(), before);
        assert_eq!(
            restore_indexes(&mut conn).unwrap(),
            0,
            "nothing left to restore"
        );

        // Dropped, then the process stops: opening the file brings them back.
        drop_indexes(&mut conn).unwrap();
        drop(conn);
        let conn = open_writer(&path).unwrap();
        assert_eq!(view_indexes(&conn).unwrap(), before);
    }

    #[test]
    fn fold_wal_leaves_a_single_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let conn = open_writer(&path).unwrap();
        set_checkpoint(&conn, 5).unwrap();
        fold_wal(&conn).unwrap();
        drop(conn);
        assert!(!sibling(&path, "-wal").exists());
        assert!(!sibling(&path, "-shm").exists());
        let moved = dir.path().join("q.db");
        std::fs::rename(&path, &moved).unwrap();
        let conn = open_writer(&moved).unwrap();
        assert_eq!(checkpoint(&conn).unwrap(), 5);
        drop(conn);
        remove_files(&moved).unwrap();
        assert!(!moved.exists());
    }
}
