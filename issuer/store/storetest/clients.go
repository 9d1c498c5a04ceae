package storetest

import (
	"bytes"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// clientTests are the tests of store.Clients.
var clientTests = []suiteTest{
	{"ClientRoundTrip", testClientRoundTrip},
	{"ClientEmptyLists", testClientEmptyLists},
	{"ClientCopies", testClientCopies},
	{"CreateClientExists", testCreateClientExists},
	{"GetClientNotFound", testGetClientNotFound},
	{"ListClients", testListClients},
	{"DeleteClient", testDeleteClient},
}

func newClient(id string) *store.Client {
	return &store.Client{
		ID:                      id,
		SecretHash:              "hash-of-" + id,
		Name:                    "client " + id,
		TokenEndpointAuthMethod: "private_key_jwt",
		GrantTypes:              []string{"client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"},
		Scope:                   []string{"write", "read"},
		JWKS:                    []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`),
		AccessTokenFormat:       "jwt",
		AllowedAudiences:        []string{"orders", "billing"},
		RedirectURIs:            []string{"https://example.com/cb"},
		PostLogoutRedirectURIs:  []string{"https://example.com/", "https://example.com/bye"},
		ExchangeScopes:          map[string][]string{"billing": {"read"}},
		MaxDelegationDepth:      3,
		CreatedAt:               base,
	}
}

func checkClient(t *testing.T, got, want *store.Client) {
	t.Helper()
	checkTime(t, "CreatedAt", got.CreatedAt, want.CreatedAt)
	g, w := *got, *want
	g.CreatedAt, w.CreatedAt = time.Time{}, time.Time{}
	// An absent list or key set reads back empty.
	for _, s := range []*[]string{&w.GrantTypes, &w.Scope, &w.AllowedAudiences, &w.RedirectURIs, &w.PostLogoutRedirectURIs} {
		if *s == nil {
			*s = []string{}
		}
	}
	if len(g.JWKS) == 0 && len(w.JWKS) == 0 {
		g.JWKS, w.JWKS = nil, nil
	}
	if w.ExchangeScopes == nil {
		w.ExchangeScopes = map[string][]string{}
	}
	if !clientsEqual(&g, &w) {
		t.Errorf("client = %+v\nwant %+v", g, w)
	}
}

// clientsEqual compares every field, telling nil slices from empty ones.
func clientsEqual(a, b *store.Client) bool {
	strs := func(x, y []string) bool { return (x == nil) == (y == nil) && slices.Equal(x, y) }
	return a.ID == b.ID && a.SecretHash == b.SecretHash && a.Name == b.Name &&
		a.TokenEndpointAuthMethod == b.TokenEndpointAuthMethod &&
		strs(a.GrantTypes, b.GrantTypes) && strs(a.Scope, b.Scope) &&
		bytes.Equal(a.JWKS, b.JWKS) && a.AccessTokenFormat == b.AccessTokenFormat &&
		strs(a.AllowedAudiences, b.AllowedAudiences) && strs(a.RedirectURIs, b.RedirectURIs) &&
		strs(a.PostLogoutRedirectURIs, b.PostLogoutRedirectURIs) &&
		maps.EqualFunc(a.ExchangeScopes, b.ExchangeScopes, slices.Equal) && (a.ExchangeScopes == nil) == (b.ExchangeScopes == nil) &&
		a.MaxDelegationDepth == b.MaxDelegationDepth && a.CreatedAt.Equal(b.CreatedAt)
}

func mustCreateClient(t *testing.T, s store.Clients, c *store.Client) {
	t.Helper()
	if err := s.CreateClient(t.Context(), c); err != nil {
		t.Fatalf("CreateClient(%q): %v", c.ID, err)
	}
}

func testClientRoundTrip(t *testing.T, h Harness) {
	s := h.Open(t)
	want := newClient("a")
	mustCreateClient(t, s, want)
	got, err := s.GetClient(t.Context(), "a")
	if err != nil {
		t.Fatalf("GetClient: %v", err)
	}
	checkClient(t, got, want)
}

func testClientEmptyLists(t *testing.T, h Harness) {
	tests := []struct {
		name  string
		empty func() []string
		jwks  []byte
	}{
		{"nil", func() []string { return nil }, nil},
		{"empty", func() []string { return []string{} }, []byte{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := h.Open(t)
			c := &store.Client{
				ID:                      "a",
				SecretHash:              "h",
				TokenEndpointAuthMethod: "client_secret_basic",
				GrantTypes:              tt.empty(),
				Scope:                   tt.empty(),
				JWKS:                    tt.jwks,
				AccessTokenFormat:       "reference",
				AllowedAudiences:        tt.empty(),
				RedirectURIs:            tt.empty(),
				CreatedAt:               base,
			}
			mustCreateClient(t, s, c)
			got, err := s.GetClient(t.Context(), "a")
			if err != nil {
				t.Fatalf("GetClient: %v", err)
			}
			checkClient(t, got, c)
			list, err := s.ListClients(t.Context())
			if err != nil || len(list) != 1 {
				t.Fatalf("ListClients: %d clients, %v", len(list), err)
			}
			checkClient(t, list[0], c)
		})
	}
}

// testClientCopies checks that the store keeps no reference to the caller's
// slices, nor hands out references to its own.
func testClientCopies(t *testing.T, h Harness) {
	s := h.Open(t)
	c := newClient("a")
	mustCreateClient(t, s, c)
	c.Scope[0] = "admin"
	c.JWKS[0] = 'X'
	got, err := s.GetClient(t.Context(), "a")
	if err != nil {
		t.Fatalf("GetClient: %v", err)
	}
	checkClient(t, got, newClient("a"))
	got.AllowedAudiences[0] = "everything"
	again, err := s.GetClient(t.Context(), "a")
	if err != nil {
		t.Fatalf("GetClient: %v", err)
	}
	checkClient(t, again, newClient("a"))
}

func testCreateClientExists(t *testing.T, h Harness) {
	s := h.Open(t)
	want := newClient("a")
	mustCreateClient(t, s, want)
	other := newClient("a")
	other.SecretHash = "another hash"
	other.Name = "impostor"
	wantErr(t, "CreateClient of a taken id", s.CreateClient(t.Context(), other), store.ErrExists)
	got, err := s.GetClient(t.Context(), "a")
	if err != nil {
		t.Fatalf("GetClient: %v", err)
	}
	checkClient(t, got, want)
}

func testGetClientNotFound(t *testing.T, h Harness) {
	s := h.Open(t)
	mustCreateClient(t, s, newClient("a"))
	_, err := s.GetClient(t.Context(), "b")
	wantErr(t, "GetClient of a missing id", err, store.ErrNotFound)
}

func testListClients(t *testing.T, h Harness) {
	s := h.Open(t)
	list, err := s.ListClients(t.Context())
	if err != nil || len(list) != 0 {
		t.Fatalf("ListClients on an empty store: %d clients, %v", len(list), err)
	}
	ids := []string{"m", "b", "z", "a", "B"}
	for _, id := range ids {
		mustCreateClient(t, s, newClient(id))
	}
	list, err = s.ListClients(t.Context())
	if err != nil {
		t.Fatalf("ListClients: %v", err)
	}
	var got []string
	for _, c := range list {
		got = append(got, c.ID)
		checkClient(t, c, newClient(c.ID))
	}
	slices.Sort(ids) // byte order, as both Go and PostgreSQL's "C" collation sort
	if !slices.Equal(got, ids) {
		t.Errorf("ListClients ids = %q, want %q", got, ids)
	}
}

func testDeleteClient(t *testing.T, h Harness) {
	s := h.Open(t)
	mustCreateClient(t, s, newClient("a"))
	mustCreateClient(t, s, newClient("b"))
	if err := s.DeleteClient(t.Context(), "a"); err != nil {
		t.Fatalf("DeleteClient: %v", err)
	}
	_, err := s.GetClient(t.Context(), "a")
	wantErr(t, "GetClient after DeleteClient", err, store.ErrNotFound)
	wantErr(t, "DeleteClient again", s.DeleteClient(t.Context(), "a"), store.ErrNotFound)
	wantErr(t, "DeleteClient of a missing id", s.DeleteClient(t.Context(), "nope"), store.ErrNotFound)
	if _, err := s.GetClient(t.Context(), "b"); err != nil {
		t.Errorf("GetClient of the other client: %v", err)
	}
	// The id is free again.
	mustCreateClient(t, s, newClient("a"))
}
