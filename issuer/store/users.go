package store

import (
	"context"
	"time"
)

// Users holds the people who sign in at the issuer.
type Users interface {
	// CreateUser stores a new user; ErrExists if the id or the name is
	// taken.
	CreateUser(ctx context.Context, u *User) error
	// GetUserByName returns the user with that name or ErrNotFound. Names
	// are compared exactly; callers normalise them first.
	GetUserByName(ctx context.Context, name string) (*User, error)
	// GetUser returns the user with that id or ErrNotFound.
	GetUser(ctx context.Context, id string) (*User, error)
	// UpdateUserPassword replaces a user's password hash; ErrNotFound if
	// there is no such user.
	UpdateUserPassword(ctx context.Context, id, passwordHash string) error
}

// User is an end user who can log in to the authorization endpoint.
type User struct {
	// ID is the stable subject identifier (the sub of the user's tokens).
	ID string
	// Name is the unique login name.
	Name string
	// PasswordHash is the argon2id hash in PHC string format; empty for a
	// user who signs in only through an upstream identity provider.
	PasswordHash string
	CreatedAt    time.Time
	// DisplayName, Email and EmailVerified are what clients may learn of
	// the person as the OpenID Connect claims name, email and
	// email_verified; empty when unknown.
	DisplayName   string
	Email         string
	EmailVerified bool
	// Disabled users cannot sign in, and their grants issue no tokens.
	Disabled bool
}
