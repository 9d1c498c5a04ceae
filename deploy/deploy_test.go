// Package deploy holds meshauth's deployment files; this test checks them:
// Kubernetes manifests decoded strictly into the API types with the fields
// that matter checked and cross-checked (selectors, ports, secrets, config
// maps), the Envoy bootstraps decoded into Envoy's own protos and
// validated, the compose file, the systemd units, and every meshauth flag
// and MESHAUTH_* variable they use against `meshauth <command> --help`.
package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// documents splits a multi-document YAML file at its "---" lines.
func documents(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(data), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// meshauthHelp returns the --help output of a meshauth command, from a
// binary built once for the whole test.
var (
	buildOnce sync.Once
	binary    string
	buildErr  error
	helpMu    sync.Mutex
	helpCache = map[string]string{}
)

func meshauthHelp(t *testing.T, command string) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "meshauth-deploy-test")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "meshauth")
		out, err := exec.Command("go", "build", "-o", binary, "../cmd/meshauth").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	helpMu.Lock()
	defer helpMu.Unlock()
	if h, ok := helpCache[command]; ok {
		return h
	}
	out, err := exec.Command(binary, command, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("meshauth %s --help: %v\n%s", command, err, out)
	}
	helpCache[command] = string(out)
	return string(out)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binary != "" {
		os.RemoveAll(filepath.Dir(binary))
	}
	os.Exit(code)
}

var flagArg = regexp.MustCompile(`^--([a-z0-9-]+)`)

// checkCommandLine checks that args (a meshauth command and its flags) use
// only flags the command documents, and that env names only variables it
// documents.
func checkCommandLine(t *testing.T, where string, args []string, env []string) {
	t.Helper()
	if len(args) == 0 {
		t.Errorf("%s: no meshauth command", where)
		return
	}
	help := meshauthHelp(t, args[0])
	for _, a := range args[1:] {
		m := flagArg.FindStringSubmatch(a)
		if m == nil {
			continue // a flag's value given as the next argument
		}
		if !hasFlag(help, m[1]) {
			t.Errorf("%s: meshauth %s has no flag --%s", where, args[0], m[1])
		}
	}
	for _, name := range env {
		if strings.HasPrefix(name, "MESHAUTH_") && !strings.Contains(help, name) {
			t.Errorf("%s: meshauth %s does not read %s", where, args[0], name)
		}
	}
}

// hasFlag reports whether help, a command's --help output, lists --name:
// every flag is listed as "  --name type".
func hasFlag(help, name string) bool { return strings.Contains(help, "\n  --"+name+" ") }

// cluster is every object of deploy/kubernetes, by kind.
type cluster struct {
	namespaces      map[string]bool
	namespaceLabels map[string]map[string]string
	serviceAccounts map[string]bool // namespace/name
	secrets         map[string]*corev1.Secret
	configMaps      map[string]*corev1.ConfigMap
	services        []*corev1.Service
	deployments     []*appsv1.Deployment
	statefulSets    []*appsv1.StatefulSet
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	pdbs            []*policyv1.PodDisruptionBudget
	policies        []*networkingv1.NetworkPolicy
	other           map[string][]map[string]any // kind → documents of other APIs (cert-manager, kustomize)
}

// strict decodes doc into v, refusing unknown fields: a misspelt field is
// an error here, not a silently ignored setting in the cluster.
func strict(t *testing.T, where string, doc []byte, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
}

func loadCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{
		namespaces: map[string]bool{}, namespaceLabels: map[string]map[string]string{}, serviceAccounts: map[string]bool{},
		secrets: map[string]*corev1.Secret{}, configMaps: map[string]*corev1.ConfigMap{},
		other: map[string][]map[string]any{},
	}
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	for _, file := range files {
		for i, doc := range documents(t, file) {
			where := fmt.Sprintf("%s document %d", file, i+1)
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &head); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			switch head.APIVersion + " " + head.Kind {
			case "v1 Namespace":
				var o corev1.Namespace
				strict(t, where, doc, &o)
				c.namespaces[o.Name] = true
				c.namespaceLabels[o.Name] = o.Labels
			case "v1 ServiceAccount":
				var o corev1.ServiceAccount
				strict(t, where, doc, &o)
				c.serviceAccounts[o.Namespace+"/"+o.Name] = true
			case "v1 Secret":
				var o corev1.Secret
				strict(t, where, doc, &o)
				c.secrets[o.Namespace+"/"+o.Name] = &o
			case "v1 ConfigMap":
				var o corev1.ConfigMap
				strict(t, where, doc, &o)
				c.configMaps[o.Namespace+"/"+o.Name] = &o
			case "v1 Service":
				var o corev1.Service
				strict(t, where, doc, &o)
				c.services = append(c.services, &o)
			case "apps/v1 Deployment":
				var o appsv1.Deployment
				strict(t, where, doc, &o)
				c.deployments = append(c.deployments, &o)
			case "apps/v1 StatefulSet":
				var o appsv1.StatefulSet
				strict(t, where, doc, &o)
				c.statefulSets = append(c.statefulSets, &o)
			case "autoscaling/v2 HorizontalPodAutoscaler":
				var o autoscalingv2.HorizontalPodAutoscaler
				strict(t, where, doc, &o)
				c.hpas = append(c.hpas, &o)
			case "policy/v1 PodDisruptionBudget":
				var o policyv1.PodDisruptionBudget
				strict(t, where, doc, &o)
				c.pdbs = append(c.pdbs, &o)
			case "networking.k8s.io/v1 NetworkPolicy":
				var o networkingv1.NetworkPolicy
				strict(t, where, doc, &o)
				c.policies = append(c.policies, &o)
			case "cert-manager.io/v1 Certificate", "kustomize.config.k8s.io/v1beta1 Kustomization":
				var o map[string]any
				strict(t, where, doc, &o)
				c.other[head.Kind] = append(c.other[head.Kind], o)
			default:
				t.Fatalf("%s: unexpected %s %s", where, head.APIVersion, head.Kind)
			}
		}
	}
	return c
}

// workload is a Deployment or StatefulSet, seen through what both have.
type workload struct {
	kind, namespace, name string
	replicas              int32
	selector              map[string]string
	template              *corev1.PodTemplateSpec
}

func (c *cluster) workloads() []workload {
	var out []workload
	for _, d := range c.deployments {
		out = append(out, workload{"Deployment", d.Namespace, d.Name, *d.Spec.Replicas, d.Spec.Selector.MatchLabels, &d.Spec.Template})
	}
	for _, s := range c.statefulSets {
		out = append(out, workload{"StatefulSet", s.Namespace, s.Name, *s.Spec.Replicas, s.Spec.Selector.MatchLabels, &s.Spec.Template})
	}
	return out
}

// selects reports whether selector matches labels (matchLabels semantics).
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// selected returns the workloads in namespace whose pods selector matches.
func (c *cluster) selected(namespace string, selector map[string]string) []workload {
	var out []workload
	for _, w := range c.workloads() {
		if w.namespace == namespace && selects(selector, w.template.Labels) {
			out = append(out, w)
		}
	}
	return out
}

// certified reports whether a cert-manager Certificate in namespace writes
// the secret name.
func (c *cluster) certified(namespace, name string) bool {
	for _, cert := range c.other["Certificate"] {
		meta, _ := cert["metadata"].(map[string]any)
		spec, _ := cert["spec"].(map[string]any)
		if meta["namespace"] == namespace && spec["secretName"] == name {
			return true
		}
	}
	return false
}

// ownContainers are the containers meshauth's manifests run (the "app"
// containers stand for the user's own service).
var ownContainers = []string{"issuer", "meshauth", "xds", "nats", "envoy"}

