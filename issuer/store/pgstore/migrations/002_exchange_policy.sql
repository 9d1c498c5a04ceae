-- Token exchange policy per client (RFC 8693): scope limits per target
-- audience, and the longest act chain it may extend.
ALTER TABLE meshauth_clients
	ADD COLUMN exchange_scopes      jsonb   NOT NULL DEFAULT '{}',
	ADD COLUMN max_delegation_depth integer NOT NULL DEFAULT 0;
