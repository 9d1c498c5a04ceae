package store

import (
	"context"
	"time"
)

// People is what administering the users needs beyond signing them in:
// listing them with their links to upstream identities, deleting them, and
// ending everything they authorized.
type People interface {
	// ListUsers returns at most limit users whose Name is greater than
	// after in byte order ("" for the first page), ordered by Name.
	ListUsers(ctx context.Context, after string, limit int) ([]*User, error)
	// ListIdentities returns the upstream identities linked to the users
	// with these ids, ordered by UserID, then Issuer.
	ListIdentities(ctx context.Context, userIDs []string) ([]*Identity, error)
	// DeleteUser removes a user together with its links to upstream
	// identities and its sign-in sessions, in one transaction; ErrNotFound
	// if there is no such user. Grants and tokens are left to
	// RevokeUserGrants and to revocations.
	DeleteUser(ctx context.Context, id string) error
	// RevokeUserGrants revokes every grant of subject (Grant.Subject) as
	// RevokeGrant revokes one, all in one transaction: RevokedAt set where
	// it is not, every refresh token and reference access token of the
	// grants deleted. It returns how many grants it newly revoked.
	RevokeUserGrants(ctx context.Context, subject string, at time.Time) (int, error)
}
