-- Settlement journal (DESIGN invariant 2) and hash-chained evidence (invariant 4), PostgreSQL.
-- Timestamps are unix milliseconds. Never edit this file after merge: it is checksummed.
-- Evidence bodies are TEXT, not jsonb, so the bytes hashed are the bytes stored.

CREATE TABLE settlements (
    fingerprint        TEXT   NOT NULL,
    state              TEXT   NOT NULL
        CHECK (state IN ('in_flight', 'settled', 'failed', 'pending')),
    payment_identifier TEXT,
    request_digest     TEXT   NOT NULL,
    tx_hash            TEXT,
    response_json      TEXT,
    network            TEXT   NOT NULL,
    payer              TEXT,
    created_at_ms      BIGINT NOT NULL,
    updated_at_ms      BIGINT NOT NULL,
    CONSTRAINT settlements_pkey PRIMARY KEY (fingerprint)
);

-- One payment-identifier names at most one payment.
CREATE UNIQUE INDEX settlements_payment_identifier_key ON settlements (payment_identifier);
CREATE INDEX settlements_state_updated_idx ON settlements (state, updated_at_ms);

CREATE TABLE evidence (
    seq           BIGINT NOT NULL PRIMARY KEY,
    created_at_ms BIGINT NOT NULL,
    kind          TEXT   NOT NULL,
    gate          TEXT,
    fingerprint   TEXT,
    decision      TEXT   NOT NULL,
    request_id    TEXT   NOT NULL,
    body          TEXT   NOT NULL,
    prev_hash     TEXT   NOT NULL,
    hash          TEXT   NOT NULL
);
CREATE INDEX evidence_fingerprint_idx ON evidence (fingerprint, seq);

-- The chain head: one row, locked FOR UPDATE by each append so replicas append in turn.
CREATE TABLE evidence_head (
    id   BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT   NOT NULL
);
INSERT INTO evidence_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
