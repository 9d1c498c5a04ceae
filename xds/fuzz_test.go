package xds

import (
	"testing"
)

// FuzzParseConfig: the parser never panics, and whatever it accepts builds
// resources that pass Envoy's validation.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte("nodes:\n  - cluster: c\n    service: s\n    listen: 1.2.3.4:1\n    upstream: a:1\n    ext_authz: '[::1]:2'\n"))
	f.Add([]byte("issuers: &a []\nnodes: *a\n"))
	f.Add([]byte("{\"nodes\": [{\"node\": \"x\"}]}"))
	doc := []byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k","alg":"ES256","use":"sig"}]}`)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data, func(k string) bool { return k == "listen" })
		if err != nil {
			return
		}
		docs := map[string][]byte{}
		for _, iss := range cfg.Issuers {
			docs[iss.Issuer] = doc
		}
		for i := range cfg.Nodes {
			if _, err := buildResources(&cfg.Nodes[i], docs); err != nil {
				t.Fatalf("accepted config builds invalid resources: %v\n%s", err, data)
			}
		}
	})
}
