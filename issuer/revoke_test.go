package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// userGrant stores a grant of client for alice, with a refresh token, a
// reference access token and a JWT access token (sid = the grant), and
// returns the grant id and the three tokens.
func (e *env) userGrant(client string) (grant, refresh, ref, jwt string) {
	e.t.Helper()
	ctx := context.Background()
	now := time.Now()
	grant = randomID()
	g := &store.Grant{ID: grant, ClientID: client, Subject: "alice", Scope: []string{"read"}, Audience: []string{"orders"},
		CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := e.store.CreateGrant(ctx, g); err != nil {
		e.t.Fatal(err)
	}
	refresh = referenceToken()
	err := e.store.PutRefreshToken(ctx, &store.RefreshToken{Hash: ReferenceTokenHash(refresh), GrantID: grant, ClientID: client,
		Subject: "alice", Scope: g.Scope, Audience: g.Audience, IssuedAt: now, ExpiresAt: g.ExpiresAt})
	if err != nil {
		e.t.Fatal(err)
	}
	ref = e.putReference(store.AccessToken{GrantID: grant, ClientID: client, Subject: "alice", Audience: g.Audience, Scope: g.Scope})
	jwt = e.mint(map[string]any{"sub": "alice", "client_id": client, "sid": grant})
	return grant, refresh, ref, jwt
}

// revocations returns the stored revocations of kind.
func (e *env) revocations(kind string) []string {
	e.t.Helper()
	all, _, err := e.store.RevocationsAfter(context.Background(), 0, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	var values []string
	for _, r := range all {
		if r.Kind == kind {
			values = append(values, r.Value)
		}
	}
	return values
}

func TestRevocation(t *testing.T) {
	e := newEnv(t)
	auth := introspectionSetup(e)
	ctx := context.Background()
	webSecret, appSecret := secretOf(t, auth["web"]), secretOf(t, auth["app"])
	pubReference := func() string {
		return e.putReference(store.AccessToken{ClientID: "pub", Subject: "alice", Audience: []string{"orders"}})
	}

	type tokens struct{ revoked, untouched []string }
	tests := []struct {
		name  string
		setup func(t *testing.T) (form url.Values, toks tokens)
		authz string
		// check runs after the revocation, for what introspection cannot
		// see.
		check func(t *testing.T, form url.Values)
	}{
		{name: "JWT", authz: auth["web"], setup: func(t *testing.T) (url.Values, tokens) {
			tok := e.clientToken("web", webSecret, "orders")
			return url.Values{"token": {tok}, "token_type_hint": {"access_token"}}, tokens{revoked: []string{tok}}
		}, check: func(t *testing.T, form url.Values) {
			claims, err := e.srv.ownToken(ctx, form.Get("token"), true)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(e.revocations(store.RevokeToken), claims.ID) {
				t.Error("no revocation by jti was stored")
			}
		}},
		{name: "reference", authz: auth["app"], setup: func(t *testing.T) (url.Values, tokens) {
			tok := e.clientToken("app", appSecret, "orders")
			return url.Values{"token": {tok}}, tokens{revoked: []string{tok}}
		}, check: func(t *testing.T, form url.Values) {
			if _, err := e.store.GetAccessToken(ctx, ReferenceTokenHash(form.Get("token"))); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the reference token is still stored: %v", err)
			}
		}},
		{name: "reference with the refresh_token hint", authz: auth["app"], setup: func(t *testing.T) (url.Values, tokens) {
			tok := e.clientToken("app", appSecret, "orders")
			return url.Values{"token": {tok}, "token_type_hint": {"refresh_token"}}, tokens{revoked: []string{tok}}
		}},
		{name: "reference with an unknown hint", authz: auth["app"], setup: func(t *testing.T) (url.Values, tokens) {
			tok := e.clientToken("app", appSecret, "orders")
			return url.Values{"token": {tok}, "token_type_hint": {"id_token"}}, tokens{revoked: []string{tok}}
		}},
		{name: "refresh token ends its grant", authz: auth["web"], setup: func(t *testing.T) (url.Values, tokens) {
			_, refresh, ref, jwt := e.userGrant("web")
			return url.Values{"token": {refresh}, "token_type_hint": {"refresh_token"}}, tokens{revoked: []string{ref, jwt}}
		}, check: func(t *testing.T, form url.Values) {
			if _, err := e.store.GetRefreshToken(ctx, ReferenceTokenHash(form.Get("token"))); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the refresh token is still stored: %v", err)
			}
		}},
		{name: "refresh token without a hint", authz: auth["web"], setup: func(t *testing.T) (url.Values, tokens) {
			_, refresh, ref, jwt := e.userGrant("web")
			return url.Values{"token": {refresh}}, tokens{revoked: []string{ref, jwt}}
		}},
		{name: "access token of a grant leaves the grant", authz: auth["web"], setup: func(t *testing.T) (url.Values, tokens) {
			_, _, ref, jwt := e.userGrant("web")
			return url.Values{"token": {ref}}, tokens{revoked: []string{ref}, untouched: []string{jwt}}
		}},
		{name: "another client's JWT", authz: auth["app"], setup: func(t *testing.T) (url.Values, tokens) {
			tok := e.clientToken("web", webSecret, "orders")
			return url.Values{"token": {tok}}, tokens{untouched: []string{tok}}
		}},
		{name: "another client's reference", authz: auth["web"], setup: func(t *testing.T) (url.Values, tokens) {
			tok := e.clientToken("app", appSecret, "orders")
			return url.Values{"token": {tok}}, tokens{untouched: []string{tok}}
		}},
		{name: "another client's refresh token", authz: auth["app"], setup: func(t *testing.T) (url.Values, tokens) {
			_, refresh, ref, jwt := e.userGrant("web")
			return url.Values{"token": {refresh}, "token_type_hint": {"refresh_token"}}, tokens{untouched: []string{ref, jwt}}
		}},
		{name: "public client, its own token", setup: func(t *testing.T) (url.Values, tokens) {
			tok := pubReference()
			return url.Values{"token": {tok}, "client_id": {"pub"}}, tokens{revoked: []string{tok}}
		}},
		{name: "public client, another client's token", setup: func(t *testing.T) (url.Values, tokens) {
			tok := e.clientToken("app", appSecret, "orders")
			return url.Values{"token": {tok}, "client_id": {"pub"}}, tokens{untouched: []string{tok}}
		}},
		{name: "unknown token", authz: auth["web"], setup: func(t *testing.T) (url.Values, tokens) {
			return url.Values{"token": {referenceToken()}}, tokens{}
		}},
		{name: "garbage JWT", authz: auth["web"], setup: func(t *testing.T) (url.Values, tokens) {
			return url.Values{"token": {"a.b.c"}}, tokens{}
		}},
		{name: "expired JWT", authz: auth["web"], setup: func(t *testing.T) (url.Values, tokens) {
			tok := e.mint(map[string]any{"exp": time.Now().Add(-time.Hour).Unix(), "iat": time.Now().Add(-2 * time.Hour).Unix()})
			return url.Values{"token": {tok}}, tokens{}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			form, toks := tc.setup(t)
			for _, tok := range slices.Concat(toks.revoked, toks.untouched) {
				if !e.active(tok, auth["edge"]) {
					t.Fatal("a token is inactive before the revocation")
				}
			}
			before := len(e.revocations(store.RevokeToken)) + len(e.revocations(store.RevokeGrant))
			status, h, body := e.postForm(pathRevoke, form, tc.authz, "")
			if status != http.StatusOK || len(body) != 0 || h.Get("Cache-Control") != "no-store" {
				t.Fatalf("revoke: %d %v %q", status, h, body)
			}
			for _, tok := range toks.revoked {
				if e.active(tok, auth["edge"]) {
					t.Error("a revoked token is still active")
				}
			}
			for _, tok := range toks.untouched {
				if !e.active(tok, auth["edge"]) {
					t.Error("a token that must survive was revoked")
				}
			}
			after := len(e.revocations(store.RevokeToken)) + len(e.revocations(store.RevokeGrant))
			if len(toks.revoked) == 0 && after != before {
				t.Errorf("%d revocations stored for a request that revokes nothing", after-before)
			}
			if tc.check != nil {
				tc.check(t, form)
			}
		})
	}

	t.Run("repeated revocation of a JWT is stored once", func(t *testing.T) {
		tok := e.clientToken("web", webSecret, "orders")
		before := len(e.revocations(store.RevokeToken))
		for range 3 {
			if status, _, body := e.postForm(pathRevoke, url.Values{"token": {tok}}, auth["web"], ""); status != 200 {
				t.Fatalf("revoke: %d %s", status, body)
			}
		}
		if n := len(e.revocations(store.RevokeToken)) - before; n != 1 {
			t.Errorf("%d revocations stored", n)
		}
	})
}

