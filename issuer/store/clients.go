package store

import (
	"context"
	"time"
)

// Clients is the registry of OAuth clients (RFC 7591): the token
// endpoint reads a client on every request, registration and the admin
// API write them.
type Clients interface {
	// CreateClient stores a new client; ErrExists if the id is taken.
	CreateClient(ctx context.Context, c *Client) error
	// GetClient returns the client with that id or ErrNotFound.
	GetClient(ctx context.Context, id string) (*Client, error)
	// ListClients returns all clients ordered by id.
	ListClients(ctx context.Context) ([]*Client, error)
	// DeleteClient removes a client; ErrNotFound if there was none.
	DeleteClient(ctx context.Context, id string) error
}

// Client is a registered OAuth client (RFC 7591 metadata plus meshauth's
// extensions). Slices are never nil after a round trip through a store that
// stored them non-nil; an absent list is stored as empty.
type Client struct {
	ID string
	// SecretHash is the hash of the client secret (see issuer's secret
	// hashing); empty for clients that authenticate with private_key_jwt.
	SecretHash string
	Name       string
	// TokenEndpointAuthMethod is client_secret_basic, client_secret_post or
	// private_key_jwt.
	TokenEndpointAuthMethod string
	GrantTypes              []string
	// Scope is the set of scopes the client may request.
	Scope []string
	// JWKS is the client's public key set (RFC 7591 jwks) for
	// private_key_jwt, as JSON; empty otherwise.
	JWKS []byte
	// AccessTokenFormat is "jwt" or "reference".
	AccessTokenFormat string
	// AllowedAudiences are the audiences this client may obtain tokens for.
	AllowedAudiences []string
	RedirectURIs     []string
	// PostLogoutRedirectURIs are where the client may send people after
	// they sign out (OpenID Connect RP-Initiated Logout 1.0 §3.1).
	PostLogoutRedirectURIs []string
	// ExchangeScopes limits, per target audience, the scopes this client may
	// obtain by token exchange (RFC 8693); an audience not listed is limited
	// only by Scope. Absent reads back as an empty map.
	ExchangeScopes map[string][]string
	// MaxDelegationDepth bounds the act chain (RFC 8693 §4.1) of tokens this
	// client obtains by exchange; 0 means the issuer's default.
	MaxDelegationDepth int
	CreatedAt          time.Time
}
