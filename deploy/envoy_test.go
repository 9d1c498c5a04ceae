package deploy

import (
	"os"
	"strings"
	"testing"

	bootstrap "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	// The typed configs the bootstraps name, registered for protojson.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// decodeEnvoyFile decodes an Envoy config file into m as Envoy does (YAML
// → JSON → proto, unknown fields refused, typed configs resolved).
func decodeEnvoyFile(t *testing.T, path string, m proto.Message) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if err := protojson.Unmarshal(js, m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// loadBootstrap decodes an Envoy bootstrap and validates it.
func loadBootstrap(t *testing.T, path string) *bootstrap.Bootstrap {
	t.Helper()
	var b bootstrap.Bootstrap
	decodeEnvoyFile(t, path, &b)
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &b
}

func TestEnvoyBootstrapXDS(t *testing.T) {
	b := loadBootstrap(t, "envoy/bootstrap-xds.yaml")
	ads := b.GetDynamicResources().GetAdsConfig()
	if ads.GetTransportApiVersion().String() != "V3" || len(ads.GetGrpcServices()) != 1 {
		t.Fatalf("ads_config %v", ads)
	}
	if b.GetDynamicResources().GetLdsConfig().GetAds() == nil || b.GetDynamicResources().GetCdsConfig().GetAds() == nil {
		t.Error("listeners and clusters do not come over ADS")
	}
	xdsCluster := ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName()
	var found bool
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == xdsCluster {
			found = true
			if _, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; !ok {
				t.Errorf("cluster %s is not HTTP/2: gRPC needs it", xdsCluster)
			}
			addr := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
			if !strings.HasPrefix(addr.GetAddress(), "meshauth-xds.") || addr.GetPortValue() != 18000 {
				t.Errorf("xDS cluster points at %s:%d, not the meshauth-xds Service", addr.GetAddress(), addr.GetPortValue())
			}
		}
	}
	if !found {
		t.Errorf("ADS names cluster %q, which is not defined", xdsCluster)
	}
	if b.GetNode().GetId() == "" || b.GetNode().GetCluster() == "" {
		t.Error("node id and cluster placeholders missing")
	}
	if a := b.GetAdmin().GetAddress().GetSocketAddress().GetAddress(); a != "127.0.0.1" {
		t.Errorf("admin on %s: keep Envoy's admin on loopback", a)
	}
}

func TestEnvoyExtAuthzExample(t *testing.T) {
	b := loadBootstrap(t, "envoy/envoy-ext-authz.yaml")
	var hcm hcmv3.HttpConnectionManager
	if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	// The path Envoy routes and forwards is the one meshauth judged, and
	// what meshauth refuses (encoded slashes) Envoy refuses too.
	if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() ||
		hcm.GetPathWithEscapedSlashesAction() != hcmv3.HttpConnectionManager_REJECT_REQUEST {
		t.Errorf("normalize_path %v, merge_slashes %v, path_with_escaped_slashes_action %v",
			hcm.GetNormalizePath().GetValue(), hcm.GetMergeSlashes(), hcm.GetPathWithEscapedSlashesAction())
	}
}

// TestXDSConfig: the example xds config is one `meshauth xds` accepts,
// flags included, and it serves the Envoy cluster of the Kubernetes
// example.
func TestXDSConfig(t *testing.T) {
	_, cfg := xdsConfigFile(t)
	if len(cfg.Nodes) != 1 || cfg.Nodes[0].Cluster != "orders" || cfg.Nodes[0].JWTAuthn == nil {
		t.Fatalf("nodes %+v: want the orders cluster with jwt_authn", cfg.Nodes)
	}
	if !strings.HasPrefix(cfg.Issuers[0].Issuer, "https://") {
		t.Errorf("issuer %s is not https", cfg.Issuers[0].Issuer)
	}
}
