package deploy

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// document is one Kubernetes object as YAML, and where it comes from.
type document struct {
	where string
	data  []byte
}

// splitDocuments splits a multi-document YAML stream at its "---" lines,
// leaving out documents of comments alone.
func splitDocuments(where string, data []byte) []document {
	var docs []document
	for i, d := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(data), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, document{fmt.Sprintf("%s document %d", where, i+1), []byte(d)})
		}
	}
	return docs
}

// kustomize builds the kustomization in dir as `kubectl apply -k` does.
func kustomize(t *testing.T, dir string) []document {
	t.Helper()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	data, err := res.AsYaml()
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	return splitDocuments("kustomize "+dir, data)
}

// cluster is every object of one deployment (a kustomization, or the
// chart rendered with some values), by kind.
type cluster struct {
	name string
	// releaseNamespace exists without an object in the manifests: a Helm
	// release's namespace is created by `helm install`.
	releaseNamespace string
	namespaces       map[string]bool
	namespaceLabels  map[string]map[string]string
	serviceAccounts  map[string]bool // namespace/name
	secrets          map[string]*corev1.Secret
	configMaps       map[string]*corev1.ConfigMap
	services         []*corev1.Service
	deployments      []*appsv1.Deployment
	statefulSets     []*appsv1.StatefulSet
	hpas             []*autoscalingv2.HorizontalPodAutoscaler
	pdbs             []*policyv1.PodDisruptionBudget
	policies         []*networkingv1.NetworkPolicy
	other            map[string][]map[string]any // kind → documents of other APIs (cert-manager)
}

// strict decodes doc into v, refusing unknown fields: a misspelt field is
// an error here, not a silently ignored setting in the cluster.
func strict(t *testing.T, where string, doc []byte, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
}

func loadCluster(t *testing.T, name, releaseNamespace string, docs []document) *cluster {
	t.Helper()
	c := &cluster{
		name: name, releaseNamespace: releaseNamespace,
		namespaces: map[string]bool{}, namespaceLabels: map[string]map[string]string{}, serviceAccounts: map[string]bool{},
		secrets: map[string]*corev1.Secret{}, configMaps: map[string]*corev1.ConfigMap{},
		other: map[string][]map[string]any{},
	}
	if releaseNamespace != "" {
		c.namespaces[releaseNamespace] = true
	}
	for _, d := range docs {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(d.data, &head); err != nil {
			t.Fatalf("%s: %v", d.where, err)
		}
		switch head.APIVersion + " " + head.Kind {
		case "v1 Namespace":
			var o corev1.Namespace
			strict(t, d.where, d.data, &o)
			c.namespaces[o.Name] = true
			c.namespaceLabels[o.Name] = o.Labels
		case "v1 ServiceAccount":
			var o corev1.ServiceAccount
			strict(t, d.where, d.data, &o)
			c.serviceAccounts[o.Namespace+"/"+o.Name] = true
		case "v1 Secret":
			var o corev1.Secret
			strict(t, d.where, d.data, &o)
			c.secrets[o.Namespace+"/"+o.Name] = &o
		case "v1 ConfigMap":
			var o corev1.ConfigMap
			strict(t, d.where, d.data, &o)
			c.configMaps[o.Namespace+"/"+o.Name] = &o
		case "v1 Service":
			var o corev1.Service
			strict(t, d.where, d.data, &o)
			c.services = append(c.services, &o)
		case "apps/v1 Deployment":
			var o appsv1.Deployment
			strict(t, d.where, d.data, &o)
			c.deployments = append(c.deployments, &o)
		case "apps/v1 StatefulSet":
			var o appsv1.StatefulSet
			strict(t, d.where, d.data, &o)
			c.statefulSets = append(c.statefulSets, &o)
		case "autoscaling/v2 HorizontalPodAutoscaler":
			var o autoscalingv2.HorizontalPodAutoscaler
			strict(t, d.where, d.data, &o)
			c.hpas = append(c.hpas, &o)
		case "policy/v1 PodDisruptionBudget":
			var o policyv1.PodDisruptionBudget
			strict(t, d.where, d.data, &o)
			c.pdbs = append(c.pdbs, &o)
		case "networking.k8s.io/v1 NetworkPolicy":
			var o networkingv1.NetworkPolicy
			strict(t, d.where, d.data, &o)
			c.policies = append(c.policies, &o)
		case "cert-manager.io/v1 Certificate":
			var o map[string]any
			strict(t, d.where, d.data, &o)
			c.other[head.Kind] = append(c.other[head.Kind], o)
		default:
			t.Fatalf("%s: unexpected %s %s", d.where, head.APIVersion, head.Kind)
		}
	}
	return c
}

