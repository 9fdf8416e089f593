-- The secondary indexes of the views are dropped while a projection catches up from far
-- behind (a fresh database, a rebuild, a long stop) and created again once it has caught up:
-- each update of a cart then writes its rows only, not four index entries besides. Their SQL
-- waits here meanwhile; opening the database creates any listed index again (see
-- projection/src/db.rs, `restore_indexes`).
CREATE TABLE dropped_indexes (
    name TEXT PRIMARY KEY,
    sql TEXT NOT NULL
);
