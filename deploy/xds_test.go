package deploy

import (
	"os"
	"path"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshauth/meshauth/xds"
)

// xdsHost is the xDS Service's name inside the cluster.
const xdsHost = "meshauth-xds.meshauth.svc.cluster.local"

// loadSDSFile decodes a file of secrets for Envoy's file-based SDS as Envoy
// does (a DiscoveryResponse in YAML) and validates each secret, by name.
func loadSDSFile(t *testing.T, file string) map[string]*tlsv3.Secret {
	t.Helper()
	var resp discovery.DiscoveryResponse
	decodeEnvoyFile(t, file, &resp)
	out := map[string]*tlsv3.Secret{}
	for _, r := range resp.GetResources() {
		var s tlsv3.Secret
		if err := r.UnmarshalTo(&s); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if err := s.ValidateAll(); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out[s.GetName()] = &s
	}
	return out
}

// sdsFiles maps the paths the bootstrap reads SDS files from (its
// ConfigMap mounted at /etc/envoy) to the files of this folder.
var sdsFiles = map[string]string{
	"/etc/envoy/xds-client.yaml": "envoy/sds/xds-client.yaml",
	"/etc/envoy/mesh-ca.yaml":    "envoy/sds/mesh-ca.yaml",
}

// xdsTLS is what the bootstrap's xDS cluster does for mutual TLS.
type xdsTLS struct {
	sni        string
	clientCert *tlsv3.TlsCertificate
	validation *tlsv3.CertificateValidationContext
}

// bootstrapXDSTLS reads the TLS of the bootstrap's xDS cluster and the
// SDS files it names.
func bootstrapXDSTLS(t *testing.T) xdsTLS {
	t.Helper()
	b := loadBootstrap(t, "envoy/bootstrap-xds.yaml")
	name := b.GetDynamicResources().GetAdsConfig().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName()
	var c *clusterv3.Cluster
	for _, sc := range b.GetStaticResources().GetClusters() {
		if sc.GetName() == name {
			c = sc
		}
	}
	var ctx tlsv3.UpstreamTlsContext
	if c == nil || c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&ctx) != nil {
		t.Fatalf("the xDS cluster %s has no TLS transport socket", name)
	}
	common := ctx.GetCommonTlsContext()
	if len(common.GetTlsCertificates()) > 0 || common.GetValidationContext() != nil {
		t.Error("the xDS cluster's TLS names files directly: Envoy reads them only at start; use SDS files, read again on renewal")
	}
	sds := func(cfg *tlsv3.SdsSecretConfig) *tlsv3.Secret {
		t.Helper()
		pc := cfg.GetSdsConfig().GetPathConfigSource()
		file, ok := sdsFiles[pc.GetPath()]
		if !ok || pc.GetWatchedDirectory().GetPath() != path.Dir(pc.GetPath()) {
			t.Fatalf("SDS secret %s: from %q, watching %q: want one of the SDS files, its directory watched", cfg.GetName(), pc.GetPath(), pc.GetWatchedDirectory().GetPath())
		}
		s := loadSDSFile(t, file)[cfg.GetName()]
		if s == nil {
			t.Fatalf("%s has no secret %s", file, cfg.GetName())
		}
		return s
	}
	if len(common.GetTlsCertificateSdsSecretConfigs()) != 1 || common.GetValidationContextSdsSecretConfig() == nil {
		t.Fatal("the xDS cluster does not present a client certificate and check the server's, over SDS")
	}
	return xdsTLS{
		sni:        ctx.GetSni(),
		clientCert: sds(common.GetTlsCertificateSdsSecretConfigs()[0]).GetTlsCertificate(),
		validation: sds(common.GetValidationContextSdsSecretConfig()).GetValidationContext(),
	}
}