// The deployments the tests check: the kustomize base and examples, and
// the chart with its defaults and with the other branches of its values.
var (
	clustersOnce sync.Once
	clusterDocs  map[string][]document
)

// clusters returns every deployment, by name, decoded.
func clusters(t *testing.T) []*cluster {
	t.Helper()
	clustersOnce.Do(func() {
		clusterDocs = map[string][]document{
			"kustomize base":     kustomize(t, "kubernetes/base"),
			"kustomize examples": kustomize(t, "kubernetes/examples"),
		}
		for name, values := range chartVariants {
			clusterDocs[name] = renderChart(t, values)
		}
	})
	var out []*cluster
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range clusterDocs {
			if !yield(k) {
				return
			}
		}
	}) {
		ns := ""
		if strings.HasPrefix(name, "chart") {
			ns = releaseNamespace
		}
		out = append(out, loadCluster(t, name, ns, clusterDocs[name]))
	}
	return out
}

// clusterNamed returns the deployment called name.
func clusterNamed(t *testing.T, name string) *cluster {
	t.Helper()
	for _, c := range clusters(t) {
		if c.name == name {
			return c
		}
	}
	t.Fatalf("no deployment %q", name)
	return nil
}

// forEachCluster runs check on every deployment, each in a subtest.
func forEachCluster(t *testing.T, check func(t *testing.T, c *cluster)) {
	for _, c := range clusters(t) {
		t.Run(c.name, func(t *testing.T) { check(t, c) })
	}
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
		replicas := int32(1)
		if d.Spec.Replicas != nil {
			replicas = *d.Spec.Replicas
		}
		out = append(out, workload{"Deployment", d.Namespace, d.Name, replicas, d.Spec.Selector.MatchLabels, &d.Spec.Template})
	}
	for _, s := range c.statefulSets {
		out = append(out, workload{"StatefulSet", s.Namespace, s.Name, *s.Spec.Replicas, s.Spec.Selector.MatchLabels, &s.Spec.Template})
	}
	return out
}

