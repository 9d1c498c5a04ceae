package issuer

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/rp"
)

// OpenID Connect scopes (Core §3.1.2.1, §5.4): openid makes a request an
// authentication request, answered with an ID Token; profile and email
// release those claims of the user record.
const (
	scopeOpenID  = "openid"
	scopeProfile = "profile"
	scopeEmail   = "email"
)

// prompt values (OpenID Connect Core §3.1.2.1).
const (
	promptNone          = "none"
	promptLogin         = "login"
	promptConsent       = "consent"
	promptSelectAccount = "select_account"
)

var promptValues = []string{promptNone, promptLogin, promptConsent, promptSelectAccount}

// Bounds of the OpenID Connect parameters, which travel sealed in the
// login forms and cookies.
const (
	maxNonceBytes     = 512
	maxLoginHintBytes = 256
	maxMaxAge         = 1 << 31
)

// idTokenType is the "typ" of ID Tokens: never an access token's at+jwt
// (RFC 9068 §2.1), which every verifier of access tokens requires, so an
// ID Token is refused wherever an access token is expected.
const idTokenType = "JWT"

// unsupportedParams are the OpenID Connect request parameters meshauth
// does not serve, each with the error Core §3.1.2.6 names for it.
var unsupportedParams = []struct{ param, code string }{
	{"request", "request_not_supported"},
	{"request_uri", "request_uri_not_supported"},
	{"registration", "registration_not_supported"},
}

func (req *authorizationRequest) prompts(v string) bool { return slices.Contains(req.Prompt, v) }

// parseOpenID reads the OpenID Connect parameters of an authorization
// request (Core §3.1.2.1) into req. They are honoured with or without the
// openid scope. Its errors go to the client's redirect URI.
func (s *Server) parseOpenID(form url.Values, req *authorizationRequest) *oauthError {
	for _, u := range unsupportedParams {
		if form.Has(u.param) {
			return &oauthError{Status: http.StatusBadRequest, Code: u.code, Description: u.param + " is not supported"}
		}
	}
	if req.Nonce = form.Get("nonce"); len(req.Nonce) > maxNonceBytes {
		req.Nonce = ""
		return errInvalidRequest(fmt.Sprintf("nonce longer than %d bytes", maxNonceBytes))
	}
	if p := form.Get("prompt"); p != "" {
		req.Prompt = dedupe(strings.Fields(p))
		for _, v := range req.Prompt {
			if !slices.Contains(promptValues, v) {
				return errInvalidRequest(fmt.Sprintf("prompt %q is not one of %s", truncate(v, 32), strings.Join(promptValues, ", ")))
			}
		}
		if req.prompts(promptNone) && len(req.Prompt) > 1 {
			return errInvalidRequest("prompt none goes with no other value")
		}
	}
	if v := form.Get("max_age"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > maxMaxAge || v[0] == '+' {
			return errInvalidRequest("max_age must be a number of seconds")
		}
		req.MaxAge = &n
	}
	if h := form.Get("login_hint"); len(h) <= maxLoginHintBytes {
		req.LoginHint = h
	}
	if hint := form.Get("id_token_hint"); hint != "" {
		c, err := s.hints.VerifyExpired([]byte(hint))
		if err != nil {
			return errInvalidRequest("id_token_hint is not an ID Token of this issuer")
		}
		req.HintSubject = c.Subject
	}
	return nil
}

// interactionError answers a prompt=none request that cannot be answered
// without showing a page (Core §3.1.2.6).
func interactionError(code, desc string) *oauthError {
	return &oauthError{Status: http.StatusBadRequest, Code: code, Description: desc}
}

// standardClaims are the claims of the user record that the profile and
// email scopes release (OpenID Connect Core §5.1, §5.4), in the ID Token
// and at the userinfo endpoint.
type standardClaims struct {
	PreferredUsername string `json:"preferred_username,omitempty"`
	Name              string `json:"name,omitempty"`
	Email             string `json:"email,omitempty"`
	EmailVerified     *bool  `json:"email_verified,omitempty"`
}

// userClaims returns what scope releases of u.
func userClaims(u *store.User, scope []string) standardClaims {
	var c standardClaims
	if slices.Contains(scope, scopeProfile) {
		c.PreferredUsername, c.Name = u.Name, u.DisplayName
	}
	if slices.Contains(scope, scopeEmail) && u.Email != "" {
		verified := u.EmailVerified
		c.Email, c.EmailVerified = u.Email, &verified
	}
	return c
}

// idTokenClaims are the claims of an ID Token (OpenID Connect Core §2),
// with idp, the upstream provider the user signed in through.
type idTokenClaims struct {
	Issuer          string   `json:"iss"`
	Subject         string   `json:"sub"`
	Audience        string   `json:"aud"`
	ExpiresAt       int64    `json:"exp"`
	IssuedAt        int64    `json:"iat"`
	AuthTime        int64    `json:"auth_time,omitempty"`
	Nonce           string   `json:"nonce,omitempty"`
	AccessTokenHash string   `json:"at_hash,omitempty"`
	AMR             []string `json:"amr,omitempty"`
	IDP             string   `json:"idp,omitempty"`
	standardClaims
}

// issueIDToken returns the ID Token of grant g of user u for client c,
// issued with accessToken at now. Its audience is the client alone, so no
// azp is needed (Core §2). A refreshed ID Token has no nonce (Core §12.2).
func (s *Server) issueIDToken(c *store.Client, g *store.Grant, u *store.User, scope []string, accessToken string, now time.Time, withNonce bool) (string, error) {
	claims := &idTokenClaims{
		Issuer: s.issuerURL, Subject: u.ID, Audience: c.ID, IssuedAt: now.Unix(), ExpiresAt: now.Add(s.tokenLifetime).Unix(),
		AMR: g.AMR, IDP: g.IDP, standardClaims: userClaims(u, scope),
	}
	if !g.AuthTime.IsZero() {
		claims.AuthTime = g.AuthTime.Unix()
	}
	if withNonce {
		claims.Nonce = g.Nonce
	}
	return s.signIDToken(claims, accessToken)
}

// signIDToken signs claims with at_hash set for accessToken. The hash of
// at_hash follows the algorithm of the signing key, which a rotation may
// change at any time: the algorithm last signed with is assumed, and the
// token signed again if the key's algorithm was another.
func (s *Server) signIDToken(claims *idTokenClaims, accessToken string) (string, error) {
	alg, _ := s.idTokenAlg.Load().(string)
	for range 3 {
		claims.AccessTokenHash = rp.AccessTokenHash(alg, accessToken)
		payload, err := json.Marshal(claims)
		if err != nil {
			return "", fmt.Errorf("encode ID Token claims: %w", err)
		}
		jws, err := s.keys.Sign(idTokenType, payload)
		if err != nil {
			return "", fmt.Errorf("sign ID Token: %w", err)
		}
		signed := rp.HeaderAlgorithm(jws)
		if signed == alg {
			return jws, nil
		}
		s.idTokenAlg.Store(signed)
		alg = signed
	}
	return "", fmt.Errorf("sign ID Token: the signing key's algorithm kept changing")
}

// loginHintName is the user name a login_hint fills in on the login page:
// the hint itself if it is a valid name, else nothing.
func loginHintName(hint string) string {
	if n, err := NormalizeUserName(hint); err == nil {
		return n
	}
	return ""
}