func TestRevocationRequest(t *testing.T) {
	e := newEnv(t)
	auth := introspectionSetup(e)
	tok := e.clientToken("web", secretOf(t, auth["web"]), "orders")
	e.checkRefusals(t, pathRevoke, []refusal{
		{name: "no token", form: url.Values{"token_type_hint": {"access_token"}}, authz: auth["web"], status: 400, errCode: "invalid_request"},
		{name: "repeated token", form: url.Values{"token": {tok, tok}}, authz: auth["web"], status: 400, errCode: "invalid_request"},
		{name: "no client authentication", form: url.Values{"token": {tok}}, status: 401, errCode: "invalid_client", challenge: true},
		{name: "confidential client without its secret", form: url.Values{"token": {tok}, "client_id": {"web"}}, status: 401, errCode: "invalid_client", challenge: true},
		{name: "unknown client", form: url.Values{"token": {tok}, "client_id": {"nobody"}}, status: 401, errCode: "invalid_client", challenge: true},
		{name: "wrong secret", form: url.Values{"token": {tok}}, authz: basic("web", "wrong"), status: 401, errCode: "invalid_client", challenge: true},
		{name: "public client with a secret", form: url.Values{"token": {tok}, "client_id": {"pub"}, "client_secret": {"x"}}, status: 401, errCode: "invalid_client"},
	})
	if !e.active(tok, auth["orders"]) {
		t.Error("a refused revocation request revoked the token")
	}
}