// workloadWith returns the workload running a container named name.
func (c *cluster) workloadWith(t *testing.T, name string) workload {
	t.Helper()
	for _, w := range c.workloads() {
		if _, ok := container(w, name); ok {
			return w
		}
	}
	t.Fatalf("no workload runs a container %s", name)
	return workload{}
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

// certified reports whether a cert-manager Certificate in namespace
// writes the Secret name.
func (c *cluster) certified(namespace, name string) bool {
	return c.certificateFor(namespace, name) != nil
}

// ownContainers are the containers meshauth's manifests run (the "app"
// containers stand for the user's own service).
var ownContainers = []string{"issuer", "meshauth", "xds", "nats", "envoy"}

// isMeshauth reports whether ct runs the meshauth image.
func isMeshauth(ct corev1.Container) bool {
	return strings.HasPrefix(ct.Image, "meshauth:") || strings.Contains(ct.Image, "/meshauth:")
}

func TestKubernetesWorkloads(t *testing.T) {
	forEachCluster(t, checkWorkloads)
}

func checkWorkloads(t *testing.T, c *cluster) {
	if len(c.workloads()) == 0 {
		t.Fatal("no workloads")
	}
	created := prerequisites(t)
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
			switch {
			case v.ConfigMap != nil && c.configMaps[w.namespace+"/"+v.ConfigMap.Name] == nil && !created.has("configmap", w.namespace, v.ConfigMap.Name, ""):
				t.Errorf("%s: volume %s: config map %s is neither in the manifests nor made by prerequisites.sh", where, v.Name, v.ConfigMap.Name)
			case v.Secret != nil && c.secrets[w.namespace+"/"+v.Secret.SecretName] == nil && !c.certified(w.namespace, v.Secret.SecretName) &&
				!created.has("secret", w.namespace, v.Secret.SecretName, "") && !slices.Contains(chartGivenSecrets[c.name], v.Secret.SecretName):
				t.Errorf("%s: volume %s: secret %s is neither in the manifests, nor a Certificate's, nor made by prerequisites.sh", where, v.Name, v.Secret.SecretName)
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
				if _, ok := volumes[m.Name]; !ok && !slices.Contains(w.statefulSetClaims(c), m.Name) {
					t.Errorf("%s: mounts unknown volume %s", where, m.Name)
				}
			}
			var envNames []string
			for _, e := range ct.Env {
				envNames = append(envNames, e.Name)
				ref := e.ValueFrom
				if ref == nil || ref.SecretKeyRef == nil {
					continue
				}
				if s := c.secrets[w.namespace+"/"+ref.SecretKeyRef.Name]; s != nil {
					if _, ok := s.StringData[ref.SecretKeyRef.Key]; !ok {
						t.Errorf("%s: env %s: secret %s has no key %s", where, e.Name, ref.SecretKeyRef.Name, ref.SecretKeyRef.Key)
					}
				} else if !created.has("secret", w.namespace, ref.SecretKeyRef.Name, ref.SecretKeyRef.Key) {
					t.Errorf("%s: env %s: secret %s with key %s is neither in the manifests nor made by prerequisites.sh", where, e.Name, ref.SecretKeyRef.Name, ref.SecretKeyRef.Key)
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
			if isMeshauth(ct) {
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

// TestKubernetesNothingToReplace: what applies as it is contains no
// Secret (the user's, or cert-manager's) and no placeholder, and the base
// and the chart run no example application.
func TestKubernetesNothingToReplace(t *testing.T) {
	placeholder := regexp.MustCompile(`(?i)change-?me|placeholder|replace[ -]?me|PEM of|example\.internal|xxxx`)
	forEachCluster(t, func(t *testing.T, c *cluster) {
		for name := range c.secrets {
			t.Errorf("Secret %s is applied: secrets are the user's to create (prerequisites.sh)", name)
		}
		for name, cm := range c.configMaps {
			for key, v := range cm.Data {
				if v = stripComments(v); strings.TrimSpace(v) == "" || placeholder.MatchString(v) {
					t.Errorf("ConfigMap %s key %s holds a placeholder:\n%s", name, key, v)
				}
			}
		}
		for _, w := range c.workloads() {
			for _, ct := range w.template.Spec.Containers {
				for _, v := range append(slices.Clone(ct.Args), ct.Image) {
					if placeholder.MatchString(v) {
						t.Errorf("%s container %s: %q is a placeholder", w.name, ct.Name, v)
					}
				}
			}
		}
		if c.name == "kustomize examples" {
			return
		}
		for _, w := range c.workloads() {
			for _, ct := range w.template.Spec.Containers {
				if !slices.Contains(ownContainers, ct.Name) || ct.Name == "envoy" {
					t.Errorf("%s runs %s (%s): an example application, which belongs in kubernetes/examples", w.name, ct.Name, ct.Image)
				}
			}
		}
	})
	if c := clusterNamed(t, "kustomize examples"); len(c.workloads()) <= len(clusterNamed(t, "kustomize base").workloads()) {
		t.Error("the examples add no application to the base")
	}
}

func TestKubernetesServices(t *testing.T) {
	forEachCluster(t, func(t *testing.T, c *cluster) {
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
	})
}

// flagValue returns the value of --name=VALUE or --name VALUE in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

func TestKubernetesIssuerScaling(t *testing.T) {
	forEachCluster(t, func(t *testing.T, c *cluster) {
		w := c.workloadWith(t, "issuer")
		var issuer *appsv1.Deployment
		for _, d := range c.deployments {
			if d.Namespace == w.namespace && d.Name == w.name {
				issuer = d
			}
		}
		var hpa *autoscalingv2.HorizontalPodAutoscaler
		for _, h := range c.hpas {
			if h.Spec.ScaleTargetRef.Kind == "Deployment" && h.Spec.ScaleTargetRef.Name == issuer.Name && h.Namespace == issuer.Namespace {
				hpa = h
			}
		}
		switch {
		case hpa == nil && (issuer.Spec.Replicas == nil || *issuer.Spec.Replicas < 2):
			t.Error("no HorizontalPodAutoscaler for the issuer, and fewer than 2 replicas")
		case hpa != nil:
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
			if issuer.Spec.Replicas != nil {
				t.Error("the issuer Deployment sets replicas, which the HPA owns")
			}
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
		ct, _ := container(w, "issuer")
		for _, e := range ct.Env {
			if e.Name == "MESHAUTH_STORE" && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
				t.Error("the PostgreSQL URL does not come from a Secret")
			}
		}
		// The issuer serves https with the certificate of its URL's host.
		issuerURL, _ := flagValue(ct.Args, "issuer-url")
		u, err := url.Parse(issuerURL)
		if err != nil || u.Scheme != "https" {
			t.Fatalf("--issuer-url %q: want https", issuerURL)
		}
		tlsVol := mountOf(w, ct, "/etc/meshauth/tls/tls.crt")
		if tlsVol == nil || tlsVol.Secret == nil {
			t.Fatal("no TLS Secret mounted at /etc/meshauth/tls")
		}
		if c.name == "chart with its own TLS secrets" {
			return // a kubernetes.io/tls Secret of the user's
		}
		spec := c.certificateFor(issuer.Namespace, tlsVol.Secret.SecretName)
		if names, _ := spec["dnsNames"].([]any); !slices.Contains(names, any(u.Hostname())) {
			t.Errorf("no Certificate for %s written to the issuer's TLS secret %q", u.Hostname(), tlsVol.Secret.SecretName)
		}
	})
}

func TestKubernetesNATS(t *testing.T) {
	forEachCluster(t, func(t *testing.T, c *cluster) {
		if len(c.statefulSets) == 0 {
			if c.name != "chart with xds and external NATS" {
				t.Fatal("no NATS StatefulSet")
			}
			return
		}
		nats := c.statefulSets[0]
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
		// Every meshauth container reaches this cluster through its
		// client Service.
		for _, w := range c.workloads() {
			for _, ct := range w.template.Spec.Containers {
				natsURL, ok := flagValue(ct.Args, "nats")
				if !isMeshauth(ct) || ct.Args[0] == "sidecar" && !ok {
					continue
				}
				u, err := url.Parse(natsURL)
				if err != nil || !strings.HasSuffix(u.Hostname(), "."+nats.Namespace+".svc.cluster.local") ||
					!slices.ContainsFunc(c.services, func(s *corev1.Service) bool { return s.Name+"."+s.Namespace+".svc.cluster.local" == u.Hostname() }) {
					t.Errorf("%s container %s: --nats %q is not a Service of the manifests", w.name, ct.Name, natsURL)
				}
			}
		}
	})
}

// portRule is what a NetworkPolicy admits to a port.
type portRule struct {
	anyone     bool     // from every source
	namespaces []string // from these namespaces (kubernetes.io/metadata.name)
}

// admitted returns, for the pods of w, what the NetworkPolicies selecting
// them admit to each port; nil if none selects them (all is open).
func (c *cluster) admitted(w workload) map[int32]*portRule {
	var out map[int32]*portRule
	for _, p := range c.policies {
		if p.Namespace != w.namespace || !selects(p.Spec.PodSelector.MatchLabels, w.template.Labels) ||
			!slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			continue
		}
		if out == nil {
			out = map[int32]*portRule{}
		}
		for _, rule := range p.Spec.Ingress {
			for _, port := range rule.Ports {
				n := int32(port.Port.IntValue())
				r := out[n]
				if r == nil {
					r = &portRule{}
					out[n] = r
				}
				if len(rule.From) == 0 {
					r.anyone = true
				}
				for _, from := range rule.From {
					if ns := from.NamespaceSelector; ns != nil && from.PodSelector == nil && len(ns.MatchLabels) == 1 {
						r.namespaces = append(r.namespaces, ns.MatchLabels["kubernetes.io/metadata.name"])
					}
				}
			}
			if len(rule.Ports) == 0 {
				out[0] = &portRule{anyone: true} // every port
			}
		}
	}
	return out
}

// monitoringNamespace is where the manifests expect Prometheus.
const monitoringNamespace = "monitoring"

// TestKubernetesNetworkPolicies: a pod's policy opens its serving ports
// (a sidecar's, Envoy's, the issuer's, xDS) to everyone, its admin port to
// Prometheus's namespace alone, and never the application's own port.
func TestKubernetesNetworkPolicies(t *testing.T) {
	forEachCluster(t, func(t *testing.T, c *cluster) {
		for _, p := range c.policies {
			where := "NetworkPolicy " + p.Namespace + "/" + p.Name
			if len(c.selected(p.Namespace, p.Spec.PodSelector.MatchLabels)) != 1 {
				t.Errorf("%s: selects %d workloads, want 1", where, len(c.selected(p.Namespace, p.Spec.PodSelector.MatchLabels)))
			}
		}
		guarded := map[string]bool{}
		for _, w := range c.workloads() {
			rules := c.admitted(w)
			if rules == nil || w.name == "nats" || strings.HasSuffix(w.name, "-nats") {
				continue // NATS has its own policy and test
			}
			guarded[w.name] = true
			var appPorts, servingPorts, adminPorts []int32
			for _, ct := range w.template.Spec.Containers {
				for _, cp := range ct.Ports {
					switch {
					case ct.Name == "app":
						appPorts = append(appPorts, cp.ContainerPort)
					case cp.Name == "admin":
						adminPorts = append(adminPorts, cp.ContainerPort)
					case slices.Contains([]string{"proxy", "http", "https", "grpc"}, cp.Name):
						servingPorts = append(servingPorts, cp.ContainerPort)
					}
				}
			}
			for port, r := range rules {
				where := fmt.Sprintf("%s: port %d", w.name, port)
				switch {
				case port == 0:
					t.Errorf("%s: an ingress rule without ports opens every port", w.name)
				case slices.Contains(appPorts, port):
					t.Errorf("%s is the application's own: only its sidecar's may be open", where)
				case slices.Contains(adminPorts, port) && (r.anyone || !slices.Equal(r.namespaces, []string{monitoringNamespace})):
					t.Errorf("%s is an admin port: admit it from namespace %s alone (admitted: %+v)", where, monitoringNamespace, *r)
				case slices.Contains(servingPorts, port) && !r.anyone:
					t.Errorf("%s serves clients, but not everyone is admitted", where)
				case !slices.Contains(adminPorts, port) && !slices.Contains(servingPorts, port):
					t.Errorf("%s is opened, but it is neither a serving nor an admin port of the pod", where)
				}
			}
		}
		if c.name == "kustomize examples" {
			for _, name := range []string{"payments", "orders"} {
				if !guarded[name] {
					t.Errorf("no NetworkPolicy for %s", name)
				}
			}
		}
	})
}

// TestKubernetesAdminPortsScrapeable: every admin port is where the pod's
// prometheus.io annotations point, and Prometheus's namespace may reach
// it through the pod's NetworkPolicy.
func TestKubernetesAdminPortsScrapeable(t *testing.T) {
	forEachCluster(t, checkScrapeable)
}

func checkScrapeable(t *testing.T, c *cluster) {
	for _, w := range c.workloads() {
		var admin []int32
		for _, ct := range w.template.Spec.Containers {
			for _, cp := range ct.Ports {
				if cp.Name == "admin" {
					admin = append(admin, cp.ContainerPort)
				}
			}
		}
		if len(admin) == 0 {
			continue
		}
		if len(admin) > 1 {
			t.Errorf("%s: %d admin ports, and the prometheus.io annotations name one", w.name, len(admin))
			continue
		}
		a := w.template.Annotations
		if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(int(admin[0])) || a["prometheus.io/path"] != "/metrics" {
			t.Errorf("%s: annotations %v: want prometheus.io/scrape true, port %d, path /metrics", w.name, a, admin[0])
		}
		if rules := c.admitted(w); rules != nil {
			if r := rules[admin[0]]; r == nil || !slices.Contains(r.namespaces, monitoringNamespace) {
				t.Errorf("%s: its NetworkPolicy does not admit the admin port %d from namespace %s", w.name, admin[0], monitoringNamespace)
			}
		}
	}
}

// listenFlags are the meshauth flags that open a listener in the pod.
var listenFlags = []string{"listen", "admin-listen", "ext-authz-grpc", "ext-authz-http", "egress"}

// helpDefault returns the default of --name in a command's --help.
func helpDefault(help, name string) string {
	_, block, ok := strings.Cut(help, "\n  --"+name+" ")
	if !ok {
		return ""
	}
	block, _, _ = strings.Cut(block, "\n  --")
	if m := regexp.MustCompile(`; default (\S+)`).FindStringSubmatch(block); m != nil {
		return m[1]
	}
	return ""
}

// listenPorts returns the ports the containers of w listen on, by
// container: what each declares, what a meshauth container's flags (or
// their defaults) open, and Envoy's admin port from its bootstrap.
func (c *cluster) listenPorts(t *testing.T, w workload) map[string][]int {
	t.Helper()
	out := map[string][]int{}
	add := func(ct string, port int) {
		if !slices.Contains(out[ct], port) {
			out[ct] = append(out[ct], port)
		}
	}
	for _, ct := range w.template.Spec.Containers {
		for _, cp := range ct.Ports {
			add(ct.Name, int(cp.ContainerPort))
		}
		if isMeshauth(ct) && len(ct.Args) > 0 && ct.Args[0] == "sidecar" {
			help := meshauthHelp(t, "sidecar")
			for _, f := range listenFlags {
				addr, ok := flagValue(ct.Args, f)
				if !ok {
					addr = helpDefault(help, f)
				}
				if addr == "" {
					continue
				}
				_, port, err := net.SplitHostPort(addr)
				n, err2 := strconv.Atoi(port)
				if err != nil || err2 != nil {
					t.Errorf("%s container %s: --%s %q is not host:port", w.name, ct.Name, f, addr)
					continue
				}
				add(ct.Name, n)
			}
		}
		if ct.Name == "envoy" {
			if v := mountOf(w, ct, "/etc/envoy/bootstrap.yaml"); v != nil && v.ConfigMap != nil {
				var b struct {
					Admin struct {
						Address struct {
							SocketAddress struct {
								PortValue int `json:"port_value"`
							} `json:"socket_address"`
						} `json:"address"`
					} `json:"admin"`
				}
				if err := yaml.Unmarshal([]byte(c.configMaps[w.namespace+"/"+v.ConfigMap.Name].Data["bootstrap.yaml"]), &b); err != nil {
					t.Fatal(err)
				}
				add(ct.Name, b.Admin.Address.SocketAddress.PortValue)
			}
		}
	}
	return out
}

// TestKubernetesPortsDistinct: no two containers of a pod listen on one
// port (the sidecar's admin port once was Envoy's).
func TestKubernetesPortsDistinct(t *testing.T) {
	forEachCluster(t, func(t *testing.T, c *cluster) {
		for _, w := range c.workloads() {
			owner := map[int]string{}
			for ct, ports := range c.listenPorts(t, w) {
				for _, p := range ports {
					if other, ok := owner[p]; ok && other != ct {
						t.Errorf("%s: containers %s and %s both listen on port %d", w.name, other, ct, p)
					}
					owner[p] = ct
				}
			}
		}
	})
	// The check sees the clash it is for: the sidecar's old admin port in
	// a pod with Envoy's conventional one.
	w := clusterNamed(t, "kustomize examples").workloadWith(t, "envoy")
	for i, ct := range w.template.Spec.Containers {
		if ct.Name == "meshauth" {
			ct.Args = slices.DeleteFunc(slices.Clone(ct.Args), func(a string) bool { return strings.HasPrefix(a, "--admin-listen") })
			ct.Args = append(ct.Args, "--admin-listen=:9902")
			tpl := w.template.DeepCopy()
			tpl.Spec.Containers[i] = ct
			w.template = tpl
		}
	}
	ports := clusterNamed(t, "kustomize examples").listenPorts(t, w)
	if !slices.Contains(ports["meshauth"], 9902) || !slices.Contains(ports["envoy"], 9902) {
		t.Errorf("a sidecar on Envoy's admin port 9902 is not seen: %v", ports)
	}
}

// TestKubernetesEmbeddedConfigs: the config maps carry exactly the files
// of deploy/envoy and deploy/xds, which the other tests check, and each
// kustomization lists every manifest of its folder.
func TestKubernetesEmbeddedConfigs(t *testing.T) {
	c := clusterNamed(t, "kustomize examples")
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
	for dir, extra := range map[string][]string{"kubernetes/base": nil, "kubernetes/examples": {"../base"}} {
		var k struct {
			Resources []string `json:"resources"`
		}
		data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		strict(t, dir, data, &map[string]any{})
		if err := yaml.Unmarshal(data, &k); err != nil {
			t.Fatal(err)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		want := slices.Clone(extra)
		for _, f := range files {
			if base := filepath.Base(f); base != "kustomization.yaml" {
				want = append(want, base)
			}
		}
		slices.Sort(want)
		slices.Sort(k.Resources)
		if !slices.Equal(k.Resources, want) {
			t.Errorf("%s: resources %v, want %v", dir, k.Resources, want)
		}
	}
}

// TestSidecarAdminPortClearOfEnvoy: the sidecar's default admin port is
// none of the admin ports of the Envoy configs it runs beside, nor
// Envoy's conventional 9901 or Prometheus's 9090.
func TestSidecarAdminPortClearOfEnvoy(t *testing.T) {
	def := helpDefault(meshauthHelp(t, "sidecar"), "admin-listen")
	_, port, err := net.SplitHostPort(def)
	if err != nil {
		t.Fatalf("sidecar --admin-listen default %q: %v", def, err)
	}
	taken := map[string]string{"9901": "Envoy's conventional admin port", "9090": "Prometheus"}
	for _, f := range []string{"envoy/envoy-ext-authz.yaml", "envoy/bootstrap-xds.yaml"} {
		b := loadBootstrap(t, f)
		taken[strconv.Itoa(int(b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue()))] = "the admin port of " + f
	}
	if what, ok := taken[port]; ok {
		t.Errorf("the sidecar's default admin port %s is %s", port, what)
	}
}
