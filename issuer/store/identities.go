package store

import (
	"context"
	"time"
)

// Identities links local users to their identities at upstream OpenID
// providers, and holds what signing in through one needs of the users.
type Identities interface {
	// LinkIdentity stores a link to an existing user. ErrExists if the
	// upstream identity (Issuer and Subject) is linked already, or if the
	// user has a link to that issuer already: one upstream identity is one
	// user, and a user has at most one identity per provider. ErrNotFound
	// if the user does not exist.
	LinkIdentity(ctx context.Context, id *Identity) error
	// CreateUserWithIdentity stores a new user and its link in one
	// transaction; ErrExists, and nothing stored, if either is taken.
	CreateUserWithIdentity(ctx context.Context, u *User, id *Identity) error
	// GetIdentity returns the link of an upstream identity, or ErrNotFound.
	GetIdentity(ctx context.Context, issuer, subject string) (*Identity, error)
	// FindUsersByEmail returns the users whose Email is email, compared
	// exactly (callers normalise addresses first), in no particular order;
	// none is not an error.
	FindUsersByEmail(ctx context.Context, email string) ([]*User, error)
	// SetUserDisabled sets a user's Disabled; ErrNotFound if there is no
	// such user.
	SetUserDisabled(ctx context.Context, id string, disabled bool) error
}

// Identity links a user to the identity Subject at the upstream OpenID
// provider Issuer (the "iss" and "sub" of its ID Tokens).
type Identity struct {
	Issuer    string
	Subject   string
	UserID    string
	CreatedAt time.Time
}
