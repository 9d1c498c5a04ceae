-- OpenID Connect: what the user record tells clients (standard claims),
-- disabled users, clients' post-logout redirect URIs, how a grant's user
-- signed in, sign-in sessions, and links to upstream identities.

ALTER TABLE meshauth_users
	ADD COLUMN display_name   text    NOT NULL DEFAULT '',
	ADD COLUMN email          text    NOT NULL DEFAULT '',
	ADD COLUMN email_verified boolean NOT NULL DEFAULT false,
	ADD COLUMN disabled       boolean NOT NULL DEFAULT false;

CREATE INDEX meshauth_users_email ON meshauth_users (email) WHERE email <> '';

ALTER TABLE meshauth_clients
	ADD COLUMN post_logout_redirect_uris text[] NOT NULL DEFAULT '{}';

-- auth_time is NULL for grants made before it was recorded.
ALTER TABLE meshauth_grants
	ADD COLUMN auth_time timestamptz,
	ADD COLUMN amr       text[] NOT NULL DEFAULT '{}',
	ADD COLUMN idp       text   NOT NULL DEFAULT '',
	ADD COLUMN nonce     text   NOT NULL DEFAULT '';

-- The hash is the SHA-256 of the session cookie's value, never the value.
CREATE TABLE meshauth_sessions (
	hash         text PRIMARY KEY,
	user_id      text COLLATE "C" NOT NULL,
	auth_time    timestamptz NOT NULL,
	amr          text[] NOT NULL,
	idp          text NOT NULL,
	consents     jsonb NOT NULL,
	last_seen_at timestamptz NOT NULL,
	expires_at   timestamptz NOT NULL
);

CREATE INDEX meshauth_sessions_user_id ON meshauth_sessions (user_id);
CREATE INDEX meshauth_sessions_expires_at ON meshauth_sessions (expires_at);

-- One upstream identity is one user; a user has at most one identity per
-- upstream issuer.
CREATE TABLE meshauth_identities (
	issuer     text NOT NULL,
	subject    text NOT NULL,
	user_id    text COLLATE "C" NOT NULL REFERENCES meshauth_users (id),
	created_at timestamptz NOT NULL,
	PRIMARY KEY (issuer, subject),
	UNIQUE (user_id, issuer)
);
