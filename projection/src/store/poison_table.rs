//! The `poison` table in the projection's own SQLite file: the messages this projection gave
//! up on, with the reason, whether they reached `DEAD_LETTERS`, and whether an operator has
//! replayed them since. It is what `ListDeadLetters` lists and what a replay marks.
//!
//! Publishing the message to the `DEAD_LETTERS` stream on NATS is
//! [`crate::consume::dead_letter_stream`]'s; this table is the local record, and it survives a
//! rebuild ([`carry_over`]).

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::ProjectionError;
use crate::store::db::{now_rfc3339, query_value, to_i64, to_u64};

/// A message given up on, as stored and as `ListDeadLetters` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoisonRecord {
    pub id: u64,
    pub consumer: String,
    pub tenant: String,
    pub cart_id: String,
    pub subject: String,
    pub stream_sequence: u64,
    pub reason: String,
    pub deliveries: u32,
    pub failed_at: String,
    /// Published to `DEAD_LETTERS` (false for failures found by a rebuild, or when the
    /// publish itself failed).
    pub dead_lettered: bool,
    pub replayed_at: Option<String>,
    pub replay_error: Option<String>,
}

impl PoisonRecord {
    /// A new record (id assigned on insert) for the message at `subject`/`stream_sequence`.
    pub fn new(
        consumer: &str,
        subject: &str,
        stream_sequence: u64,
        reason: &str,
        deliveries: i64,
        dead_lettered: bool,
    ) -> Self {
        let (tenant, cart_id) = match shared::subjects::CartEventSubject::parse(subject) {
            Ok(s) => (s.tenant.to_string(), s.cart_id.to_string()),
            Err(_) => (String::new(), String::new()),
        };
        Self {
            id: 0,
            consumer: consumer.to_owned(),
            tenant,
            cart_id,
            subject: subject.to_owned(),
            stream_sequence,
            reason: reason.to_owned(),
            deliveries: u32::try_from(deliveries.max(0)).unwrap_or(u32::MAX),
            failed_at: now_rfc3339(),
            dead_lettered,
            replayed_at: None,
            replay_error: None,
        }
    }
}

const COLUMNS: &str = "id, consumer, tenant, cart_id, subject, stream_sequence, reason, deliveries,
    failed_at, dead_lettered, replayed_at, replay_error";

fn from_row(r: &Row<'_>) -> rusqlite::Result<PoisonRecord> {
    Ok(PoisonRecord {
        id: to_u64(r.get(0)?),
        consumer: r.get(1)?,
        tenant: r.get(2)?,
        cart_id: r.get(3)?,
        subject: r.get(4)?,
        stream_sequence: to_u64(r.get(5)?),
        reason: r.get(6)?,
        deliveries: r.get(7)?,
        failed_at: r.get(8)?,
        dead_lettered: r.get(9)?,
        replayed_at: r.get(10)?,
        replay_error: r.get(11)?,
    })
}

pub fn insert(conn: &Connection, p: &PoisonRecord) -> Result<u64, ProjectionError> {
    conn.execute(
        "INSERT INTO poison (consumer, tenant, cart_id, subject, stream_sequence, reason,
             deliveries, failed_at, dead_lettered)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            p.consumer,
            p.tenant,
            p.cart_id,
            p.subject,
            to_i64(p.stream_sequence),
            p.reason,
            p.deliveries,
            p.failed_at,
            p.dead_lettered,
        ],
    )
    .map_err(ProjectionError::db("insert poison record"))?;
    Ok(to_u64(conn.last_insert_rowid()))
}

pub fn get(conn: &Connection, id: u64) -> Result<Option<PoisonRecord>, ProjectionError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM poison WHERE id = ?1"),
        params![to_i64(id)],
        from_row,
    )
    .optional()
    .map_err(ProjectionError::db("read poison record"))
}

