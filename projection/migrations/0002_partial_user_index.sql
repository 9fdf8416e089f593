-- Most carts are anonymous (no user): keep them out of the by-user index, so updating such a
-- cart maintains two indexes instead of three. `user_id = ?` implies `user_id IS NOT NULL`,
-- so listing a user's carts still uses it.
DROP INDEX carts_by_user;
CREATE INDEX carts_by_user ON carts (tenant, user_id, updated_ns, cart_id)
    WHERE user_id IS NOT NULL;
