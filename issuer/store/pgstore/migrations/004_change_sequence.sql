-- The change sequence (store.ChangeSeq): one row, bumped in the transaction
-- of every change of the signing keys or the revocations. The row lock
-- serialises the changes, so numbers become visible in commit order (a
-- PostgreSQL sequence hands out numbers that can commit out of order).
-- Every change, and every change of a client, is announced with NOTIFY on
-- the channel meshauth, so that replicas reload at once.
CREATE TABLE meshauth_changes (
	only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
	seq      bigint NOT NULL,
	keys_seq bigint NOT NULL
);

-- After the revocations numbered before, counting the keys already there
-- as one change.
INSERT INTO meshauth_changes (seq, keys_seq)
	SELECT coalesce(max(seq), 0) + 1, coalesce(max(seq), 0) + 1 FROM meshauth_revocations;

ALTER TABLE meshauth_revocations ALTER COLUMN seq DROP IDENTITY;

CREATE FUNCTION meshauth_next_change(keys boolean, table_schema text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	n bigint;
BEGIN
	UPDATE meshauth_changes SET seq = seq + 1, keys_seq = CASE WHEN keys THEN seq + 1 ELSE keys_seq END
		RETURNING seq INTO n;
	PERFORM pg_notify('meshauth', json_build_object('schema', table_schema, 'change', n)::text);
	RETURN n;
END $$;

CREATE FUNCTION meshauth_revocation_added() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	NEW.seq := meshauth_next_change(false, TG_TABLE_SCHEMA);
	RETURN NEW;
END $$;

CREATE TRIGGER meshauth_revocation_seq BEFORE INSERT ON meshauth_revocations
	FOR EACH ROW EXECUTE FUNCTION meshauth_revocation_added();

CREATE FUNCTION meshauth_signing_keys_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM meshauth_next_change(true, TG_TABLE_SCHEMA);
	RETURN NULL;
END $$;

CREATE TRIGGER meshauth_signing_keys_seq AFTER INSERT OR DELETE ON meshauth_signing_keys
	FOR EACH ROW EXECUTE FUNCTION meshauth_signing_keys_changed();

-- Issuers cache clients; every write of one, whoever makes it, drops the
-- cached copies.
CREATE FUNCTION meshauth_client_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('meshauth', json_build_object('schema', TG_TABLE_SCHEMA,
		'client', CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END)::text);
	RETURN NULL;
END $$;

CREATE TRIGGER meshauth_client_notify AFTER INSERT OR UPDATE OR DELETE ON meshauth_clients
	FOR EACH ROW EXECUTE FUNCTION meshauth_client_changed();
