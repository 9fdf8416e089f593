-- Cart states are written behind the views: a transaction writes the view rows and the
-- checkpoint; the states it changed stay in the writer's memory and are written together
-- later (every few seconds, when many are waiting, and when the writer stops). `states_sequence`
-- is the checkpoint at the last such write: every stored state includes all of its cart's
-- messages up to it. After a crash the writer folds the stream's messages after it into the
-- stored states again (see projection/src/recovery.rs).
ALTER TABLE checkpoint ADD COLUMN states_sequence INTEGER NOT NULL DEFAULT 0;
-- Earlier builds wrote every state with its batch.
UPDATE checkpoint SET states_sequence = last_sequence;

-- The count of applied messages moves into the view row, which every transaction writes.
ALTER TABLE carts ADD COLUMN applied_messages INTEGER NOT NULL DEFAULT 0;
UPDATE carts SET applied_messages = COALESCE(
    (SELECT s.applied_messages FROM cart_states s
     WHERE s.tenant = carts.tenant AND s.cart_id = carts.cart_id), 0);
