package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/meshauth/meshauth/exchange"
	"github.com/meshauth/meshauth/issuer/exchangepolicy"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/token"
)

// GrantTypeTokenExchange is the RFC 8693 §2.1 grant type. A client must
// register it to use it.
const GrantTypeTokenExchange = exchange.GrantTypeTokenExchange

// Token type identifiers (RFC 8693 §3) accepted for subject and actor
// tokens and for requested_token_type. Both name this issuer's access
// tokens: "jwt" only the JWT ones, "access_token" reference tokens too.
const (
	tokenTypeAccessToken = exchange.TokenTypeAccessToken
	tokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
)

// tokenExchange serves RFC 8693: client c, serving a request made with the
// subject token, gets a token for the next hop. The policy (who may
// exchange what, for which audience and scope) is package
// exchangepolicy's; here the request is read, the tokens verified and the
// result minted.
//
// The new token is always a JWT, whatever c's access_token_format: it
// travels inside the mesh, where sidecars verify it locally, and it carries
// an act claim that a reference record cannot hold. Its sub is the subject
// token's, its client_id c's id — except for a dereference by an edge
// (exchangepolicy.Dereference), whose JWT keeps the reference token's
// client_id and jti. With the extension parameter subject_issuer naming a configured
// ForeignIssuer, the subject token is that server's, introspected there.
func (s *Server) tokenExchange(ctx context.Context, c *store.Client, form url.Values) (*tokenResponse, error) {
	subjectToken := form.Get("subject_token")
	if subjectToken == "" {
		return nil, errInvalidRequest("subject_token missing")
	}
	subjectJWTOnly, err := tokenType(form.Get("subject_token_type"), "subject_token_type")
	if err != nil {
		return nil, err
	}
	actorToken := form.Get("actor_token")
	var actorJWTOnly bool
	switch actorType := form.Get("actor_token_type"); {
	case actorToken != "":
		if actorJWTOnly, err = tokenType(actorType, "actor_token_type"); err != nil {
			return nil, err
		}
	case actorType != "":
		// RFC 8693 §2.1: actor_token_type MUST NOT be sent without actor_token.
		return nil, errInvalidRequest("actor_token_type without actor_token")
	}
	switch rt := form.Get("requested_token_type"); rt {
	case "", tokenTypeAccessToken, tokenTypeJWT:
	default:
		return nil, errInvalidRequest(fmt.Sprintf("requested_token_type %q is not supported; this issuer issues JWT access tokens (%s or %s)", truncate(rt, 128), tokenTypeAccessToken, tokenTypeJWT))
	}
	aud, err := requestedAudiences(form)
	if err != nil {
		return nil, err
	}
	scope, err := parseScope(form.Get("scope"))
	if err != nil {
		return nil, errInvalidScope(err.Error())
	}

	now := s.now().UTC()
	decide := exchangepolicy.Decide
	var subject *token.Claims
	if iss := form.Get(exchange.SubjectIssuerParam); iss != "" && iss != s.issuerURL {
		// Another authorization server's token, for an edge only.
		if subject, err = s.foreignToken(ctx, c, iss, subjectToken, now); err != nil {
			return nil, err
		}
		decide = exchangepolicy.Dereference
	} else {
		if subject, err = s.ownToken(ctx, subjectToken, subjectJWTOnly); err != nil {
			return nil, tokenError(err, "subject_token", errInvalidGrant)
		}
		if dereference(subjectToken, subjectJWTOnly, c) {
			decide = exchangepolicy.Dereference
		}
	}
	// The store is the source of truth for revocations: a token revoked a
	// moment ago, on any replica, buys no fresh one (RFC 7009 §2). A
	// reference token of a revoked grant is gone from the store already.
	revoked, err := s.revoked(ctx, subject)
	if err != nil {
		return nil, err
	}
	if revoked {
		return nil, errInvalidGrant("subject token revoked")
	}
	if actorToken != "" {
		// The actor is always the authenticated client, so an actor token
		// adds nothing to the act claim: it is checked, for clients that
		// send one anyway, only to be a live access token of this issuer
		// naming that client; its audience does not matter.
		actor, err := s.ownToken(ctx, actorToken, actorJWTOnly)
		if err != nil {
			return nil, tokenError(err, "actor_token", errInvalidRequest)
		}
		if actor.Subject != c.ID {
			return nil, errInvalidRequest("actor_token must be an access token whose sub is the authenticated client")
		}
		revoked, err := s.revoked(ctx, actor)
		if err != nil {
			return nil, err
		}
		if revoked {
			return nil, errInvalidRequest("actor_token revoked")
		}
	}

	req := exchangepolicy.Request{Subject: subject, Client: policyClient(c), Audiences: aud, Scope: scope}
	d, err := decide(req, now, s.tokenLifetime)
	if err != nil {
		return nil, decisionError(err)
	}
	resp, err := s.issueAccessToken(ctx, c, formatJWT, now, grantedToken{
		subject: subject.Subject, audience: d.Audience, scope: d.Scope, expiresAt: d.ExpiresAt, act: d.Act,
		// The grant travels on, so that revoking it reaches every hop.
		grantID: subject.SessionID, clientID: d.ClientID, id: d.ID,
	})
	if err != nil {
		return nil, err
	}
	resp.IssuedTokenType = tokenTypeAccessToken
	return resp, nil
}

// policyClient is what the exchange policy reads of c.
func policyClient(c *store.Client) *exchangepolicy.Client {
	return &exchangepolicy.Client{ID: c.ID, Scope: c.Scope, AllowedAudiences: c.AllowedAudiences,
		ExchangeScopes: c.ExchangeScopes, MaxDelegationDepth: c.MaxDelegationDepth}
}