/// Newest first; `tenant` `None` lists every tenant (admin view).
pub fn list(
    conn: &Connection,
    tenant: Option<&str>,
    limit: u32,
) -> Result<Vec<PoisonRecord>, ProjectionError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM poison WHERE (?1 IS NULL OR tenant = ?1)
             ORDER BY id DESC LIMIT ?2"
        ))
        .map_err(ProjectionError::db("list poison records"))?;
    let rows = stmt
        .query_map(params![tenant, limit], from_row)
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(ProjectionError::db("list poison records"))?;
    Ok(rows)
}

/// Dead letters not replayed yet.
pub fn open_count(conn: &Connection) -> Result<u64, ProjectionError> {
    query_value::<i64>(
        conn,
        "SELECT COUNT(*) FROM poison WHERE replayed_at IS NULL",
        "count poison records",
    )
    .map(to_u64)
}

/// Stream sequences in `from..=to` given up on and not replayed (their messages were never
/// applied).
pub fn unapplied_between(
    conn: &Connection,
    from: u64,
    to: u64,
) -> Result<std::collections::HashSet<u64>, ProjectionError> {
    conn.prepare_cached(
        "SELECT stream_sequence FROM poison
         WHERE stream_sequence BETWEEN ?1 AND ?2 AND replayed_at IS NULL",
    )
    .and_then(|mut s| {
        s.query_map(params![to_i64(from), to_i64(to)], |r| r.get::<_, i64>(0))?
            .map(|r| r.map(to_u64))
            .collect()
    })
    .map_err(ProjectionError::db("read poison sequences"))
}

pub fn mark_replayed(conn: &Connection, id: u64) -> Result<(), ProjectionError> {
    conn.execute(
        "UPDATE poison SET replayed_at = ?2, replay_error = NULL WHERE id = ?1",
        params![to_i64(id), now_rfc3339()],
    )
    .map_err(ProjectionError::db("mark poison record replayed"))?;
    Ok(())
}

pub fn mark_replay_failed(conn: &Connection, id: u64, error: &str) -> Result<(), ProjectionError> {
    conn.execute(
        "UPDATE poison SET replay_error = ?2 WHERE id = ?1",
        params![to_i64(id), error],
    )
    .map_err(ProjectionError::db("record replay failure"))?;
    Ok(())
}

/// Whether the database it replaces (`old`) has applied more of `CART_EVENTS` than the fresh
/// one (`main`), rebuilt from all of it: only a stream created again since ends before a
/// checkpoint (`CART_EVENTS` refuses deletes and purges).
fn old_is_past_the_stream(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT (SELECT last_sequence FROM old.checkpoint WHERE id = 1)
              > (SELECT last_sequence FROM main.checkpoint WHERE id = 1)",
        [],
        |r| r.get::<_, Option<bool>>(0),
    )
    .map(|past| past.unwrap_or(false))
}

