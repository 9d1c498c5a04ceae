package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/meshauth/meshauth/internal/loopback"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/token"
)

// ClientMetadata is an RFC 7591 §2 registration request, with meshauth's
// extensions client_id (an operator-chosen id; registration needs the admin
// token anyway), access_token_format and allowed_audiences. A public client
// (a browser or native app) registers token_endpoint_auth_method none,
// grant_types authorization_code (and refresh_token) and its redirect_uris.
type ClientMetadata struct {
	ClientID                string          `json:"client_id,omitempty"`
	ClientName              string          `json:"client_name,omitempty"`
	GrantTypes              []string        `json:"grant_types,omitempty"`
	TokenEndpointAuthMethod string          `json:"token_endpoint_auth_method,omitempty"`
	Scope                   string          `json:"scope,omitempty"`
	JWKS                    json.RawMessage `json:"jwks,omitempty"`
	JWKSURI                 string          `json:"jwks_uri,omitempty"`
	RedirectURIs            []string        `json:"redirect_uris,omitempty"`
	// PostLogoutRedirectURIs are where the client may send people after
	// signing out (OpenID Connect RP-Initiated Logout 1.0 §3.1).
	PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris,omitempty"`
	ResponseTypes          []string `json:"response_types,omitempty"`
	AccessTokenFormat      string   `json:"access_token_format,omitempty"`
	AllowedAudiences       []string `json:"allowed_audiences,omitempty"`
	// ExchangeScopes limits, per target audience, the scopes the client may
	// obtain by token exchange (RFC 8693).
	ExchangeScopes map[string]string `json:"exchange_scopes,omitempty"`
	// MaxDelegationDepth bounds the act chain of the client's exchanged
	// tokens; 0 means the default.
	MaxDelegationDepth int `json:"max_delegation_depth,omitempty"`
}

// Registration is the RFC 7591 §3.2.1 answer: the registered metadata with
// defaults filled in, and the client secret, shown this once only.
type Registration struct {
	ClientMetadata
	ClientSecret          string `json:"client_secret,omitempty"`
	ClientIDIssuedAt      int64  `json:"client_id_issued_at"`
	ClientSecretExpiresAt int64  `json:"client_secret_expires_at"`
}

// GrantTypesSupported lists the grants this issuer serves.
var GrantTypesSupported = []string{GrantTypeAuthorizationCode, GrantTypeRefreshToken, "client_credentials", GrantTypeTokenExchange}

// AuthMethodsSupported lists the token endpoint authentication methods.
var AuthMethodsSupported = []string{authSecretBasic, authSecretPost, authPrivateKeyJWT, authNone}

var clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// RegisterClient validates md, fills in defaults, and stores a new client.
// The returned registration holds the only copy of the client secret; the
// store keeps its hash.
func RegisterClient(ctx context.Context, st store.Clients, md ClientMetadata, now time.Time) (*Registration, error) {
	c, err := clientFromMetadata(&md)
	if err != nil {
		return nil, err
	}
	c.CreatedAt = now.UTC()
	var secret string
	if c.TokenEndpointAuthMethod != authPrivateKeyJWT && c.TokenEndpointAuthMethod != authNone {
		secret = newSecret()
		c.SecretHash = hashSecret(secret)
	}
	generated := c.ID == ""
	for attempt := 0; ; attempt++ {
		if generated {
			c.ID = randomID()
		}
		err = st.CreateClient(ctx, c)
		if !errors.Is(err, store.ErrExists) {
			break
		}
		if !generated || attempt == 2 {
			return nil, errInvalidClientMetadata(fmt.Sprintf("client_id %q is already registered", c.ID))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("store client: %w", err)
	}
	md.ClientID = c.ID
	return &Registration{ClientMetadata: md, ClientSecret: secret, ClientIDIssuedAt: c.CreatedAt.Unix()}, nil
}

// clientFromMetadata validates md (normalising it in place) and builds the
// client record. Errors are invalid_client_metadata (RFC 7591 §3.2.2).
func clientFromMetadata(md *ClientMetadata) (*store.Client, error) {
	if md.ClientID != "" && !clientIDPattern.MatchString(md.ClientID) {
		return nil, errInvalidClientMetadata("client_id must be 1-128 characters of letters, digits, '.', '_', ':' or '-', starting with a letter or digit")
	}
	if len(md.ClientName) > 200 {
		return nil, errInvalidClientMetadata("client_name longer than 200 characters")
	}
	if len(md.GrantTypes) == 0 {
		md.GrantTypes = []string{"client_credentials"}
	}
	for _, g := range md.GrantTypes {
		if !slices.Contains(GrantTypesSupported, g) {
			return nil, errInvalidClientMetadata(fmt.Sprintf("grant type %q is not supported; supported: %s", truncate(g, 64), strings.Join(GrantTypesSupported, ", ")))
		}
	}
	md.GrantTypes = dedupe(md.GrantTypes)
	if md.TokenEndpointAuthMethod == "" {
		md.TokenEndpointAuthMethod = authSecretBasic // RFC 7591 §2 default
	}
	if !slices.Contains(AuthMethodsSupported, md.TokenEndpointAuthMethod) {
		return nil, errInvalidClientMetadata(fmt.Sprintf("token_endpoint_auth_method %q is not supported; supported: %s", truncate(md.TokenEndpointAuthMethod, 64), strings.Join(AuthMethodsSupported, ", ")))
	}
	scopes, err := parseScope(md.Scope)
	if err != nil {
		return nil, errInvalidClientMetadata(err.Error())
	}
	md.Scope = strings.Join(scopes, " ")
	if md.JWKSURI != "" {
		return nil, errInvalidClientMetadata("jwks_uri is not supported; register the public keys inline with jwks")
	}
	var jwks []byte
	switch {
	case md.TokenEndpointAuthMethod == authPrivateKeyJWT:
		if len(md.JWKS) == 0 {
			return nil, errInvalidClientMetadata("private_key_jwt needs the client's public keys in jwks")
		}
		keys, err := token.ParseJWKS(md.JWKS)
		if err != nil {
			return nil, errInvalidClientMetadata("jwks: " + err.Error())
		}
		if len(keys) == 0 {
			return nil, errInvalidClientMetadata("jwks holds no usable public signing key")
		}
		jwks = md.JWKS
	case len(md.JWKS) > 0:
		return nil, errInvalidClientMetadata("jwks is only used with token_endpoint_auth_method private_key_jwt")
	}
	if err := checkBrowserGrants(md); err != nil {
		return nil, err
	}
	switch md.AccessTokenFormat {
	case "":
		md.AccessTokenFormat = formatJWT
	case formatJWT, formatReference:
	default:
		return nil, errInvalidClientMetadata(`access_token_format must be "jwt" or "reference"`)
	}
	for _, a := range md.AllowedAudiences {
		if a == "" || len(a) > 512 || strings.ContainsAny(a, " \t\r\n") {
			return nil, errInvalidClientMetadata("allowed_audiences entries must be non-empty, at most 512 characters, without whitespace")
		}
	}
	md.AllowedAudiences = dedupe(md.AllowedAudiences)
	exchangeScopes := make(map[string][]string, len(md.ExchangeScopes))
	for aud, scope := range md.ExchangeScopes {
		if !slices.Contains(md.AllowedAudiences, aud) {
			return nil, errInvalidClientMetadata(fmt.Sprintf("exchange_scopes names %q, which is not in allowed_audiences", truncate(aud, 128)))
		}
		limit, err := parseScope(scope)
		if err != nil {
			return nil, errInvalidClientMetadata("exchange_scopes: " + err.Error())
		}
		exchangeScopes[aud] = limit
	}
	if md.MaxDelegationDepth < 0 || md.MaxDelegationDepth > 32 {
		return nil, errInvalidClientMetadata("max_delegation_depth must be between 0 (the default) and 32")
	}
	return &store.Client{
		ID:                      md.ClientID,
		Name:                    md.ClientName,
		TokenEndpointAuthMethod: md.TokenEndpointAuthMethod,
		GrantTypes:              md.GrantTypes,
		Scope:                   scopes,
		JWKS:                    jwks,
		AccessTokenFormat:       md.AccessTokenFormat,
		AllowedAudiences:        nonNil(md.AllowedAudiences),
		ExchangeScopes:          exchangeScopes,
		MaxDelegationDepth:      md.MaxDelegationDepth,
		RedirectURIs:            nonNil(md.RedirectURIs),
		PostLogoutRedirectURIs:  nonNil(md.PostLogoutRedirectURIs),
	}, nil
}

// checkBrowserGrants validates what a client of the authorization
// endpoint registers: its redirect URIs, response types, and the grants a
// public client may have. It fills in response_types.
func checkBrowserGrants(md *ClientMetadata) error {
	for _, u := range md.RedirectURIs {
		if err := checkRedirectURI(u); err != nil {
			// RFC 7591 §3.2.2 has its own code for this.
			return &oauthError{Status: http.StatusBadRequest, Code: "invalid_redirect_uri", Description: err.Error()}
		}
	}
	md.RedirectURIs = dedupe(md.RedirectURIs)
	for _, u := range md.PostLogoutRedirectURIs {
		if err := checkRedirectURI(u); err != nil {
			return errInvalidClientMetadata("post_logout_" + err.Error())
		}
	}
	md.PostLogoutRedirectURIs = dedupe(md.PostLogoutRedirectURIs)
	code := slices.Contains(md.GrantTypes, GrantTypeAuthorizationCode)
	for _, rt := range md.ResponseTypes {
		if rt != responseTypeCode {
			return errInvalidClientMetadata(fmt.Sprintf("response type %q is not supported; only code is", truncate(rt, 64)))
		}
	}
	switch {
	case len(md.ResponseTypes) > 0 && !code:
		// RFC 7591 §2.1: response type code goes with that grant.
		return errInvalidClientMetadata("response_types code needs grant_types authorization_code")
	case code && len(md.RedirectURIs) == 0:
		return &oauthError{Status: http.StatusBadRequest, Code: "invalid_redirect_uri", Description: "the authorization_code grant needs at least one redirect_uri"}
	case slices.Contains(md.GrantTypes, GrantTypeRefreshToken) && !code:
		return errInvalidClientMetadata("refresh_token needs authorization_code: refresh tokens are issued only with that grant")
	}
	if code {
		md.ResponseTypes = []string{responseTypeCode}
	}
	if md.TokenEndpointAuthMethod == authNone {
		for _, g := range md.GrantTypes {
			if !slices.Contains(publicClientGrants, g) {
				return errInvalidClientMetadata(fmt.Sprintf("a public client (token_endpoint_auth_method none) may use only authorization_code and refresh_token, not %s", g))
			}
		}
	}
	return nil
}

// checkRedirectURI accepts the redirect URIs of RFC 9700 §2.1 and RFC 8252
// §7: https; http only to a loopback host (a native app's local listener);
// or a private-use scheme in reverse domain notation (a native app's own
// scheme, RFC 8252 §7.1). Never a fragment (RFC 6749 §3.1.2) or userinfo.
func checkRedirectURI(raw string) error {
	u, err := url.Parse(raw)
	bad := func(why string) error { return fmt.Errorf("redirect_uri %q %s", truncate(raw, 128), why) }
	switch {
	case err != nil || !u.IsAbs():
		return bad("must be an absolute URI")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return bad("must not have a fragment")
	case u.User != nil:
		return bad("must not have userinfo")
	case u.Scheme == "https" && u.Host != "":
	case u.Scheme == "http" && u.Host != "":
		if !loopback.Host(u.Hostname()) {
			return bad("must use https (http only to a loopback address)")
		}
	case u.Scheme == "http" || u.Scheme == "https":
		return bad("must name a host")
	case strings.Contains(u.Scheme, "."):
	default:
		return bad("must use https, http on loopback, or a private-use scheme in reverse domain notation such as com.example.app:/callback")
	}
	return nil
}

// parseScope splits a space-delimited scope (RFC 6749 §3.3) and checks each
// token's characters; duplicates are dropped.
func parseScope(s string) ([]string, error) {
	fields := strings.Split(s, " ")
	out := make([]string, 0, len(fields))
	for _, f := range fields {
		if f == "" {
			continue
		}
		for i := 0; i < len(f); i++ {
			c := f[i]
			if c < 0x21 || c == 0x22 || c == 0x5c || c > 0x7e {
				return nil, fmt.Errorf("scope %q has a character RFC 6749 §3.3 does not allow", truncate(f, 64))
			}
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out, nil
}

func dedupe(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// maxRegistrationBytes bounds a registration request; a jwks with a few RSA
// keys fits easily.
const maxRegistrationBytes = 64 << 10

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	if !s.checkAdmin(w, r) {
		return
	}
	var md ClientMetadata
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRegistrationBytes))
	if err := dec.Decode(&md); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.writeError(w, r, &oauthError{Status: http.StatusRequestEntityTooLarge, Code: "invalid_request", Description: fmt.Sprintf("request body larger than %d bytes", maxRegistrationBytes)})
			return
		}
		s.writeError(w, r, errInvalidClientMetadata("the request body must be a JSON object of client metadata"))
		return
	}
	reg, err := RegisterClient(r.Context(), s.store, md, s.now())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("client registered", "client_id", reg.ClientID, "auth_method", reg.TokenEndpointAuthMethod, "grant_types", reg.GrantTypes)
	writeJSON(w, http.StatusCreated, reg)
}
