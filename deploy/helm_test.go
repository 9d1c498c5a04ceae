package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshauth/meshauth/xds"
)

const (
	chartDir = "helm/meshauth"
	// releaseNamespace is the namespace the tests install the chart in,
	// the one the kustomize manifests use.
	releaseNamespace = "meshauth"
)

// chartVariants are the values the chart is rendered with, by name: its
// defaults, and the other side of each of its switches.
var chartVariants = map[string]map[string]any{
	"chart defaults": nil,
	"chart with xds and external NATS": {
		"nats": map[string]any{"enabled": false, "url": "nats://nats.messaging.svc.cluster.local:4222"},
		"xds": map[string]any{"enabled": true, "config": map[string]any{"nodes": []any{map[string]any{
			"cluster": "orders", "service": "orders", "listen": "0.0.0.0:8080", "upstream": "127.0.0.1:9000",
			"ext_authz": "127.0.0.1:9001", "identities": []any{"spiffe://cluster.local/ns/shop/sa/orders"},
		}}}},
		"issuer": map[string]any{"url": "https://auth.example.com", "autoscaling": map[string]any{"enabled": false}, "replicas": 3},
	},
	"chart with its own TLS secrets": {
		"issuer":        map[string]any{"tls": map[string]any{"certManager": map[string]any{"enabled": false}, "secretName": "issuer-tls"}},
		"xds":           map[string]any{"enabled": true, "tls": map[string]any{"certManager": map[string]any{"enabled": false}, "secretName": "xds-tls"}},
		"networkPolicy": map[string]any{"enabled": false},
	},
}

// chartGivenSecrets are the Secrets a variant's values name as the
// user's own.
var chartGivenSecrets = map[string][]string{"chart with its own TLS secrets": {"issuer-tls", "xds-tls"}}

// renderChart renders the chart as `helm install meshauth --namespace
// meshauth` would with values, and returns its manifests.
func renderChart(t *testing.T, values map[string]any) []document {
	t.Helper()
	out, err := renderChartFiles(values)
	if err != nil {
		t.Fatalf("render %s: %v", chartDir, err)
	}
	var docs []document
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range out {
			if !yield(k) {
				return
			}
		}
	}) {
		if strings.HasSuffix(name, ".yaml") {
			docs = append(docs, splitDocuments(name, []byte(out[name]))...)
		}
	}
	return docs
}

// renderChartFiles renders every template of the chart with values.
func renderChartFiles(values map[string]any) (map[string]string, error) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		return nil, err
	}
	vals, err := chartutil.ToRenderValuesWithSchemaValidation(ch, values,
		common.ReleaseOptions{Name: "meshauth", Namespace: releaseNamespace, Revision: 1, IsInstall: true}, nil, false)
	if err != nil {
		return nil, err
	}
	return engine.Render(ch, vals)
}