func TestKubernetesWorkloads(t *testing.T) {
	c := loadCluster(t)
	if len(c.workloads()) == 0 {
		t.Fatal("no workloads")
	}
	for _, w := range c.workloads() {
		where := w.kind + " " + w.namespace + "/" + w.name
		if !c.namespaces[w.namespace] {
			t.Errorf("%s: namespace %s is not in the manifests", where, w.namespace)
		}
		if !selects(w.selector, w.template.Labels) {
			t.Errorf("%s: selector %v does not match its pod labels %v", where, w.selector, w.template.Labels)
		}
		pod := w.template.Spec
		if !c.serviceAccounts[w.namespace+"/"+pod.ServiceAccountName] {
			t.Errorf("%s: service account %q is not in the manifests", where, pod.ServiceAccountName)
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Errorf("%s: mounts an API token it does not need", where)
		}
		podNonRoot := pod.SecurityContext != nil && pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot
		volumes := map[string]corev1.Volume{}
		for _, v := range pod.Volumes {
			volumes[v.Name] = v
			if v.ConfigMap != nil && c.configMaps[w.namespace+"/"+v.ConfigMap.Name] == nil {
				t.Errorf("%s: volume %s: config map %s is not in the manifests", where, v.Name, v.ConfigMap.Name)
			}
			if v.Secret != nil && c.secrets[w.namespace+"/"+v.Secret.SecretName] == nil && !c.certified(w.namespace, v.Secret.SecretName) {
				t.Errorf("%s: volume %s: secret %s is not in the manifests", where, v.Name, v.Secret.SecretName)
			}
		}
		for _, ct := range pod.Containers {
			where := where + " container " + ct.Name
			if ct.Image == "" {
				t.Errorf("%s: no image", where)
			}
			sc := ct.SecurityContext
			switch {
			case sc == nil:
				t.Errorf("%s: no securityContext", where)
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem,
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation,
				sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
				t.Errorf("%s: want readOnlyRootFilesystem, no privilege escalation, capabilities drop ALL", where)
			case !podNonRoot && (sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot):
				t.Errorf("%s: may run as root", where)
			}
			if ct.Resources.Requests.Cpu().IsZero() || ct.Resources.Requests.Memory().IsZero() {
				t.Errorf("%s: no cpu and memory requests", where)
			}
			for _, m := range ct.VolumeMounts {
				if _, ok := volumes[m.Name]; !ok && !slices.ContainsFunc(w.statefulSetClaims(c), func(s string) bool { return s == m.Name }) {
					t.Errorf("%s: mounts unknown volume %s", where, m.Name)
				}
			}
			var envNames []string
			for _, e := range ct.Env {
				envNames = append(envNames, e.Name)
				if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
					s := c.secrets[w.namespace+"/"+ref.SecretKeyRef.Name]
					if s == nil {
						t.Errorf("%s: env %s: secret %s is not in the manifests", where, e.Name, ref.SecretKeyRef.Name)
					} else if _, ok := s.StringData[ref.SecretKeyRef.Key]; !ok {
						t.Errorf("%s: env %s: secret %s has no key %s", where, e.Name, ref.SecretKeyRef.Name, ref.SecretKeyRef.Key)
					}
				}
			}
			if !slices.Contains(ownContainers, ct.Name) {
				continue
			}
			if ct.ReadinessProbe == nil || ct.LivenessProbe == nil {
				t.Errorf("%s: want readiness and liveness probes", where)
				continue
			}
			for _, p := range []*corev1.Probe{ct.ReadinessProbe, ct.LivenessProbe, ct.StartupProbe} {
				if p == nil {
					continue
				}
				port := ""
				switch {
				case p.HTTPGet != nil:
					port = p.HTTPGet.Port.String()
				case p.TCPSocket != nil:
					port = p.TCPSocket.Port.String()
				}
				if !slices.ContainsFunc(ct.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == port }) {
					t.Errorf("%s: a probe uses port %q, which the container does not declare", where, port)
				}
			}
			if strings.HasPrefix(ct.Image, "meshauth:") {
				checkCommandLine(t, where, ct.Args, envNames)
				if ct.ReadinessProbe.HTTPGet == nil || ct.ReadinessProbe.HTTPGet.Path != "/readyz" || ct.LivenessProbe.HTTPGet == nil || ct.LivenessProbe.HTTPGet.Path != "/healthz" {
					t.Errorf("%s: want readiness on /readyz and liveness on /healthz", where)
				}
			}
		}
	}
}