// faultyStore fails the named methods, as a store that lost its database
// in the middle of a request would.
type faultyStore struct {
	store.Store
	mu      sync.Mutex
	failing []string
}

func (f *faultyStore) fail(methods ...string) {
	f.mu.Lock()
	f.failing = methods
	f.mu.Unlock()
}

func (f *faultyStore) fails(method string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.failing, method)
}

func (f *faultyStore) GetAccessToken(ctx context.Context, hash string) (*store.AccessToken, error) {
	if f.fails("GetAccessToken") {
		return nil, errDown
	}
	return f.Store.GetAccessToken(ctx, hash)
}

func (f *faultyStore) DeleteAccessToken(ctx context.Context, hash string) error {
	if f.fails("DeleteAccessToken") {
		return errDown
	}
	return f.Store.DeleteAccessToken(ctx, hash)
}

func (f *faultyStore) GetRefreshToken(ctx context.Context, hash string) (*store.RefreshToken, error) {
	if f.fails("GetRefreshToken") {
		return nil, errDown
	}
	return f.Store.GetRefreshToken(ctx, hash)
}

func (f *faultyStore) GetGrant(ctx context.Context, id string) (*store.Grant, error) {
	if f.fails("GetGrant") {
		return nil, errDown
	}
	return f.Store.GetGrant(ctx, id)
}

func (f *faultyStore) RevokeGrant(ctx context.Context, id string, at time.Time) error {
	if f.fails("RevokeGrant") {
		return errDown
	}
	return f.Store.RevokeGrant(ctx, id, at)
}

func (f *faultyStore) AddRevocation(ctx context.Context, r *store.Revocation) error {
	if f.fails("AddRevocation") {
		return errDown
	}
	return f.Store.AddRevocation(ctx, r)
}

func (f *faultyStore) IsRevoked(ctx context.Context, keys []store.RevocationKey, issuedAt, now time.Time) (bool, error) {
	if f.fails("IsRevoked") {
		return false, errDown
	}
	return f.Store.IsRevoked(ctx, keys, issuedAt, now)
}

// TestIntrospectionStoreFailure checks that a store failure is answered
// 503 temporarily_unavailable, never "inactive" (which a resource server
// would take as final) nor a revocation that did not happen.
func TestIntrospectionStoreFailure(t *testing.T) {
	var fs *faultyStore
	e := newEnvOn(t, t.TempDir(), func(s store.Store) store.Store { fs = &faultyStore{Store: s}; return fs })
	auth := introspectionSetup(e)
	webSecret, appSecret := secretOf(t, auth["web"]), secretOf(t, auth["app"])

	unavailable := func(t *testing.T, path string, form url.Values, authz string) {
		t.Helper()
		status, h, body := e.postForm(path, form, authz, "")
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		if status != http.StatusServiceUnavailable || m["error"] != "temporarily_unavailable" || h.Get("Retry-After") == "" {
			t.Errorf("%s: %d %v %s", path, status, h, body)
		}
	}
	tests := []struct {
		name    string
		failing []string
		path    string
		// token returns the token the request names, its caller, and the
		// access token to introspect afterwards (the token itself, or an
		// access token of the refresh token's grant).
		token func() (tok, authz, probe string)
		// revoked: the probe must be inactive once the store is back,
		// although the request failed (what was stored first holds).
		revoked bool
	}{
		{"introspect, token lookup", []string{"GetAccessToken"}, pathIntrospect, func() (string, string, string) {
			tok := e.clientToken("app", appSecret, "orders")
			return tok, auth["orders"], tok
		}, false},
		{"introspect, revocation check", []string{"IsRevoked"}, pathIntrospect, func() (string, string, string) {
			tok := e.clientToken("web", webSecret, "orders")
			return tok, auth["orders"], tok
		}, false},
		{"introspect, grant check", []string{"GetGrant"}, pathIntrospect, func() (string, string, string) {
			_, _, _, jwt := e.userGrant("web")
			return jwt, auth["orders"], jwt
		}, false},
		{"revoke JWT, revocation not stored", []string{"AddRevocation"}, pathRevoke, func() (string, string, string) {
			tok := e.clientToken("web", webSecret, "orders")
			return tok, auth["web"], tok
		}, false},
		{"revoke reference, revocation not stored", []string{"AddRevocation"}, pathRevoke, func() (string, string, string) {
			tok := e.clientToken("app", appSecret, "orders")
			return tok, auth["app"], tok
		}, false},
		{"revoke reference, deletion failed", []string{"DeleteAccessToken"}, pathRevoke, func() (string, string, string) {
			tok := e.clientToken("app", appSecret, "orders")
			return tok, auth["app"], tok
		}, true},
		{"revoke refresh token, lookup failed", []string{"GetRefreshToken"}, pathRevoke, func() (string, string, string) {
			_, refresh, _, jwt := e.userGrant("web")
			return refresh, auth["web"], jwt
		}, false},
		{"revoke refresh token, grant not revoked", []string{"RevokeGrant"}, pathRevoke, func() (string, string, string) {
			_, refresh, _, jwt := e.userGrant("web")
			return refresh, auth["web"], jwt
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, authz, probe := tc.token()
			fs.fail(tc.failing...)
			unavailable(t, tc.path, url.Values{"token": {tok}}, authz)
			fs.fail()
			if got := e.active(probe, auth["edge"]); got == tc.revoked {
				t.Errorf("after the failed request, active = %v", got)
			}
			if tc.path != pathRevoke {
				return
			}
			// Retried once the store is back, the revocation succeeds.
			if status, _, body := e.postForm(pathRevoke, url.Values{"token": {tok}}, authz, ""); status != 200 {
				t.Fatalf("retry: %d %s", status, body)
			}
			if e.active(probe, auth["edge"]) {
				t.Error("active after the retried revocation")
			}
		})
	}
	for _, secret := range []string{webSecret, appSecret} {
		if strings.Contains(e.logs.String(), secret) {
			t.Error("a client secret appeared in the logs")
		}
	}
}

