-- Identifiers use the "C" collation so that ORDER BY id is byte order,
-- whatever the database's default collation.

CREATE TABLE meshauth_clients (
	id                         text COLLATE "C" PRIMARY KEY,
	secret_hash                text NOT NULL,
	name                       text NOT NULL,
	token_endpoint_auth_method text NOT NULL,
	grant_types                text[] NOT NULL,
	scope                      text[] NOT NULL,
	-- The client's JWKS exactly as registered; bytea rather than jsonb,
	-- which would reformat it.
	jwks                       bytea NOT NULL,
	access_token_format        text NOT NULL,
	allowed_audiences          text[] NOT NULL,
	redirect_uris              text[] NOT NULL,
	created_at                 timestamptz NOT NULL
);

CREATE TABLE meshauth_signing_keys (
	id                    text COLLATE "C" PRIMARY KEY,
	algorithm             text NOT NULL,
	public_jwk            bytea NOT NULL,
	encrypted_private_key bytea NOT NULL,
	created_at            timestamptz NOT NULL,
	activate_at           timestamptz NOT NULL
);

CREATE INDEX meshauth_signing_keys_activate_at ON meshauth_signing_keys (activate_at, id);

CREATE TABLE meshauth_once (
	value      text PRIMARY KEY,
	expires_at timestamptz NOT NULL
);

CREATE INDEX meshauth_once_expires_at ON meshauth_once (expires_at);

CREATE TABLE meshauth_access_tokens (
	hash       text PRIMARY KEY,
	id         text NOT NULL,
	client_id  text NOT NULL,
	subject    text NOT NULL,
	audience   text[] NOT NULL,
	scope      text[] NOT NULL,
	issued_at  timestamptz NOT NULL,
	expires_at timestamptz NOT NULL
);

CREATE INDEX meshauth_access_tokens_expires_at ON meshauth_access_tokens (expires_at);