// statefulSetClaims returns the names of w's volume claim templates.
func (w workload) statefulSetClaims(c *cluster) []string {
	var names []string
	for _, s := range c.statefulSets {
		if w.kind == "StatefulSet" && s.Namespace == w.namespace && s.Name == w.name {
			for _, p := range s.Spec.VolumeClaimTemplates {
				names = append(names, p.Name)
			}
		}
	}
	return names
}

func TestKubernetesServices(t *testing.T) {
	c := loadCluster(t)
	for _, s := range c.services {
		where := "Service " + s.Namespace + "/" + s.Name
		selected := c.selected(s.Namespace, s.Spec.Selector)
		if len(selected) == 0 {
			t.Errorf("%s: selector %v matches no pods", where, s.Spec.Selector)
			continue
		}
		for _, p := range s.Spec.Ports {
			target := p.TargetPort.String()
			found := false
			for _, ct := range selected[0].template.Spec.Containers {
				for _, cp := range ct.Ports {
					found = found || cp.Name == target || fmt.Sprint(cp.ContainerPort) == target
				}
			}
			if !found {
				t.Errorf("%s: port %s targets %q, which no container of %s declares", where, p.Name, target, selected[0].name)
			}
		}
	}
}

func TestKubernetesIssuerScaling(t *testing.T) {
	c := loadCluster(t)
	var issuer *appsv1.Deployment
	for _, d := range c.deployments {
		if d.Name == "issuer" {
			issuer = d
		}
	}
	if issuer == nil {
		t.Fatal("no issuer Deployment")
	}
	var hpa *autoscalingv2.HorizontalPodAutoscaler
	for _, h := range c.hpas {
		if h.Spec.ScaleTargetRef.Kind == "Deployment" && h.Spec.ScaleTargetRef.Name == issuer.Name && h.Namespace == issuer.Namespace {
			hpa = h
		}
	}
	if hpa == nil {
		t.Fatal("no HorizontalPodAutoscaler for the issuer")
	}
	minReplicas := int32(1) // the API's default
	if hpa.Spec.MinReplicas != nil {
		minReplicas = *hpa.Spec.MinReplicas
	}
	if minReplicas < 2 || hpa.Spec.MaxReplicas < minReplicas {
		t.Errorf("HPA replicas %d..%d: want at least 2", minReplicas, hpa.Spec.MaxReplicas)
	}
	cpu := false
	for _, m := range hpa.Spec.Metrics {
		cpu = cpu || m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource.Name == corev1.ResourceCPU && m.Resource.Target.AverageUtilization != nil
	}
	if !cpu {
		t.Error("HPA has no CPU utilization target")
	}
	var pdb *policyv1.PodDisruptionBudget
	for _, p := range c.pdbs {
		if p.Namespace == issuer.Namespace && selects(p.Spec.Selector.MatchLabels, issuer.Spec.Template.Labels) {
			pdb = p
		}
	}
	if pdb == nil {
		t.Fatal("no PodDisruptionBudget selects the issuer's pods")
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 1 {
		t.Errorf("issuer PDB minAvailable %v: want at least 1", pdb.Spec.MinAvailable)
	}
	for _, ct := range issuer.Spec.Template.Spec.Containers {
		for _, e := range ct.Env {
			if e.Name == "MESHAUTH_STORE" && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
				t.Error("the PostgreSQL URL does not come from a Secret")
			}
		}
	}
	// The issuer serves https with the certificate cert-manager writes.
	tlsSecret := ""
	for _, v := range issuer.Spec.Template.Spec.Volumes {
		if v.Name == "tls" && v.Secret != nil {
			tlsSecret = v.Secret.SecretName
		}
	}
	var certified bool
	for _, cert := range c.other["Certificate"] {
		spec, _ := cert["spec"].(map[string]any)
		dnsNames, _ := spec["dnsNames"].([]any)
		certified = certified || spec["secretName"] == tlsSecret && slices.Contains(dnsNames, any("issuer.meshauth.svc.cluster.local"))
	}
	if tlsSecret == "" || !certified || !c.certified(issuer.Namespace, tlsSecret) {
		t.Errorf("no Certificate for issuer.meshauth.svc.cluster.local written to the issuer's TLS secret %q", tlsSecret)
	}
}

