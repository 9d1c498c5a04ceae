package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
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
	tpl.Labels = map[string]string{"app.kubernetes.io/name": "payments"}
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
}

// created is what prerequisites.sh makes: kind ("secret", "configmap") →
// name → keys.
type created map[string]map[string][]string

// has reports whether the script makes the object (and key, unless "").
func (c created) has(kind, name, key string) bool {
	keys, ok := c[kind][name]
	return ok && (key == "" || slices.Contains(keys, key))
}

var (
	prerequisitesOnce sync.Once
	prerequisitesMade created
	prerequisitesErr  error
)

// prerequisites runs deploy/kubernetes/prerequisites.sh with a kubectl
// that records what it is asked to create, and returns that.
func prerequisites(t *testing.T) created {
	t.Helper()
	prerequisitesOnce.Do(func() {
		prerequisitesMade, prerequisitesErr = runPrerequisites(t.TempDir(), map[string]string{
			"MESHAUTH_STORE": "postgres://meshauth:s3cret-pw@db:5432/meshauth", "MESHAUTH_CA_FILE": "envoy/sds/mesh-ca.yaml",
			"MESHAUTH_CA_NAMESPACES": "meshauth shop",
		}, nil)
	})
	if prerequisitesErr != nil {
		t.Fatal(prerequisitesErr)
	}
	return prerequisitesMade
}

// fakeKubectl logs each call's arguments, one per line, then for every
// --from-file a line "file KEY=CONTENT"; `get` finds nothing.
const fakeKubectl = `#!/bin/sh
printf 'call %s\n' "$*" >> "$KUBECTL_LOG"
for a; do
	case $a in
	--from-file=*) kv=${a#--from-file=}; printf 'file %s=%s\n' "${kv%%=*}" "$(cat "${kv#*=}")" >> "$KUBECTL_LOG";;
	esac
done
case $1 in get) exit 1;; esac
case " $* " in *" -n "*" get "*) exit 1;; esac
[ "$1" = apply ] && cat > /dev/null
exit 0
`

// runPrerequisites runs the script with env and the fake kubectl in dir,
// and returns what it created; log, if not nil, receives the kubectl log.
func runPrerequisites(dir string, env map[string]string, log *string) (created, error) {
	if err := os.WriteFile(filepath.Join(dir, "kubectl"), []byte(fakeKubectl), 0o755); err != nil {
		return nil, err
	}
	logFile := filepath.Join(dir, "kubectl.log")
	cmd := exec.Command("sh", "kubernetes/prerequisites.sh")
	cmd.Env = []string{"PATH=" + dir + ":" + os.Getenv("PATH"), "KUBECTL_LOG=" + logFile, "HOME=" + dir}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, &scriptError{err, string(out)}
	}
	data, err := os.ReadFile(logFile)
	if err != nil {
		return nil, err
	}
	if log != nil {
		*log = string(data)
	}
	made := created{"secret": {}, "configmap": {}}
	var current map[string][]string
	var name string
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSuffix(line, "\n")
		if args, ok := strings.CutPrefix(line, "call "); ok {
			current = nil
			f := strings.Fields(args)
			for i := range f {
				switch {
				case i+2 < len(f) && f[i] == "create" && f[i+1] == "secret":
					current, name = made["secret"], f[i+3]
				case i+1 < len(f) && f[i] == "create" && f[i+1] == "configmap":
					current, name = made["configmap"], f[i+2]
				}
			}
			if current != nil {
				current[name] = current[name][:0:0]
			}
		} else if kv, ok := strings.CutPrefix(line, "file "); ok && current != nil {
			key, _, _ := strings.Cut(kv, "=")
			current[name] = append(current[name], key)
		}
	}
	return made, nil
}

type scriptError struct {
	err    error
	output string
}

func (e *scriptError) Error() string { return "prerequisites.sh: " + e.err.Error() + "\n" + e.output }

// TestPrerequisites: the script makes the issuer's Secret from the
// environment, generating what is not given, and the CA ConfigMap in each
// namespace named; no value ever appears on a command line.
func TestPrerequisites(t *testing.T) {
	var log string
	const store, admin = "postgres://meshauth:s3cret-pw@db:5432/meshauth", "given-admin-token-0123456789"
	made, err := runPrerequisites(t.TempDir(), map[string]string{
		"MESHAUTH_STORE": store, "MESHAUTH_ADMIN_TOKEN": admin,
		"MESHAUTH_CA_FILE": "envoy/sds/mesh-ca.yaml", "MESHAUTH_CA_NAMESPACES": "meshauth shop",
	}, &log)
	if err != nil {
		t.Fatal(err)
	}
	if !made.has("secret", "meshauth-issuer", "store") || !made.has("secret", "meshauth-issuer", "admin-token") ||
		!made.has("secret", "meshauth-issuer", "key-encryption-key") || !made.has("configmap", "meshauth-ca", "ca.crt") {
		t.Errorf("made %v", made)
	}
	for _, want := range []string{"file store=" + store, "file admin-token=" + admin, "-n shop create configmap meshauth-ca", "-n meshauth create configmap meshauth-ca"} {
		if !strings.Contains(log, want) {
			t.Errorf("kubectl was not asked for %q:\n%s", want, log)
		}
	}
	kek := regexp.MustCompile(`(?m)^file key-encryption-key=([A-Za-z0-9+/=]{44})$`).FindStringSubmatch(log)
	if kek == nil {
		t.Fatalf("no generated 32-byte key-encryption key:\n%s", log)
	}
	for line := range strings.Lines(log) {
		if strings.HasPrefix(line, "call ") && (strings.Contains(line, "s3cret") || strings.Contains(line, admin) || strings.Contains(line, kek[1])) {
			t.Errorf("a secret on kubectl's command line: %s", line)
		}
	}
	if _, err := runPrerequisites(t.TempDir(), nil, nil); err == nil || !strings.Contains(err.Error(), "MESHAUTH_STORE") {
		t.Errorf("no MESHAUTH_STORE: %v", err)
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
