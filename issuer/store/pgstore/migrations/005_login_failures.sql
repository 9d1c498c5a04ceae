-- The login backoff's counters, shared by the replicas; the sweep purges
-- expired rows and trims the table to store.MaxLoginFailures, fewest
-- failures first. Revoking a user's grants finds them by subject.

CREATE TABLE meshauth_login_failures (
	key        text PRIMARY KEY,
	count      integer NOT NULL,
	last_at    timestamptz NOT NULL,
	expires_at timestamptz NOT NULL
);

CREATE INDEX meshauth_login_failures_expires_at ON meshauth_login_failures (expires_at);

CREATE INDEX meshauth_grants_subject ON meshauth_grants (subject);
