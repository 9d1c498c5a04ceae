package xds

import (
	"testing"

	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/token"
)

// BenchmarkBuildResources is the floor of a rotation's delivery
// (bench/BenchmarkXDSRotation): the JWK Set document of the new keys and
// one node's validated, consistent resources.
func BenchmarkBuildResources(b *testing.B) {
	n := &Node{ID: "x", Service: "payments", Listen: "0.0.0.0:8080", Upstream: "127.0.0.1:9000", ExtAuthz: "127.0.0.1:9001",
		ExtAuthzTimeout: defaultExtAuthzTimeout, JWTAuthn: &JWTAuthn{Issuers: []string{"https://a.example"}, Audiences: []string{"payments"}}}
	keys := []token.Key{newKey(b, "k1"), newKey(b, "k2")}
	b.ReportAllocs()
	for b.Loop() {
		doc, err := jwks.PublicJWKS(keys)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := buildResources(n, map[string][]byte{"https://a.example": doc}); err != nil {
			b.Fatal(err)
		}
	}
}