// TestEnvoyBootstrapXDSMutualTLS: Envoy speaks to meshauth xds over
// mutual TLS: it presents a client certificate from files in a watched
// directory (a renewal is read without a restart), trusts a CA from a
// watched file, and checks the server's name.
func TestEnvoyBootstrapXDSMutualTLS(t *testing.T) {
	tls := bootstrapXDSTLS(t)
	if tls.sni != xdsHost {
		t.Errorf("SNI %q, want %s", tls.sni, xdsHost)
	}
	cert := tls.clientCert
	dir := cert.GetWatchedDirectory().GetPath()
	for _, f := range []string{cert.GetCertificateChain().GetFilename(), cert.GetPrivateKey().GetFilename()} {
		if f == "" || path.Dir(f) != dir {
			t.Errorf("client certificate file %q is not in its watched directory %q", f, dir)
		}
	}
	v := tls.validation
	if ca := v.GetTrustedCa().GetFilename(); ca == "" || path.Dir(ca) != v.GetWatchedDirectory().GetPath() {
		t.Errorf("trusted CA %q is not in its watched directory %q", ca, v.GetWatchedDirectory().GetPath())
	}
	if !slices.ContainsFunc(v.GetMatchTypedSubjectAltNames(), func(m *tlsv3.SubjectAltNameMatcher) bool {
		return m.GetSanType() == tlsv3.SubjectAltNameMatcher_DNS && m.GetMatcher().GetExact() == xdsHost
	}) {
		t.Errorf("the server's certificate is not checked for the name %s", xdsHost)
	}
}

// xdsConfigFile is the example xds config: its flags and its entries.
func xdsConfigFile(t *testing.T) (map[string]string, *xds.Config) {
	t.Helper()
	data, err := os.ReadFile("xds/meshauth-xds.yaml")
	if err != nil {
		t.Fatal(err)
	}
	help := meshauthHelp(t, "xds")
	cfg, err := xds.ParseConfig(data, func(key string) bool { return hasFlag(help, key) })
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]any
	if err := yaml.Unmarshal(data, &all); err != nil {
		t.Fatal(err)
	}
	flags := map[string]string{}
	for k, v := range all {
		if s, ok := v.(string); ok {
			flags[k] = s
		}
	}
	return flags, cfg
}

// mountOf returns the volume mounted in ct at the directory of file.
func mountOf(w workload, ct corev1.Container, file string) *corev1.Volume {
	for _, m := range ct.VolumeMounts {
		if m.MountPath == path.Dir(file) {
			for i := range w.template.Spec.Volumes {
				if v := &w.template.Spec.Volumes[i]; v.Name == m.Name {
					return v
				}
			}
		}
	}
	return nil
}

// certificateFor returns the cert-manager Certificate in namespace that
// writes secret.
func (c *cluster) certificateFor(namespace, secret string) map[string]any {
	for _, cert := range c.other["Certificate"] {
		meta, _ := cert["metadata"].(map[string]any)
		spec, _ := cert["spec"].(map[string]any)
		if meta["namespace"] == namespace && spec["secretName"] == secret {
			return spec
		}
	}
	return nil
}

func container(w workload, name string) (corev1.Container, bool) {
	for _, ct := range w.template.Spec.Containers {
		if ct.Name == name {
			return ct, true
		}
	}
	return corev1.Container{}, false
}

