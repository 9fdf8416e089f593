-- The projection's views, its checkpoint and its poison table.
--
-- Times are Unix nanoseconds (UTC) taken from the events' `occurred_at`, never from the wall
-- clock, so a rebuild produces identical rows. Money is integer minor units.

-- The last stream sequence applied (one row). Messages at or below it are skipped.
CREATE TABLE checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_sequence INTEGER NOT NULL
);
INSERT INTO checkpoint (id, last_sequence) VALUES (1, 0);

-- The domain fold of each cart (`CartState` as JSON): the source the view rows are rewritten
-- from, so the views always equal what `shared::domain` computes.
CREATE TABLE cart_states (
    tenant TEXT NOT NULL,
    cart_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    -- Messages applied to this cart (equals its message count unless one was dead-lettered).
    applied_messages INTEGER NOT NULL,
    PRIMARY KEY (tenant, cart_id)
) WITHOUT ROWID;

CREATE TABLE carts (
    tenant TEXT NOT NULL,
    cart_id TEXT NOT NULL,
    -- Stored status; `abandoned` is derived at query time from updated_ns.
    status TEXT NOT NULL CHECK (status IN ('open', 'checkout', 'ordered')),
    item_count INTEGER NOT NULL,
    line_count INTEGER NOT NULL,
    total_amount INTEGER NOT NULL,
    total_tax INTEGER NOT NULL,
    total_discount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    user_id TEXT,
    order_reference TEXT,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    -- Stream sequence of the cart's last applied message.
    version INTEGER NOT NULL,
    PRIMARY KEY (tenant, cart_id)
) WITHOUT ROWID;
CREATE INDEX carts_by_update ON carts (tenant, updated_ns, cart_id);
CREATE INDEX carts_by_status ON carts (tenant, status, updated_ns, cart_id);
CREATE INDEX carts_by_user ON carts (tenant, user_id, updated_ns, cart_id);

CREATE TABLE cart_lines (
    tenant TEXT NOT NULL,
    cart_id TEXT NOT NULL,
    line_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    -- VAT-inclusive unit price.
    unit_price INTEGER NOT NULL,
    -- Basis points.
    tax_rate INTEGER NOT NULL,
    PRIMARY KEY (tenant, cart_id, line_id)
) WITHOUT ROWID;
CREATE INDEX cart_lines_by_sku ON cart_lines (tenant, sku);

CREATE TABLE orders (
    tenant TEXT NOT NULL,
    cart_id TEXT NOT NULL,
    provider_order_id TEXT NOT NULL,
    order_reference TEXT NOT NULL,
    total_amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    user_id TEXT,
    placed_ns INTEGER NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (tenant, cart_id)
) WITHOUT ROWID;
CREATE INDEX orders_by_time ON orders (tenant, placed_ns, cart_id);

-- Messages this projection gave up on (also published to DEAD_LETTERS by the live consumer).
CREATE TABLE poison (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer TEXT NOT NULL,
    tenant TEXT NOT NULL,
    cart_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    stream_sequence INTEGER NOT NULL,
    reason TEXT NOT NULL,
    deliveries INTEGER NOT NULL,
    -- RFC 3339 wall-clock time (operational data, not a view).
    failed_at TEXT NOT NULL,
    -- 1 when the message was published to DEAD_LETTERS.
    dead_lettered INTEGER NOT NULL,
    replayed_at TEXT,
    replay_error TEXT
);
CREATE INDEX poison_by_tenant ON poison (tenant, id);
CREATE INDEX poison_by_sequence ON poison (stream_sequence);