// dereference reports whether an exchange is a dereference (see
// exchangepolicy.Dereference): an edge gateway, a client registered with
// exchangepolicy.DereferenceScope, presenting a reference token. Reference
// tokens are for the Internet side only, so an edge never exchanges one
// for itself; its JWT subject tokens, if any, follow Decide's rules.
func dereference(subjectToken string, jwtOnly bool, c *store.Client) bool {
	return !jwtOnly && token.IsReference(subjectToken) && slices.Contains(c.Scope, exchangepolicy.DereferenceScope)
}

// foreignToken returns the claims of value, a token of the foreign issuer
// iss, for client c, which must be an edge (exchangepolicy.DereferenceScope).
func (s *Server) foreignToken(ctx context.Context, c *store.Client, iss, value string, now time.Time) (*token.Claims, error) {
	if !slices.Contains(c.Scope, exchangepolicy.DereferenceScope) {
		return nil, errUnauthorizedClient("only a client registered with scope " + exchangepolicy.DereferenceScope + " may present another issuer's token")
	}
	f := s.foreign[iss]
	if f == nil {
		return nil, errInvalidRequest(fmt.Sprintf("%s %q is not a foreign issuer of this issuer", exchange.SubjectIssuerParam, truncate(iss, 128)))
	}
	claims, err := f.introspect(ctx, value, now)
	if errors.Is(err, errForeignInactive) {
		return nil, errInvalidGrant("subject_token is not active at " + f.ID)
	}
	// Any other failure: the foreign server could not be asked (503).
	return claims, err
}

// tokenType checks a subject_token_type or actor_token_type value and
// reports whether it admits JWTs only.
func tokenType(value, param string) (jwtOnly bool, err error) {
	switch value {
	case tokenTypeJWT:
		return true, nil
	case tokenTypeAccessToken:
		return false, nil
	case "":
		return false, errInvalidRequest(param + " missing")
	default:
		return false, errInvalidRequest(fmt.Sprintf("%s %q is not supported; use %s or %s", param, truncate(value, 128), tokenTypeAccessToken, tokenTypeJWT))
	}
}

// errUnknownReference: no live reference token has that value.
var errUnknownReference = errors.New("unknown or expired reference token")

// tokenError turns a failure of ownToken for parameter param into the
// answer made by code; a store failure stays an internal error. The
// descriptions are fixed texts that never quote the token.
func tokenError(err error, param string, code func(string) *oauthError) error {
	var te *token.Error
	switch {
	case errors.As(err, &te) && te.Reason == token.BadIssuer:
		// Another issuer's JWT: only this issuer's own tokens are exchanged
		// (a foreign reference token goes through subject_issuer instead).
		return code(param + " issuer is not trusted")
	case errors.As(err, &te), errors.Is(err, errUnknownReference):
		return code(fmt.Sprintf("%s is not valid (%v)", param, err))
	}
	return err
}

// decisionError maps a refusal of the exchange policy to its OAuth error.
func decisionError(err error) error {
	switch {
	case errors.Is(err, exchangepolicy.ErrNoAudience):
		return errInvalidRequest(err.Error())
	case errors.Is(err, exchangepolicy.ErrTarget):
		return errInvalidTarget(err.Error()) // RFC 8693 §2.2.2
	case errors.Is(err, exchangepolicy.ErrScope):
		return errInvalidScope(err.Error())
	case errors.Is(err, exchangepolicy.ErrNoDereference):
		return errUnauthorizedClient(err.Error())
	case errors.Is(err, exchangepolicy.ErrNotAudience), errors.Is(err, exchangepolicy.ErrDepth),
		errors.Is(err, exchangepolicy.ErrExpired), errors.Is(err, exchangepolicy.ErrClaim):
		// The subject token is unacceptable for this exchange.
		return errInvalidGrant(err.Error())
	}
	return fmt.Errorf("token exchange: %w", err)
}

// ownToken verifies value as an access token of this issuer and returns its
// claims: a JWT signed with one of the issuer's published keys, or, unless
// jwtOnly, a live reference token from the store (a value without dots:
// a JWS always has two).
//
// The audience is not checked here (token.Policy.AnyAudience): who may
// present the token is the caller's rule (for a subject token,
// exchangepolicy.Decide's: the client is in "aud" or named by "may_act").
func (s *Server) ownToken(ctx context.Context, value string, jwtOnly bool) (*token.Claims, error) {
	if !jwtOnly && token.IsReference(value) {
		return s.referenceClaims(ctx, value)
	}
	var c token.Claims
	if err := s.own.VerifyInto([]byte(value), &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// referenceClaims returns the claims of the live reference token value.
func (s *Server) referenceClaims(ctx context.Context, value string) (*token.Claims, error) {
	rec, err := s.store.GetAccessToken(ctx, ReferenceTokenHash(value))
	if errors.Is(err, store.ErrNotFound) {
		return nil, errUnknownReference
	}
	if err != nil {
		return nil, fmt.Errorf("look up reference token: %w", err)
	}
	// The store drops expired records, but by its clock; ours decides.
	if !s.now().Before(rec.ExpiresAt) {
		return nil, errUnknownReference
	}
	return &token.Claims{
		Issuer: s.issuerURL, Subject: rec.Subject, Audience: rec.Audience, ExpiresAt: rec.ExpiresAt,
		IssuedAt: rec.IssuedAt, ID: rec.ID, ClientID: rec.ClientID, Scope: strings.Join(rec.Scope, " "),
		SessionID: rec.GrantID,
	}, nil
}