// TestHelmChart: the chart passes helm lint, and values that cannot work
// are refused with a message naming them.
func TestHelmChart(t *testing.T) {
	for _, msg := range lint.RunAll(chartDir, nil, releaseNamespace).Messages {
		if msg.Severity > 1 { // support.InfoSev
			t.Errorf("helm lint: %s", msg)
		}
	}
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"NATS in the release and external", map[string]any{"nats": map[string]any{"url": "nats://elsewhere:4222"}}, "not both"},
		{"no certificate", map[string]any{"issuer": map[string]any{"tls": map[string]any{"certManager": map[string]any{"enabled": false}}}}, "issuer.tls.secretName"},
	} {
		if _, err := renderChartFiles(tc.values); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
	notes, err := renderChartFiles(nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := notes["meshauth/templates/NOTES.txt"]; !strings.Contains(n, "--trust=https://meshauth-issuer.meshauth.svc.cluster.local:8443") ||
		!strings.Contains(n, "--nats=nats://meshauth-nats.meshauth.svc.cluster.local:4222") {
		t.Errorf("NOTES.txt does not name the release's issuer and NATS:\n%s", n)
	}
}

// TestHelmXDSConfig: the xds config the chart renders is one meshauth xds
// accepts, with the nodes of the values and the release's issuer by
// default.
func TestHelmXDSConfig(t *testing.T) {
	c := clusterNamed(t, "chart with xds and external NATS")
	cm := c.configMaps[releaseNamespace+"/meshauth-xds"]
	if cm == nil {
		t.Fatal("no ConfigMap meshauth-xds")
	}
	help := meshauthHelp(t, "xds")
	cfg, err := xds.ParseConfig([]byte(cm.Data["xds.yaml"]), func(key string) bool { return hasFlag(help, key) })
	if err != nil {
		t.Fatalf("meshauth xds refuses the chart's config: %v\n%s", err, cm.Data["xds.yaml"])
	}
	if len(cfg.Nodes) != 1 || cfg.Nodes[0].Cluster != "orders" || len(cfg.Issuers) != 1 || cfg.Issuers[0].Issuer != "https://auth.example.com" {
		t.Errorf("nodes %+v, issuers %+v", cfg.Nodes, cfg.Issuers)
	}
}

// TestHelmSidecarSnippet: the sidecar the chart's README tells services
// to add is a valid pod template part, whose flags meshauth sidecar has,
// with probes on its ports, scraped on its admin port, and on the release
// the tests render.
func TestHelmSidecarSnippet(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(data), "## Sidecar injection")
	m := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindStringSubmatch(section)
	if m == nil {
		t.Fatal("no yaml block under Sidecar injection")
	}
	var tpl corev1.PodTemplateSpec
	strict(t, "the sidecar snippet", []byte(m[1]), &tpl)
	c := &cluster{name: "sidecar snippet", releaseNamespace: "shop", namespaces: map[string]bool{"shop": true},
		serviceAccounts: map[string]bool{"shop/payments": true}, configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		other: map[string][]map[string]any{}}
	if tpl.Labels == nil {
		tpl.Labels = map[string]string{}
	}
	tpl.Labels["app.kubernetes.io/name"] = "payments"
	tpl.Spec.ServiceAccountName = "payments"
	noToken := false
	tpl.Spec.AutomountServiceAccountToken = &noToken
	c.deployments = append(c.deployments, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "payments", Namespace: "shop"},
		Spec:       appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: tpl.Labels}, Template: tpl},
	})
	checkWorkloads(t, c)
	checkScrapeable(t, c)
	args := tpl.Spec.Containers[0].Args
	for flag, want := range map[string]string{
		"trust": "https://meshauth-issuer.meshauth.svc.cluster.local:8443",
		"nats":  "nats://meshauth-nats.meshauth.svc.cluster.local:4222",
	} {
		if got, _ := flagValue(args, flag); got != want {
			t.Errorf("--%s %q, the chart's release has %q", flag, got, want)
		}
	}
	// It authenticates to the release's NATS as a verifier, whose
	// NetworkPolicy admits it from a namespace labelled as the README says.
	if clients := c.natsClients(t, prerequisites(t)); len(clients) != 1 || clients[0].role != "verifier" {
		t.Errorf("the sidecar is not a NATS verifier: %+v", clients)
	}
	release := clusterNamed(t, "chart defaults")
	release.namespaceLabels["shop"] = map[string]string{"meshauth.io/mesh": "enabled"}
	policy := release.natsPolicy(release.natsServer())
	if policy == nil {
		t.Fatal("the release has no NATS NetworkPolicy")
	}
	admitted := false
	for _, rule := range policy.Spec.Ingress {
		for _, peer := range rule.From {
			admitted = admitted || slices.ContainsFunc(rule.Ports, func(port networkingv1.NetworkPolicyPort) bool { return port.Port.IntValue() == 4222 }) &&
				release.admits(t, policy.Namespace, peer, c.workloads()[0])
		}
	}
	if !admitted {
		t.Error("the release's NATS NetworkPolicy does not admit the sidecar from a namespace labelled meshauth.io/mesh: enabled")
	}
}

// TestBinaryLinksNoDeployTools: the Helm and kustomize libraries these
// tests use stay out of the meshauth binary.
func TestBinaryLinksNoDeployTools(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../cmd/meshauth").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for dep := range strings.Lines(string(out)) {
		if strings.HasPrefix(dep, "helm.sh/") || strings.HasPrefix(dep, "sigs.k8s.io/kustomize/") {
			t.Errorf("meshauth links %s", strings.TrimSpace(dep))
		}
	}
}

// TestDockerignore: the build context leaves out what holds secrets or
// local state: `meshauth dev`'s directory (KEK, admin token), compose's
// .env and throw-away CA, git, built binaries.
func TestDockerignore(t *testing.T) {
	data, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for line := range strings.Lines(string(data)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	for _, want := range []string{".meshauth", "**/.meshauth", ".git", "bin", "deploy/compose/.env", "deploy/compose/certs"} {
		if !slices.Contains(patterns, want) {
			t.Errorf(".dockerignore does not leave out %s", want)
		}
	}
	for _, p := range patterns {
		if strings.HasPrefix(p, "!") {
			t.Errorf(".dockerignore takes back %s", p)
		}
	}
}