func TestKubernetesNATS(t *testing.T) {
	c := loadCluster(t)
	var nats *appsv1.StatefulSet
	for _, s := range c.statefulSets {
		if s.Name == "nats" {
			nats = s
		}
	}
	if nats == nil {
		t.Fatal("no NATS StatefulSet")
	}
	if *nats.Spec.Replicas != 3 {
		t.Errorf("NATS replicas %d, want 3", *nats.Spec.Replicas)
	}
	var headless *corev1.Service
	for _, s := range c.services {
		if s.Namespace == nats.Namespace && s.Name == nats.Spec.ServiceName {
			headless = s
		}
	}
	if headless == nil || headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
		t.Fatalf("service %s: want a headless Service publishing not-ready addresses", nats.Spec.ServiceName)
	}
	if len(nats.Spec.VolumeClaimTemplates) == 0 {
		t.Error("JetStream has no persistent volume")
	}
	var conf string
	for _, v := range nats.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil {
			conf = c.configMaps[nats.Namespace+"/"+v.ConfigMap.Name].Data["nats.conf"]
		}
	}
	if !regexp.MustCompile(`(?m)^\s*jetstream\s*\{`).MatchString(conf) {
		t.Error("nats.conf does not enable JetStream")
	}
	for i := range 3 {
		route := fmt.Sprintf("nats://%s-%d.%s.%s.svc.cluster.local:6222", nats.Name, i, headless.Name, nats.Namespace)
		if !strings.Contains(conf, route) {
			t.Errorf("nats.conf has no cluster route %s", route)
		}
	}
}

// TestKubernetesNetworkPolicies: each application's policy selects its
// pods and opens only the port of its sidecar (or Envoy), never the app's.
func TestKubernetesNetworkPolicies(t *testing.T) {
	c := loadCluster(t)
	apps := map[string]bool{}
	for _, p := range c.policies {
		where := "NetworkPolicy " + p.Namespace + "/" + p.Name
		selected := c.selected(p.Namespace, p.Spec.PodSelector.MatchLabels)
		if len(selected) != 1 {
			t.Errorf("%s: selects %d workloads, want 1", where, len(selected))
			continue
		}
		w := selected[0]
		if w.name == "nats" {
			continue // TestKubernetesNATSNetworkPolicy
		}
		apps[w.name] = true
		var appPorts, guardPorts []int32
		for _, ct := range w.template.Spec.Containers {
			for _, cp := range ct.Ports {
				if ct.Name == "app" {
					appPorts = append(appPorts, cp.ContainerPort)
				} else if cp.Name == "proxy" || cp.Name == "http" {
					guardPorts = append(guardPorts, cp.ContainerPort)
				}
			}
		}
		if !slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			t.Errorf("%s: does not restrict ingress", where)
		}
		for _, rule := range p.Spec.Ingress {
			for _, port := range rule.Ports {
				n := int32(port.Port.IntValue())
				if slices.Contains(appPorts, n) || !slices.Contains(guardPorts, n) {
					t.Errorf("%s: opens port %d; only the sidecar's %v may be open (app %v)", where, n, guardPorts, appPorts)
				}
			}
			if len(rule.Ports) == 0 {
				t.Errorf("%s: an ingress rule without ports opens every port", where)
			}
		}
	}
	for _, name := range []string{"payments", "orders"} {
		if !apps[name] {
			t.Errorf("no NetworkPolicy for %s", name)
		}
	}
}