// TestBrowserFlowToRevocation is the whole flow over loopback, for
// each access token format: authorize → login → consent → code → token
// with PKCE → introspect → refresh → revoke the access token → revoke the
// refresh token → introspect, as a public client and a resource server
// would.
func TestBrowserFlowToRevocation(t *testing.T) {
	e := newEnv(t)
	userID := e.addUser()
	ordersAuth := basic("orders", e.register(ClientMetadata{ClientID: "orders"}).ClientSecret)
	for _, format := range []string{formatJWT, formatReference} {
		t.Run(format, func(t *testing.T) {
			app := "app-" + format
			e.register(ClientMetadata{ClientID: app, TokenEndpointAuthMethod: authNone, AccessTokenFormat: format,
				GrantTypes:   []string{GrantTypeAuthorizationCode, GrantTypeRefreshToken},
				RedirectURIs: []string{testRedirect}, Scope: "orders.read", AllowedAudiences: []string{"orders"}})
			status, tok := e.redeem(app, e.browser().code(app, "audience", "orders"))
			if status != http.StatusOK {
				t.Fatalf("token: %d %v", status, tok)
			}
			access1, refresh1 := tok["access_token"].(string), tok["refresh_token"].(string)
			m := e.introspect(access1, ordersAuth)
			if m["active"] != true || m["sub"] != userID || m["client_id"] != app || m["aud"] != "orders" || m["sid"] == nil {
				t.Fatalf("introspection of the first access token: %v", m)
			}
			grant := m["sid"].(string)

			status, tok = e.refresh(app, refresh1)
			if status != http.StatusOK {
				t.Fatalf("refresh: %d %v", status, tok)
			}
			access2, refresh2 := tok["access_token"].(string), tok["refresh_token"].(string)
			if m := e.introspect(access2, ordersAuth); m["active"] != true || m["sid"] != grant {
				t.Fatalf("introspection of the refreshed access token: %v", m)
			}

			revoke := func(tok, hint string) {
				t.Helper()
				form := url.Values{"token": {tok}, "client_id": {app}, "token_type_hint": {hint}}
				if status, _, body := e.postForm(pathRevoke, form, "", ""); status != http.StatusOK {
					t.Fatalf("revoke: %d %s", status, body)
				}
			}
			// Revoking one access token leaves the grant.
			revoke(access2, "access_token")
			if e.active(access2, ordersAuth) || !e.active(access1, ordersAuth) {
				t.Fatal("revoking an access token did not end it alone")
			}
			// Revoking the refresh token ends the grant.
			revoke(refresh2, "refresh_token")
			if e.active(access1, ordersAuth) {
				t.Error("an access token of the revoked grant is active")
			}
			if status, m := e.refresh(app, refresh2); status != http.StatusBadRequest || m["error"] != "invalid_grant" {
				t.Errorf("refresh with the revoked token: %d %v", status, m)
			}
		})
	}
}
