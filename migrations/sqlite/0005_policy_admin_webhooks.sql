-- Policy administration and webhooks.
--
-- An operator can re-pin an endpoint's payTo through the admin API: the pin keeps its original
-- source, and records who re-pinned it and when.
ALTER TABLE policy_endpoints ADD COLUMN repinned_by TEXT;
ALTER TABLE policy_endpoints ADD COLUMN repinned_at_ms INTEGER;

-- Amount sanity: the range of amounts approved per (endpoint, asset), learned from approved
-- payments; a payment far outside it (by a configured factor) is refused.
CREATE TABLE policy_amount_ranges (
    endpoint      TEXT   NOT NULL,
    asset         TEXT   NOT NULL,
    min_amount    INTEGER NOT NULL CHECK (min_amount >= 0),
    max_amount    INTEGER NOT NULL CHECK (max_amount >= min_amount),
    samples       INTEGER NOT NULL CHECK (samples >= 1),
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (endpoint, asset)
);

-- The durable webhook outbox. `webhook.enqueue` writes one `unrouted` row per event (no URL);
-- the drainer turns it into one `pending` row per subscribed webhook (then `routed`), delivers
-- pending rows with exponential backoff, and ends each as `delivered` or `failed` (attempts
-- exhausted or the destination refused).
CREATE TABLE webhook_outbox (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    event              TEXT   NOT NULL,
    payload            TEXT   NOT NULL,
    url                TEXT,
    state              TEXT   NOT NULL
        CHECK (state IN ('unrouted', 'routed', 'pending', 'delivered', 'failed')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    last_error         TEXT,
    delivered_at_ms    INTEGER,
    created_at_ms      INTEGER NOT NULL
);
CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (state, next_attempt_at_ms);
