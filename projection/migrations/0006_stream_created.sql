-- The creation time of the CART_EVENTS stream the views were built from (RFC 3339, as the
-- stream's info reports it). Sequences number one stream's messages only: a stream deleted and
-- created again starts at 1, so a checkpoint means nothing against it. The projection refuses a
-- database bound to another stream (see projection/src/consume/recovery.rs). NULL: not bound
-- yet (a new database, or one from a build before this column); the first start binds it.
ALTER TABLE checkpoint ADD COLUMN stream_created TEXT;
