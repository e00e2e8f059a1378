-- Spending-policy budgets: one counter per (scope, asset, period, window) and one hold per
-- (payment fingerprint, counter). A hold is reserved at verify, committed at settle, released on
-- refusal or failure, and expired holds are swept by the next reserve on the same counter.
-- Amounts are atomic units (never floats); a counter row is the lock that serialises its holds.

CREATE TABLE policy_counters (
    counter_key   TEXT   NOT NULL PRIMARY KEY,
    used          BIGINT NOT NULL DEFAULT 0 CHECK (used >= 0),
    reserved      BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE policy_holds (
    fingerprint   TEXT   NOT NULL,
    counter_key   TEXT   NOT NULL,
    amount        BIGINT NOT NULL CHECK (amount >= 0),
    state         TEXT   NOT NULL
        CHECK (state IN ('reserved', 'committed', 'released', 'expired')),
    expires_at_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (fingerprint, counter_key)
);
CREATE INDEX policy_holds_sweep_idx ON policy_holds (counter_key, state, expires_at_ms);

-- payTo pinned per endpoint: pre-seeded from config or trusted on first use (and then the
-- endpoint counts as discovered).
CREATE TABLE policy_endpoints (
    endpoint      TEXT   NOT NULL PRIMARY KEY,
    pay_to        TEXT   NOT NULL,
    source        TEXT   NOT NULL CHECK (source IN ('config', 'first_use')),
    created_at_ms BIGINT NOT NULL
);

-- Duplicate detection: the last payment per (payer, endpoint); another payment from the same
-- payer to the same endpoint within the configured window is refused.
CREATE TABLE policy_recent (
    payer_endpoint TEXT NOT NULL PRIMARY KEY,
    fingerprint    TEXT NOT NULL,
    seen_at_ms     BIGINT NOT NULL
);

-- Circuit breakers per payer and per endpoint: N consecutive policy violations open one;
-- after the cooldown it is half-open; a success closes it, a violation re-opens it.
CREATE TABLE policy_breakers (
    subject       TEXT NOT NULL PRIMARY KEY,
    state         TEXT NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    failures      BIGINT NOT NULL,
    opened_at_ms  BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
