-- fleetwire schema, version 14: every key a node id has had and when it was valid, so a
-- client can check a result signed by a key the node has since rotated or had revoked
-- (JobService.ListNodeKeys). A trigger on `nodes` writes it, whichever path changes a
-- node's key (operator registration, approval, first-use registration, rotation,
-- revocation), so the history cannot miss one.

CREATE TABLE node_keys (
    node_id      text NOT NULL,
    key_id       text NOT NULL,
    public_key   bytea NOT NULL,
    valid_from   timestamptz NOT NULL DEFAULT now(),
    valid_until  timestamptz,   -- another key replaced it (a rotation); NULL: current
    revoked_at   timestamptz,   -- revoked: nothing it signs from then on counts
    PRIMARY KEY (node_id, key_id)
);

INSERT INTO node_keys (node_id, key_id, public_key, valid_from, revoked_at)
SELECT node_id, key_id, public_key, registered_at, CASE WHEN revoked THEN now() END
FROM nodes;

CREATE FUNCTION node_keys_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.key_id IS DISTINCT FROM NEW.key_id THEN
        UPDATE node_keys SET valid_until = now()
        WHERE node_id = OLD.node_id AND key_id = OLD.key_id AND valid_until IS NULL;
    END IF;
    IF TG_OP = 'INSERT' OR OLD.key_id IS DISTINCT FROM NEW.key_id THEN
        INSERT INTO node_keys (node_id, key_id, public_key, revoked_at)
        VALUES (NEW.node_id, NEW.key_id, NEW.public_key, CASE WHEN NEW.revoked THEN now() END)
        ON CONFLICT (node_id, key_id) DO UPDATE
            SET valid_from = now(), valid_until = NULL, revoked_at = EXCLUDED.revoked_at;
    ELSIF NEW.revoked AND NOT OLD.revoked THEN
        UPDATE node_keys SET revoked_at = now()
        WHERE node_id = NEW.node_id AND key_id = NEW.key_id;
    ELSIF OLD.revoked AND NOT NEW.revoked THEN
        -- Reinstated: valid again (the mesh finalised nothing it signed while revoked).
        UPDATE node_keys SET revoked_at = NULL
        WHERE node_id = NEW.node_id AND key_id = NEW.key_id;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER nodes_key_history AFTER INSERT OR UPDATE OF public_key, key_id, revoked ON nodes
    FOR EACH ROW EXECUTE FUNCTION node_keys_follow();