/// Carries the poison table of the database at `old` (attached as `old`) into `conn`'s, so a
/// rebuilt database keeps the dead letters (and their ids) operators know. Old dead letters
/// the rebuild applied without failing (their cause was fixed) are marked replayed, so a
/// replay cannot apply them twice; failures only the rebuild found get new ids.
///
/// When the two databases were built from different `CART_EVENTS` (it was deleted and created
/// again: `other_stream`, as the rebuild found by reading the stream, or the old checkpoint is
/// past the fresh one's), the old dead letters name messages that are gone: they are not
/// carried over (`DEAD_LETTERS` still holds them). Either way the rebuild's own failures are
/// numbered after every id the old file ever gave, so no id an operator knows comes to mean
/// another message.
pub fn carry_over(conn: &Connection, other_stream: bool) -> Result<(), ProjectionError> {
    let failed = ProjectionError::db("carry over the poison table");
    let other_stream = other_stream
        || old_is_past_the_stream(conn).map_err(ProjectionError::db("compare the checkpoints"))?;
    conn.execute_batch(&format!(
        "BEGIN;
         CREATE TEMP TABLE rebuild_failed AS SELECT {COLUMNS} FROM main.poison;
         DELETE FROM main.poison;"
    ))
    .map_err(failed)?;
    let rest = || -> rusqlite::Result<()> {
        if other_stream {
            let dropped: i64 =
                conn.query_row("SELECT COUNT(*) FROM old.poison", [], |r| r.get(0))?;
            tracing::warn!(
                dropped,
                "the old database's dead letters name messages of a CART_EVENTS deleted since; \
                 they are not carried over (DEAD_LETTERS still holds them)"
            );
        } else {
            conn.execute_batch(&format!(
                "INSERT INTO main.poison ({COLUMNS}) SELECT {COLUMNS} FROM old.poison;"
            ))?;
            conn.execute(
                "UPDATE main.poison SET replayed_at = ?1
                 WHERE replayed_at IS NULL
                   AND stream_sequence <= (SELECT last_sequence FROM main.checkpoint)
                   AND stream_sequence NOT IN (SELECT stream_sequence FROM temp.rebuild_failed)",
                params![now_rfc3339()],
            )?;
            // Replayed once, failed again in the rebuild (replayed late, after a later change
            // it depended on; the rebuild applies it in stream order): the fresh views lack
            // it, so it is open again, with why.
            conn.execute_batch(
                "UPDATE main.poison SET replayed_at = NULL,
                     replay_error = 'failed again in a rebuild: ' || (SELECT r.reason
                         FROM temp.rebuild_failed r
                         WHERE r.stream_sequence = main.poison.stream_sequence LIMIT 1)
                 WHERE replayed_at IS NOT NULL
                   AND stream_sequence IN (SELECT stream_sequence FROM temp.rebuild_failed);",
            )?;
        }
        // AUTOINCREMENT numbers after the larger of `sqlite_sequence` and the largest id in
        // the table: the old file's counter covers ids a rebuild before this one dropped.
        conn.execute_batch(
            "UPDATE main.sqlite_sequence SET seq = MAX(seq,
                 COALESCE((SELECT seq FROM old.sqlite_sequence WHERE name = 'poison'), 0),
                 COALESCE((SELECT MAX(id) FROM old.poison), 0))
             WHERE name = 'poison';
             INSERT INTO main.sqlite_sequence (name, seq)
                 SELECT 'poison', MAX(
                     COALESCE((SELECT seq FROM old.sqlite_sequence WHERE name = 'poison'), 0),
                     COALESCE((SELECT MAX(id) FROM old.poison), 0))
                 WHERE NOT EXISTS (SELECT 1 FROM main.sqlite_sequence WHERE name = 'poison');",
        )?;
        conn.execute_batch(
            "INSERT INTO main.poison (consumer, tenant, cart_id, subject, stream_sequence, reason,
                     deliveries, failed_at, dead_lettered, replayed_at, replay_error)
                 SELECT consumer, tenant, cart_id, subject, stream_sequence, reason, deliveries,
                     failed_at, dead_lettered, replayed_at, replay_error
                 FROM temp.rebuild_failed
                 WHERE stream_sequence NOT IN (SELECT stream_sequence FROM main.poison)
                 ORDER BY id;
             DROP TABLE temp.rebuild_failed;
             COMMIT;",
        )
    };
    if let Err(e) = rest() {
        let _ = conn.execute_batch("ROLLBACK;");
        return Err(ProjectionError::Db {
            what: "carry over the poison table",
            source: e,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db;

    /// A migrated database in `dir` at checkpoint `checkpoint`, with a dead letter at each of
    /// `failed` (stream sequences).
    fn database(dir: &std::path::Path, name: &str, checkpoint: u64, failed: &[u64]) -> Connection {
        let conn = db::open_writer(&dir.join(name)).unwrap();
        db::set_checkpoint(&conn, checkpoint).unwrap();
        for &seq in failed {
            let record = PoisonRecord {
                id: 0,
                consumer: "projection-main".into(),
                tenant: "t1".into(),
                cart_id: format!("c{seq}"),
                subject: format!("cart.events.t1.c{seq}"),
                stream_sequence: seq,
                reason: "bad".into(),
                deliveries: 3,
                failed_at: now_rfc3339(),
                dead_lettered: true,
                replayed_at: None,
                replay_error: None,
            };
            insert(&conn, &record).unwrap();
        }
        conn
    }

    /// `fresh` with the file `old` in `dir` carried over; the (id, sequence) pairs it then has.
    fn carried(dir: &std::path::Path, fresh: &Connection, other_stream: bool) -> Vec<(u64, u64)> {
        fresh
            .execute(
                "ATTACH DATABASE ?1 AS old",
                [dir.join("old.db").to_string_lossy().as_ref()],
            )
            .unwrap();
        carry_over(fresh, other_stream).unwrap();
        fresh.execute("DETACH DATABASE old", []).unwrap();
        let mut ids: Vec<_> = list(fresh, None, 100)
            .unwrap()
            .into_iter()
            .map(|p| (p.id, p.stream_sequence))
            .collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn the_same_stream_keeps_the_old_ids_and_numbers_new_failures_after_every_old_id() {
        let dir = tempfile::tempdir().unwrap();
        let old = database(dir.path(), "old.db", 100, &[10, 20, 30]);
        // A dead letter dropped before (id 3) still counts: its id is never given again.
        old.execute("DELETE FROM poison WHERE id = 3", []).unwrap();
        drop(old);
        let fresh = database(dir.path(), "fresh.db", 120, &[20, 110]);
        assert_eq!(
            carried(dir.path(), &fresh, false),
            vec![(1, 10), (2, 20), (4, 110)]
        );
    }

    /// A dead letter replayed in the old file that fails again in the rebuild (it was
    /// replayed after a change it depended on, the rebuild applies it in stream order) is
    /// open again: the fresh views lack it.
    #[test]
    fn a_replayed_dead_letter_that_fails_again_in_the_rebuild_is_open_again() {
        let dir = tempfile::tempdir().unwrap();
        let old = database(dir.path(), "old.db", 100, &[7, 8]);
        mark_replayed(&old, 1).unwrap();
        mark_replayed(&old, 2).unwrap();
        drop(old);
        let fresh = database(dir.path(), "fresh.db", 100, &[7]);
        assert_eq!(carried(dir.path(), &fresh, false), vec![(1, 7), (2, 8)]);
        let rows = list(&fresh, None, 100).unwrap();
        let again = rows.iter().find(|p| p.stream_sequence == 7).unwrap();
        assert_eq!(again.replayed_at, None, "open again");
        let why = again.replay_error.as_deref().unwrap_or_default();
        assert!(why.contains("failed again in a rebuild: bad"), "{why}");
        let fine = rows.iter().find(|p| p.stream_sequence == 8).unwrap();
        assert!(
            fine.replayed_at.is_some(),
            "the one the rebuild applied stays replayed"
        );
    }

    #[test]
    fn another_stream_drops_the_old_dead_letters_but_not_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        drop(database(dir.path(), "old.db", 100, &[10, 20]));
        let fresh = database(dir.path(), "fresh.db", 150, &[20]);
        assert_eq!(carried(dir.path(), &fresh, true), vec![(3, 20)]);

        // The next rebuild, with none of them left, still numbers after them.
        drop(fresh);
        std::fs::rename(dir.path().join("fresh.db"), dir.path().join("old.db")).unwrap();
        let next = database(dir.path(), "next.db", 150, &[40, 20]);
        assert_eq!(carried(dir.path(), &next, false), vec![(3, 20), (4, 40)]);
    }

    #[test]
    fn an_old_checkpoint_past_the_rebuilt_one_is_another_stream() {
        let dir = tempfile::tempdir().unwrap();
        drop(database(dir.path(), "old.db", 500, &[10]));
        let fresh = database(dir.path(), "fresh.db", 40, &[]);
        assert_eq!(carried(dir.path(), &fresh, false), vec![]);
    }
}
