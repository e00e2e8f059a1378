-- Risk sessions, agent traces, wallet-proof nonces, AP2 mandate claims, the per-payment risk
-- history, and review holds (operator approval of `review` decisions). Timestamps are unix ms.
-- Never edit this file after merge: it is checksummed.

-- Single-use nonces for proving wallet ownership at session creation.
CREATE TABLE risk_nonces (
    nonce         TEXT   NOT NULL PRIMARY KEY,
    expires_at_ms INTEGER NOT NULL
);

CREATE TABLE risk_sessions (
    sid            TEXT   NOT NULL PRIMARY KEY,
    agent_id       TEXT   NOT NULL,
    wallet         TEXT   NOT NULL,
    wallet_proven  INTEGER NOT NULL,
    body           TEXT   NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL
);

CREATE TABLE risk_traces (
    tid           TEXT   NOT NULL PRIMARY KEY,
    sid           TEXT   NOT NULL,
    body          TEXT   NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX risk_traces_sid_idx ON risk_traces (sid);

-- Single-use AP2 mandates (cart, payment): the first payment to claim the id holds it, on
-- every replica (the primary key decides).
CREATE TABLE risk_mandate_claims (
    mandate_id    TEXT   NOT NULL PRIMARY KEY,
    fingerprint   TEXT   NOT NULL,
    created_at_ms INTEGER NOT NULL
);

-- Every payment made under a mandate, for rolling budgets (amounts in atomic units, decimal).
CREATE TABLE risk_mandate_uses (
    mandate_id    TEXT   NOT NULL,
    fingerprint   TEXT   NOT NULL,
    amount        TEXT   NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (mandate_id, fingerprint)
);

-- Payments the risk step saw approved, one row per fingerprint: the source of history facts.
CREATE TABLE risk_payments (
    fingerprint   TEXT   NOT NULL PRIMARY KEY,
    payer         TEXT,
    pay_to        TEXT   NOT NULL,
    resource      TEXT,
    endpoint      TEXT,
    amount        TEXT   NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX risk_payments_payer_idx ON risk_payments (payer, created_at_ms);
CREATE INDEX risk_payments_endpoint_idx ON risk_payments (endpoint);

-- Review holds: a `review` decision is not an approval; an operator approves or rejects it and a
-- retry of the same payment (fingerprint) gets that decision.
CREATE TABLE risk_reviews (
    id             TEXT   NOT NULL PRIMARY KEY,
    fingerprint    TEXT   NOT NULL,
    state          TEXT   NOT NULL CHECK (state IN ('pending', 'approved', 'rejected')),
    decision_id    TEXT   NOT NULL,
    payer          TEXT,
    pay_to         TEXT   NOT NULL,
    amount         TEXT   NOT NULL,
    resource       TEXT,
    score          INTEGER NOT NULL,
    reasons        TEXT   NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    decided_at_ms  INTEGER,
    decided_by     TEXT,
    note           TEXT,
    CONSTRAINT risk_reviews_fingerprint_key UNIQUE (fingerprint)
);
CREATE INDEX risk_reviews_state_idx ON risk_reviews (state, created_at_ms);
