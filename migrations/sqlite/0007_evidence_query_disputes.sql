-- Evidence queries, disputes and retention (issue 7), SQLite. Never edit after merge.
--
-- 1. evidence_index: searchable columns extracted from each record's body (payer, payee,
--    endpoint, tx, session). A side table, so the hashed evidence rows stay exactly as they
--    were; it is filled by catching up with the chain (idempotent), and survives pruning.
-- 2. disputes, dispute_statements, dispute_files: disputes on payments; every step is also an
--    evidence record.
-- 3. evidence_checkpoints: signed (seq, hash) pairs. Pruning replaces old bodies with the
--    tombstone '{"$pruned":true}' keeping every hash, and only below a checkpoint.
-- 4. The append-only guard on evidence is narrowed to allow exactly that tombstone update.

CREATE TABLE evidence_index (
    seq           INTEGER NOT NULL PRIMARY KEY,
    created_at_ms INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    decision      TEXT    NOT NULL,
    fingerprint   TEXT,
    payer         TEXT,
    payee         TEXT,
    endpoint      TEXT,
    tx            TEXT,
    session       TEXT
);
CREATE INDEX evidence_index_fingerprint_idx ON evidence_index (fingerprint, seq);
CREATE INDEX evidence_index_payer_idx ON evidence_index (payer, seq);
CREATE INDEX evidence_index_payee_idx ON evidence_index (payee, seq);
CREATE INDEX evidence_index_endpoint_idx ON evidence_index (endpoint, seq);
CREATE INDEX evidence_index_tx_idx ON evidence_index (tx, seq);
CREATE INDEX evidence_index_session_idx ON evidence_index (session, seq);
CREATE INDEX evidence_index_time_idx ON evidence_index (created_at_ms, seq);
CREATE INDEX evidence_index_kind_idx ON evidence_index (kind, seq);

CREATE TABLE disputes (
    id              TEXT    NOT NULL PRIMARY KEY,
    fingerprint     TEXT    NOT NULL,
    payer           TEXT,
    payee           TEXT,
    opened_by       TEXT    NOT NULL,
    on_behalf_of    TEXT    NOT NULL CHECK (on_behalf_of IN ('buyer', 'seller', 'operator')),
    reason          TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('open', 'resolved')),
    outcome         TEXT    CHECK (outcome IN ('refund_owed', 'rejected', 'settled')),
    resolution_note TEXT,
    resolved_by     TEXT,
    created_at_ms   INTEGER NOT NULL,
    resolved_at_ms  INTEGER
);
CREATE INDEX disputes_fingerprint_idx ON disputes (fingerprint);
CREATE INDEX disputes_payer_idx ON disputes (payer, outcome);
CREATE INDEX disputes_payee_idx ON disputes (payee, created_at_ms);

CREATE TABLE dispute_statements (
    id            TEXT    NOT NULL PRIMARY KEY,
    dispute_id    TEXT    NOT NULL REFERENCES disputes (id),
    author        TEXT    NOT NULL,
    statement     TEXT    NOT NULL,
    evidence_seq  INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX dispute_statements_dispute_idx ON dispute_statements (dispute_id, created_at_ms);

CREATE TABLE dispute_files (
    statement_id   TEXT    NOT NULL REFERENCES dispute_statements (id),
    ordinal        INTEGER NOT NULL,
    name           TEXT    NOT NULL,
    mime           TEXT    NOT NULL,
    size           INTEGER NOT NULL,
    sha256         TEXT    NOT NULL,
    content_base64 TEXT    NOT NULL,
    PRIMARY KEY (statement_id, ordinal)
);
CREATE INDEX dispute_files_sha256_idx ON dispute_files (sha256);

CREATE TABLE evidence_checkpoints (
    seq           INTEGER NOT NULL PRIMARY KEY,
    hash          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    key_id        TEXT    NOT NULL,
    public_key    TEXT    NOT NULL,
    signature     TEXT    NOT NULL
);

CREATE TRIGGER evidence_checkpoints_no_update BEFORE UPDATE ON evidence_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'evidence checkpoints are append-only');
END;

CREATE TRIGGER evidence_checkpoints_no_delete BEFORE DELETE ON evidence_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'evidence checkpoints are append-only');
END;

-- The only UPDATE evidence accepts: the body becomes the tombstone, every other column stays,
-- and a checkpoint at or after the record pins its hash.
DROP TRIGGER evidence_no_update;
CREATE TRIGGER evidence_no_update BEFORE UPDATE ON evidence
WHEN NOT (
    NEW.body = '{"$pruned":true}'
    AND OLD.body <> NEW.body
    AND NEW.seq = OLD.seq
    AND NEW.created_at_ms = OLD.created_at_ms
    AND NEW.kind = OLD.kind
    AND NEW.gate IS OLD.gate
    AND NEW.fingerprint IS OLD.fingerprint
    AND NEW.decision = OLD.decision
    AND NEW.request_id = OLD.request_id
    AND NEW.prev_hash = OLD.prev_hash
    AND NEW.hash = OLD.hash
    AND EXISTS (SELECT 1 FROM evidence_checkpoints c WHERE c.seq >= OLD.seq)
)
BEGIN
    SELECT RAISE(ABORT, 'evidence is append-only');
END;