// TestKubernetesEmbeddedConfigs: the config maps carry exactly the files
// of deploy/envoy and deploy/xds, which the other tests check.
func TestKubernetesEmbeddedConfigs(t *testing.T) {
	c := loadCluster(t)
	for _, tc := range []struct{ configMap, key, file string }{
		{"shop/orders-envoy", "bootstrap.yaml", "envoy/bootstrap-xds.yaml"},
		{"shop/orders-envoy", "xds-client.yaml", "envoy/sds/xds-client.yaml"},
		{"shop/orders-envoy", "mesh-ca.yaml", "envoy/sds/mesh-ca.yaml"},
		{"meshauth/meshauth-xds", "xds.yaml", "xds/meshauth-xds.yaml"},
	} {
		cm := c.configMaps[tc.configMap]
		if cm == nil {
			t.Errorf("no config map %s", tc.configMap)
			continue
		}
		want, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		if cm.Data[tc.key] != string(want) {
			t.Errorf("config map %s key %s differs from %s", tc.configMap, tc.key, tc.file)
		}
	}
	kust := c.other["Kustomization"]
	if len(kust) != 1 {
		t.Fatalf("%d kustomizations", len(kust))
	}
	files, _ := filepath.Glob("kubernetes/*.yaml")
	var want []string
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" {
			want = append(want, base)
		}
	}
	var got []string
	for _, r := range kust[0]["resources"].([]any) {
		got = append(got, r.(string))
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization resources %v, want every manifest %v", got, want)
	}
}

// composeFile is the part of the compose specification the file uses.
type composeFile struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
	Volumes  map[string]any            `json:"volumes"`
}

type composeService struct {
	Image       string                                `json:"image"`
	Build       *struct{ Context, Dockerfile string } `json:"build"`
	Entrypoint  []string                              `json:"entrypoint"`
	Command     []string                              `json:"command"`
	Environment map[string]string                     `json:"environment"`
	Ports       []string                              `json:"ports"`
	Volumes     []string                              `json:"volumes"`
	DependsOn   map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
	NetworkMode string         `json:"network_mode"`
	Healthcheck map[string]any `json:"healthcheck"`
}

func TestCompose(t *testing.T) {
	data, err := os.ReadFile("compose/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"postgres", "nats", "issuer", "payments", "payments-app"} {
		if _, ok := f.Services[name]; !ok {
			t.Errorf("no service %s", name)
		}
	}
	conditions := []string{"service_started", "service_healthy", "service_completed_successfully"}
	portSpec := regexp.MustCompile(`^127\.0\.0\.1:\d+:\d+$`)
	for name, s := range f.Services {
		if s.Image == "" && s.Build == nil {
			t.Errorf("service %s: no image", name)
		}
		for dep, d := range s.DependsOn {
			if _, ok := f.Services[dep]; !ok || !slices.Contains(conditions, d.Condition) {
				t.Errorf("service %s: depends on %s with condition %q", name, dep, d.Condition)
			}
			if d.Condition == "service_healthy" && f.Services[dep].Healthcheck == nil {
				t.Errorf("service %s waits for %s to be healthy, which has no healthcheck", name, dep)
			}
		}
		for _, p := range s.Ports {
			if !portSpec.MatchString(p) {
				t.Errorf("service %s: port %q: publish on 127.0.0.1 only", name, p)
			}
		}
		if s.Image == "meshauth:dev" {
			var env []string
			for k := range s.Environment {
				env = append(env, k)
			}
			checkCommandLine(t, "compose service "+name, s.Command, env)
		}
	}
	if app := f.Services["payments-app"]; app.NetworkMode != "service:payments" || len(app.Ports) != 0 {
		t.Errorf("payments-app: network_mode %q, ports %v: want it reachable through its sidecar only", app.NetworkMode, app.Ports)
	}
	if f.Services["issuer"].Environment["MESHAUTH_STORE"] == "" || !strings.HasPrefix(f.Services["issuer"].Environment["MESHAUTH_STORE"], "postgres://") {
		t.Error("issuer does not use PostgreSQL")
	}
}

