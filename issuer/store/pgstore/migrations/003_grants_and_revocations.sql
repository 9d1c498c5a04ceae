-- End users, the grants they give clients (authorization code flow, RFC
-- 6749 §4.1) with their codes and refresh tokens, and revocations. Times
-- that may be unset (used_at, revoked_at) are NULL until set.

CREATE TABLE meshauth_users (
	id            text COLLATE "C" PRIMARY KEY,
	name          text COLLATE "C" NOT NULL UNIQUE,
	password_hash text NOT NULL,
	created_at    timestamptz NOT NULL
);

CREATE TABLE meshauth_grants (
	id         text COLLATE "C" PRIMARY KEY,
	client_id  text NOT NULL,
	subject    text NOT NULL,
	scope      text[] NOT NULL,
	audience   text[] NOT NULL,
	created_at timestamptz NOT NULL,
	expires_at timestamptz NOT NULL,
	revoked_at timestamptz
);

CREATE INDEX meshauth_grants_expires_at ON meshauth_grants (expires_at);

CREATE TABLE meshauth_authorization_codes (
	hash                  text PRIMARY KEY,
	grant_id              text NOT NULL,
	client_id             text NOT NULL,
	subject               text NOT NULL,
	redirect_uri          text NOT NULL,
	scope                 text[] NOT NULL,
	audience              text[] NOT NULL,
	code_challenge        text NOT NULL,
	code_challenge_method text NOT NULL,
	issued_at             timestamptz NOT NULL,
	expires_at            timestamptz NOT NULL,
	used_at               timestamptz
);

CREATE INDEX meshauth_authorization_codes_expires_at ON meshauth_authorization_codes (expires_at);

CREATE TABLE meshauth_refresh_tokens (
	hash       text PRIMARY KEY,
	grant_id   text NOT NULL,
	client_id  text NOT NULL,
	subject    text NOT NULL,
	scope      text[] NOT NULL,
	audience   text[] NOT NULL,
	issued_at  timestamptz NOT NULL,
	expires_at timestamptz NOT NULL,
	used_at    timestamptz
);

-- Revoking a grant deletes its refresh and reference access tokens.
CREATE INDEX meshauth_refresh_tokens_grant_id ON meshauth_refresh_tokens (grant_id);
CREATE INDEX meshauth_refresh_tokens_expires_at ON meshauth_refresh_tokens (expires_at);

-- Tokens of no user (client_credentials) have no grant.
ALTER TABLE meshauth_access_tokens ADD COLUMN grant_id text NOT NULL DEFAULT '';
CREATE INDEX meshauth_access_tokens_grant_id ON meshauth_access_tokens (grant_id) WHERE grant_id <> '';

CREATE TABLE meshauth_revocations (
	seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id         text NOT NULL UNIQUE,
	kind       text NOT NULL,
	value      text NOT NULL,
	revoked_at timestamptz NOT NULL,
	expires_at timestamptz NOT NULL
);

-- Introspection asks, per token, for the revocations of its jti, client,
-- subject and grant.
CREATE INDEX meshauth_revocations_kind_value ON meshauth_revocations (kind, value);
CREATE INDEX meshauth_revocations_expires_at ON meshauth_revocations (expires_at);
