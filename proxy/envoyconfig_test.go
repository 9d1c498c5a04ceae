package proxy

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"testing"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"
)

// envoyBootstrap is the part of an Envoy bootstrap the example must get
// right.
type envoyBootstrap struct {
	StaticResources struct {
		Listeners []struct {
			FilterChains []struct {
				Filters []struct {
					Name        string `yaml:"name"`
					TypedConfig struct {
						HTTPFilters []struct {
							Name        string         `yaml:"name"`
							TypedConfig map[string]any `yaml:"typed_config"`
						} `yaml:"http_filters"`
					} `yaml:"typed_config"`
				} `yaml:"filters"`
			} `yaml:"filter_chains"`
		} `yaml:"listeners"`
		Clusters []struct {
			Name           string `yaml:"name"`
			LoadAssignment struct {
				Endpoints []struct {
					LBEndpoints []struct {
						Endpoint struct {
							Address struct {
								SocketAddress struct {
									Address   string `yaml:"address"`
									PortValue int    `yaml:"port_value"`
								} `yaml:"socket_address"`
							} `yaml:"address"`
						} `yaml:"endpoint"`
					} `yaml:"lb_endpoints"`
				} `yaml:"endpoints"`
			} `yaml:"load_assignment"`
		} `yaml:"clusters"`
	} `yaml:"static_resources"`
}

// TestEnvoyConfig checks the example Envoy configuration: the filter order,
// the clusters, and the ext_authz filter's configuration against Envoy's
// own API definition, since no Envoy runs in the tests.
func TestEnvoyConfig(t *testing.T) {
	raw, err := os.ReadFile("../deploy/envoy/envoy-ext-authz.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var b envoyBootstrap
	if err := yaml.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	sr := b.StaticResources
	if len(sr.Listeners) != 1 || len(sr.Listeners[0].FilterChains) != 1 || len(sr.Listeners[0].FilterChains[0].Filters) != 1 {
		t.Fatal("want one listener with one filter chain of one filter")
	}
	hcm := sr.Listeners[0].FilterChains[0].Filters[0]
	if hcm.Name != "envoy.filters.network.http_connection_manager" {
		t.Fatalf("network filter %q", hcm.Name)
	}
	var names []string
	for _, f := range hcm.TypedConfig.HTTPFilters {
		names = append(names, f.Name)
	}
	if want := []string{"envoy.filters.http.ext_authz", "envoy.filters.http.router"}; !slices.Equal(names, want) {
		t.Fatalf("http filters %q, want %q", names, want)
	}

	tc := hcm.TypedConfig.HTTPFilters[0].TypedConfig
	if tc["@type"] != "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz" {
		t.Errorf("ext_authz @type %q", tc["@type"])
	}
	delete(tc, "@type")
	js, err := json.Marshal(tc)
	if err != nil {
		t.Fatal(err)
	}
	var ea extauthzv3.ExtAuthz
	if err := protojson.Unmarshal(js, &ea); err != nil {
		t.Fatalf("ext_authz config: %v", err)
	}
	if err := ea.ValidateAll(); err != nil {
		t.Fatalf("ext_authz config: %v", err)
	}
	if ea.GetFailureModeAllow() || ea.GetGrpcService().GetEnvoyGrpc().GetClusterName() != "meshauth" ||
		ea.GetTransportApiVersion().String() != "V3" {
		t.Errorf("ext_authz misconfigured: %v", &ea)
	}

	clusters := map[string]string{}
	for _, c := range sr.Clusters {
		for _, e := range c.LoadAssignment.Endpoints {
			for _, lb := range e.LBEndpoints {
				sa := lb.Endpoint.Address.SocketAddress
				clusters[c.Name] = fmt.Sprintf("%s:%d", sa.Address, sa.PortValue)
			}
		}
	}
	if clusters["meshauth"] != "127.0.0.1:9001" || clusters["app"] == "" || len(clusters) != 2 {
		t.Errorf("clusters %v, want meshauth at 127.0.0.1:9001 and app", clusters)
	}
}