// TestKubernetesXDSMutualTLS: the manifests run meshauth xds in
// authenticated mode, end to end: its server certificate is a
// cert-manager Certificate for the name Envoy checks, it requires client
// certificates of the mesh CA, and every identity an entry lists is the
// SPIFFE ID of a Certificate mounted where the Envoy of that entry's
// cluster, running as that service account, reads its client
// certificate.
func TestKubernetesXDSMutualTLS(t *testing.T) {
	c := clusterNamed(t, "kustomize examples")
	flags, cfg := xdsConfigFile(t)
	tls := bootstrapXDSTLS(t)
	for _, f := range []string{"tls-cert-file", "tls-key-file", "tls-client-ca-file"} {
		if flags[f] == "" {
			t.Fatalf("the xds config does not set %s: xDS is not authenticated", f)
		}
	}

	var server workload
	for _, w := range c.workloads() {
		if w.name == "meshauth-xds" {
			server = w
		}
	}
	ct, ok := container(server, "xds")
	if !ok {
		t.Fatal("no meshauth-xds Deployment with an xds container")
	}
	certVol, keyVol := mountOf(server, ct, flags["tls-cert-file"]), mountOf(server, ct, flags["tls-key-file"])
	if certVol == nil || certVol != keyVol || certVol.Secret == nil {
		t.Fatalf("--tls-cert-file and --tls-key-file are not in one mounted Secret")
	}
	spec := c.certificateFor(server.namespace, certVol.Secret.SecretName)
	if spec == nil {
		t.Fatalf("no Certificate writes the xds server's Secret %s", certVol.Secret.SecretName)
	}
	if names, _ := spec["dnsNames"].([]any); !slices.Contains(names, any(tls.sni)) {
		t.Errorf("the xds server's Certificate names %v, not %s, which Envoy checks", names, tls.sni)
	}
	if v := mountOf(server, ct, flags["tls-client-ca-file"]); v == nil || v.ConfigMap == nil ||
		c.configMaps[server.namespace+"/"+v.ConfigMap.Name] == nil && !prerequisites(t).has("configmap", server.namespace, v.ConfigMap.Name, path.Base(flags["tls-client-ca-file"])) {
		t.Error("--tls-client-ca-file is not in a mounted ConfigMap of the manifests or of prerequisites.sh")
	}

	for i, n := range cfg.Nodes {
		if len(n.Identities) == 0 {
			t.Errorf("nodes[%d] lists no identities", i)
		}
		for _, id := range n.Identities {
			ns, sa, ok := spiffeServiceAccount(id)
			if !ok {
				t.Errorf("nodes[%d]: identity %q is not a SPIFFE ID of a service account", i, id)
				continue
			}
			checkEnvoyOf(t, c, n, id, ns, sa, tls)
		}
	}
}

// spiffeServiceAccount reads spiffe://cluster.local/ns/NS/sa/SA.
func spiffeServiceAccount(id string) (namespace, account string, ok bool) {
	rest, ok := strings.CutPrefix(id, "spiffe://cluster.local/ns/")
	if !ok {
		return "", "", false
	}
	namespace, account, ok = strings.Cut(rest, "/sa/")
	return namespace, account, ok && namespace != "" && account != "" && !strings.Contains(account, "/")
}

// checkEnvoyOf checks that a workload of service account sa in namespace
// runs Envoy as a node of entry n, with a client certificate naming id
// mounted where the bootstrap reads it.
func checkEnvoyOf(t *testing.T, c *cluster, n xds.Node, id, namespace, sa string, tls xdsTLS) {
	t.Helper()
	for _, w := range c.workloads() {
		envoy, ok := container(w, "envoy")
		if !ok || w.namespace != namespace || w.template.Spec.ServiceAccountName != sa {
			continue
		}
		if i := slices.Index(envoy.Args, "--service-cluster"); n.Cluster != "" && (i < 0 || i+1 >= len(envoy.Args) || envoy.Args[i+1] != n.Cluster) {
			t.Errorf("%s: Envoy's --service-cluster is not %s", w.name, n.Cluster)
		}
		v := mountOf(w, envoy, tls.clientCert.GetCertificateChain().GetFilename())
		if v == nil || v.Secret == nil {
			t.Errorf("%s: Envoy's client certificate is not a mounted Secret", w.name)
			return
		}
		spec := c.certificateFor(namespace, v.Secret.SecretName)
		if uris, _ := spec["uris"].([]any); !slices.Contains(uris, any(id)) {
			t.Errorf("%s: the Certificate of Secret %s does not name %s", w.name, v.Secret.SecretName, id)
		}
		if usages, _ := spec["usages"].([]any); !slices.Contains(usages, any("client auth")) {
			t.Errorf("%s: the Certificate of Secret %s is not for client auth", w.name, v.Secret.SecretName)
		}
		if mountOf(w, envoy, tls.validation.GetTrustedCa().GetFilename()) == nil {
			t.Errorf("%s: the mesh CA is not mounted where Envoy reads it", w.name)
		}
		if mountOf(w, envoy, "/etc/envoy/bootstrap.yaml") == nil {
			t.Errorf("%s: the bootstrap and SDS files are not mounted at /etc/envoy", w.name)
		}
		return
	}
	t.Errorf("no workload in %s runs Envoy as service account %s, the identity %s", namespace, sa, id)
}
