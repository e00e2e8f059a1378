-- Evidence is append-only (DESIGN invariant 4): refuse UPDATE and DELETE in the database too,
-- so only someone who first drops these triggers can edit history (and the hash chain still
-- exposes that).
CREATE FUNCTION evidence_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'evidence is append-only';
END;
$$;

CREATE TRIGGER evidence_no_update BEFORE UPDATE ON evidence
    FOR EACH ROW EXECUTE FUNCTION evidence_append_only();

CREATE TRIGGER evidence_no_delete BEFORE DELETE ON evidence
    FOR EACH ROW EXECUTE FUNCTION evidence_append_only();
