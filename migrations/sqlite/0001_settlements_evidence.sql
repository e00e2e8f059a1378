-- Settlement journal (DESIGN invariant 2) and hash-chained evidence (invariant 4), SQLite.
-- Timestamps are unix milliseconds. Never edit this file after merge: it is checksummed.

CREATE TABLE settlements (
    fingerprint        TEXT    NOT NULL,
    state              TEXT    NOT NULL
        CHECK (state IN ('in_flight', 'settled', 'failed', 'pending')),
    payment_identifier TEXT,
    request_digest     TEXT    NOT NULL,
    tx_hash            TEXT,
    response_json      TEXT,
    network            TEXT    NOT NULL,
    payer              TEXT,
    created_at_ms      INTEGER NOT NULL,
    updated_at_ms      INTEGER NOT NULL,
    CONSTRAINT settlements_pkey PRIMARY KEY (fingerprint)
);

-- One payment-identifier names at most one payment.
CREATE UNIQUE INDEX settlements_payment_identifier_key ON settlements (payment_identifier);
CREATE INDEX settlements_state_updated_idx ON settlements (state, updated_at_ms);

CREATE TABLE evidence (
    seq           INTEGER NOT NULL PRIMARY KEY,
    created_at_ms INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    gate          TEXT,
    fingerprint   TEXT,
    decision      TEXT    NOT NULL,
    request_id    TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    prev_hash     TEXT    NOT NULL,
    hash          TEXT    NOT NULL
);
CREATE INDEX evidence_fingerprint_idx ON evidence (fingerprint, seq);

-- The chain head: one row, updated in the same transaction as each append.
CREATE TABLE evidence_head (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO evidence_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
