package xds

import (
	"crypto"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthz "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	jwtauthn "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/token"
)

// unpack resolves a typed config as Envoy does: by its type URL, from the
// registered message types.
func unpack[T proto.Message](t *testing.T, a *anypb.Any) T {
	t.Helper()
	m, err := anypb.UnmarshalNew(a, proto.UnmarshalOptions{})
	if err != nil {
		t.Fatalf("resolve %s: %v", a.GetTypeUrl(), err)
	}
	if err := validate(m); err != nil {
		t.Fatal(err)
	}
	v, ok := m.(T)
	if !ok {
		t.Fatalf("%s is a %T", a.GetTypeUrl(), m)
	}
	return v
}

// TestResources decodes every generated resource as Envoy would and checks
// the filter chain: jwt_authn (when configured), ext_authz, router.
func TestResources(t *testing.T) {
	cfg, err := ParseConfig([]byte(goodConfig), func(k string) bool { return k == "listen" })
	if err != nil {
		t.Fatal(err)
	}
	keyA, keyB := newKey(t, "a1"), newKey(t, "b1")
	docs := map[string][]byte{}
	for iss, k := range map[string]token.Key{"https://auth.example.com": keyA, "https://partner.example.net": keyB} {
		if docs[iss], err = jwks.PublicJWKS([]token.Key{k}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range cfg.Nodes {
		n := &cfg.Nodes[i]
		t.Run(n.Service, func(t *testing.T) {
			r, err := buildResources(n, docs)
			if err != nil {
				t.Fatal(err)
			}
			for typ, items := range r.byType {
				if r.versions[typ] == "" {
					t.Errorf("%s has no version", typ)
				}
				for _, item := range items {
					if err := validate(item); err != nil {
						t.Error(err)
					}
				}
			}

			lis := r.byType[resource.ListenerType][0].(*listener.Listener)
			if got := lis.GetAddress().GetSocketAddress(); got.GetPortValue() != 8080 {
				t.Errorf("listener address %v", got)
			}
			filters := lis.GetFilterChains()[0].GetFilters()
			if len(filters) != 1 {
				t.Fatalf("%d network filters", len(filters))
			}
			manager := unpack[*hcm.HttpConnectionManager](t, filters[0].GetTypedConfig())
			if manager.GetRds().GetRouteConfigName() != routeName(n.Service) || manager.GetRds().GetConfigSource().GetAds() == nil {
				t.Errorf("routes not from ADS by name: %v", manager.GetRds())
			}
			if !manager.GetNormalizePath().GetValue() || !manager.GetMergeSlashes() {
				t.Error("paths not normalized as the sidecar judges them")
			}

			var names []string
			for _, f := range manager.GetHttpFilters() {
				names = append(names, f.GetName())
				switch f.GetName() {
				case FilterJWTAuthn:
					checkJWTAuthn(t, n, unpack[*jwtauthn.JwtAuthentication](t, f.GetTypedConfig()), map[string]crypto.PublicKey{
						"https://auth.example.com": keyA.Public, "https://partner.example.net": keyB.Public,
					})
				case FilterExtAuthz:
					authz := unpack[*extauthz.ExtAuthz](t, f.GetTypedConfig())
					if authz.GetFailureModeAllow() || authz.GetTransportApiVersion().String() != "V3" {
						t.Errorf("ext_authz failure_mode_allow %v, transport %v", authz.GetFailureModeAllow(), authz.GetTransportApiVersion())
					}
					if got := authz.GetGrpcService().GetEnvoyGrpc().GetClusterName(); got != sidecarName(n.Service) {
						t.Errorf("ext_authz asks cluster %q", got)
					}
					if authz.GetGrpcService().GetTimeout().AsDuration() != n.ExtAuthzTimeout {
						t.Errorf("ext_authz timeout %v", authz.GetGrpcService().GetTimeout().AsDuration())
					}
				case FilterRouter:
					unpack[*router.Router](t, f.GetTypedConfig())
				}
			}
			want := []string{FilterExtAuthz, FilterRouter}
			if n.JWTAuthn != nil {
				want = append([]string{FilterJWTAuthn}, want...)
			}
			if len(names) != len(want) {
				t.Fatalf("filters %v, want %v", names, want)
			}
			for i := range want {
				if names[i] != want[i] {
					t.Fatalf("filters %v, want %v", names, want)
				}
			}

			rc := r.byType[resource.RouteType][0].(*route.RouteConfiguration)
			if got := rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster(); got != upstreamName(n.Service) {
				t.Errorf("route to %q", got)
			}
			clusters := map[string]*cluster.Cluster{}
			for _, c := range r.byType[resource.ClusterType] {
				clusters[c.(*cluster.Cluster).GetName()] = c.(*cluster.Cluster)
			}
			if clusters[upstreamName(n.Service)] == nil {
				t.Fatal("no upstream cluster")
			}
			sidecar := clusters[sidecarName(n.Service)]
			if sidecar == nil {
				t.Fatal("no sidecar cluster")
			}
			opts := unpack[*upstreamhttp.HttpProtocolOptions](t, sidecar.GetTypedExtensionProtocolOptions()[http2Options])
			if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
				t.Error("sidecar cluster is not HTTP/2 (gRPC)")
			}
			wantType := cluster.Cluster_STATIC
			if n.Service == "orders" {
				wantType = cluster.Cluster_STRICT_DNS // a DNS name
			}
			if got := clusters[upstreamName(n.Service)].GetType(); got != wantType {
				t.Errorf("upstream cluster type %v, want %v", got, wantType)
			}
		})
	}
}

func checkJWTAuthn(t *testing.T, n *Node, authn *jwtauthn.JwtAuthentication, keys map[string]crypto.PublicKey) {
	t.Helper()
	if len(authn.GetProviders()) != len(n.JWTAuthn.Issuers) {
		t.Fatalf("%d providers", len(authn.GetProviders()))
	}
	for name, p := range authn.GetProviders() {
		got, err := token.ParseJWKS([]byte(p.GetLocalJwks().GetInlineString()))
		if err != nil {
			t.Fatalf("provider %s: local_jwks: %v", name, err)
		}
		want, ok := keys[p.GetIssuer()].(interface{ Equal(crypto.PublicKey) bool })
		if len(got) != 1 || !ok || !want.Equal(got[0].Public) {
			t.Errorf("provider %s (%s): local_jwks holds %v", name, p.GetIssuer(), got)
		}
		if !p.GetForward() || p.GetForwardPayloadHeader() != "x-jwt-payload" || len(p.GetAudiences()) != 1 || p.GetAudiences()[0] != n.Service {
			t.Errorf("provider %s: forward %v, payload header %q, audiences %v", name, p.GetForward(), p.GetForwardPayloadHeader(), p.GetAudiences())
		}
	}
	// Any provider, or no token at all (the sidecar decides on public
	// routes); a bad token is refused.
	reqs := authn.GetRules()[0].GetRequires().GetRequiresAny().GetRequirements()
	if len(reqs) != len(n.JWTAuthn.Issuers)+1 || reqs[len(reqs)-1].GetAllowMissing() == nil {
		t.Errorf("requirements %v", reqs)
	}
}

func TestResourcesRequireToken(t *testing.T) {
	n := &Node{ID: "x", Service: "x", Listen: "0.0.0.0:1", Upstream: "127.0.0.1:2", ExtAuthz: "127.0.0.1:3", ExtAuthzTimeout: defaultExtAuthzTimeout,
		JWTAuthn: &JWTAuthn{Issuers: []string{"https://a.example"}, Audiences: []string{"x"}, RequireToken: true}}
	doc, err := jwks.PublicJWKS([]token.Key{newKey(t, "k")})
	if err != nil {
		t.Fatal(err)
	}
	r, err := buildResources(n, map[string][]byte{"https://a.example": doc})
	if err != nil {
		t.Fatal(err)
	}
	manager := unpack[*hcm.HttpConnectionManager](t, r.byType[resource.ListenerType][0].(*listener.Listener).GetFilterChains()[0].GetFilters()[0].GetTypedConfig())
	authn := unpack[*jwtauthn.JwtAuthentication](t, manager.GetHttpFilters()[0].GetTypedConfig())
	if got := authn.GetRules()[0].GetRequires().GetProviderName(); got != "issuer-0" {
		t.Fatalf("requirement %v, want provider issuer-0 alone", authn.GetRules()[0].GetRequires())
	}
	if _, err := buildResources(n, nil); err == nil {
		t.Fatal("resources built without the issuer's keys")
	}
}