// unit is a systemd unit file: section → key → values (keys may repeat).
type unit map[string]map[string][]string

// parseUnit reads the INI syntax of systemd.syntax(7): sections, key=value
// lines, comments, and lines continued by a trailing backslash.
func parseUnit(t *testing.T, path string) (unit, []string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	var comments []string
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		for strings.HasSuffix(line, `\`) && sc.Scan() {
			n++
			line = strings.TrimSuffix(line, `\`) + " " + strings.TrimSpace(sc.Text())
		}
		switch {
		case line == "":
		case line[0] == '#' || line[0] == ';':
			comments = append(comments, line)
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			key, value, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n, line)
			}
			key = strings.TrimSpace(key)
			u[section][key] = append(u[section][key], strings.TrimSpace(value))
		}
	}
	return u, comments
}

func TestSystemdUnits(t *testing.T) {
	for _, tc := range []struct{ file, command string }{
		{"systemd/meshauth-issuer.service", "issuer"},
		{"systemd/meshauth-sidecar@.service", "sidecar"},
	} {
		t.Run(tc.command, func(t *testing.T) {
			u, comments := parseUnit(t, tc.file)
			for _, section := range []string{"Unit", "Service", "Install"} {
				if u[section] == nil {
					t.Fatalf("no [%s] section", section)
				}
			}
			svc := u["Service"]
			for key, want := range map[string]string{
				"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
				"CapabilityBoundingSet": "", "RestrictSUIDSGID": "yes",
			} {
				if got := svc[key]; len(got) != 1 || got[0] != want {
					t.Errorf("%s=%v, want %q", key, got, want)
				}
			}
			if !slices.Equal(svc["DynamicUser"], []string{"yes"}) && len(svc["User"]) == 0 {
				t.Error("runs as root: want DynamicUser=yes or a User")
			}
			if len(svc["EnvironmentFile"]) == 0 {
				t.Error("no EnvironmentFile for secrets")
			}
			exec := strings.Fields(strings.Join(svc["ExecStart"], " "))
			if len(exec) < 2 || exec[0] != "/usr/local/bin/meshauth" || exec[1] != tc.command {
				t.Fatalf("ExecStart %v: want /usr/local/bin/meshauth %s …", exec, tc.command)
			}
			// The environment files the comments document.
			var env []string
			for _, c := range comments {
				if m := regexp.MustCompile(`^#\s+(MESHAUTH_[A-Z_]+)=`).FindStringSubmatch(c); m != nil {
					env = append(env, m[1])
				}
			}
			if len(env) == 0 {
				t.Error("the environment file is not documented")
			}
			checkCommandLine(t, tc.file, exec[1:], env)
		})
	}
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var froms []string
	user := ""
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "FROM" {
			froms = append(froms, f[1])
		}
		if len(f) >= 2 && f[0] == "USER" {
			user = f[1]
		}
	}
	if len(froms) < 2 || !strings.HasPrefix(froms[len(froms)-1], "gcr.io/distroless/static") {
		t.Errorf("stages %v: want a build stage and a distroless static image", froms)
	}
	if user == "" || strings.HasPrefix(user, "0") || strings.HasPrefix(user, "root") {
		t.Errorf("USER %q: want a non-root user", user)
	}
	if !strings.Contains(string(data), "CGO_ENABLED=0") {
		t.Error("the binary is not built static (CGO_ENABLED=0)")
	}
}
