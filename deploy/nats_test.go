package deploy

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	networkingv1 "k8s.io/api/networking/v1"
)

// natsWorkloads returns the workloads that run meshauth with --nats, by
// name, and the secret that holds the NKey seed each gives --nats-nkey.
func (c *cluster) natsWorkloads(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, w := range c.workloads() {
		for _, ct := range w.template.Spec.Containers {
			if !strings.HasPrefix(ct.Image, "meshauth:") || !slices.ContainsFunc(ct.Args, func(a string) bool { return strings.HasPrefix(a, "--nats=") }) {
				continue
			}
			where := w.namespace + "/" + w.name
			i := slices.IndexFunc(ct.Args, func(a string) bool { return strings.HasPrefix(a, "--nats-nkey=") })
			if i < 0 {
				t.Errorf("%s: --nats without --nats-nkey: NATS would let it do anything", where)
				continue
			}
			seed := strings.TrimPrefix(ct.Args[i], "--nats-nkey=")
			for _, m := range ct.VolumeMounts {
				if filepath.Dir(seed) != m.MountPath {
					continue
				}
				for _, v := range w.template.Spec.Volumes {
					if v.Name == m.Name && v.Secret != nil {
						if s := c.secrets[w.namespace+"/"+v.Secret.SecretName]; s != nil && s.StringData[filepath.Base(seed)] != "" {
							out[w.name] = v.Secret.SecretName
						}
					}
				}
			}
			if out[w.name] == "" {
				t.Errorf("%s: --nats-nkey %s is not a key of a mounted secret", where, seed)
			}
		}
	}
	return out
}

// TestKubernetesNATSPermissions runs a NATS server with the nats.conf of
// the manifests, the users' public NKeys set to fresh ones: the issuers'
// user may publish on meshauth's subjects and subscribe to nothing, the
// verifiers' user may subscribe and publish nothing; each workload with
// --nats uses the seed of its role.
func TestKubernetesNATSPermissions(t *testing.T) {
	c := loadCluster(t)
	seeds := c.natsWorkloads(t)
	for name, secret := range seeds {
		want := "nats-verifier-seed"
		if name == "issuer" {
			want = "nats-issuer-seed"
		}
		if secret != want {
			t.Errorf("%s authenticates to NATS with %s, want %s", name, secret, want)
		}
	}
	for _, name := range []string{"issuer", "meshauth-xds", "payments", "orders"} {
		if seeds[name] == "" {
			t.Errorf("%s does not follow NATS with an NKey", name)
		}
	}

	conf := c.configMaps["meshauth/nats-config"].Data["nats.conf"]
	users := map[string]nkeys.KeyPair{}
	for _, role := range []string{"ISSUER", "VERIFIER"} {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		t.Setenv("NATS_"+role+"_NKEY", pub)
		users[role] = kp
	}
	t.Setenv("POD_NAME", "nats-0")
	file := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	// The same authorization, on a server of its own on loopback.
	opts.Host, opts.Port, opts.HTTPPort, opts.Cluster, opts.Routes = "127.0.0.1", -1, 0, server.ClusterOpts{}, nil
	opts.JetStream, opts.StoreDir, opts.PidFile, opts.NoLog, opts.NoSigs = false, "", "", true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}
	t.Cleanup(s.Shutdown)
	connect := func(role string) *nats.Conn {
		kp := users[role]
		pub, _ := kp.PublicKey()
		nc, err := nats.Connect(s.ClientURL(), nats.Nkey(pub, kp.Sign), nats.PermissionErrOnSubscribe(true),
			nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		if err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	const subject = "meshauth.0123456789abcdef0123456789abcdef.revocation"
	verifier, issuer := connect("VERIFIER"), connect("ISSUER")
	sub, err := verifier.SubscribeSync("meshauth.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := verifier.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := issuer.Publish(subject, []byte("signed")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "signed" {
		t.Fatalf("the verifier did not receive what the issuer published: %v", err)
	}
	for _, tc := range []struct {
		name, role string
		op         func(*nats.Conn) error
	}{
		{"a verifier publishing on meshauth's subjects", "VERIFIER", func(nc *nats.Conn) error { return nc.Publish(subject, []byte("forged")) }},
		{"a verifier publishing elsewhere", "VERIFIER", func(nc *nats.Conn) error { return nc.Publish("other", []byte("x")) }},
		{"an issuer subscribing", "ISSUER", func(nc *nats.Conn) error { _, err := nc.SubscribeSync("meshauth.>"); return err }},
		{"a verifier subscribing elsewhere", "VERIFIER", func(nc *nats.Conn) error { _, err := nc.SubscribeSync("other"); return err }},
	} {
		nc := connect(tc.role) // a connection of its own: LastError is its refusal
		err := tc.op(nc)
		if err == nil {
			err = nc.Flush()
		}
		if err == nil {
			err = nc.LastError()
		}
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("%s: %v, want a permissions violation", tc.name, err)
		}
	}
	if m, err := sub.NextMsg(200 * time.Millisecond); err == nil {
		t.Errorf("the verifier received %q, published without permission", m.Data)
	}
	if _, err := nats.Connect(s.ClientURL()); err == nil {
		t.Error("a client without an NKey was let in")
	}
}

// TestKubernetesNATSNetworkPolicy: NATS's client port admits exactly the
// workloads that run meshauth with --nats, its cluster port the NATS peers
// alone, and no other port is open.
func TestKubernetesNATSNetworkPolicy(t *testing.T) {
	c := loadCluster(t)
	var policy *networkingv1.NetworkPolicy
	for _, p := range c.policies {
		if sel := c.selected(p.Namespace, p.Spec.PodSelector.MatchLabels); len(sel) == 1 && sel[0].name == "nats" {
			policy = p
		}
	}
	if policy == nil {
		t.Fatal("no NetworkPolicy selects the NATS pods")
	}
	if !slices.Contains(policy.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Fatal("the NATS NetworkPolicy does not restrict ingress")
	}
	admitted := map[int][]string{} // port → workloads
	for _, rule := range policy.Spec.Ingress {
		if len(rule.Ports) == 0 || len(rule.From) == 0 {
			t.Errorf("a rule without ports or sources opens NATS to everything: %+v", rule)
			continue
		}
		for _, port := range rule.Ports {
			for _, w := range c.workloads() {
				if slices.ContainsFunc(rule.From, func(peer networkingv1.NetworkPolicyPeer) bool { return c.admits(t, policy.Namespace, peer, w) }) {
					admitted[port.Port.IntValue()] = append(admitted[port.Port.IntValue()], w.name)
				}
			}
		}
	}
	var clients []string
	for name := range c.natsWorkloads(t) {
		clients = append(clients, name)
	}
	slices.Sort(clients)
	slices.Sort(admitted[4222])
	if !slices.Equal(admitted[4222], clients) {
		t.Errorf("NATS's client port admits %v, want the workloads with --nats %v", admitted[4222], clients)
	}
	if !slices.Equal(admitted[6222], []string{"nats"}) {
		t.Errorf("NATS's cluster port admits %v, want the NATS peers alone", admitted[6222])
	}
	for port := range admitted {
		if port != 4222 && port != 6222 && port != 8222 {
			t.Errorf("the NATS NetworkPolicy opens port %d", port)
		}
	}
}

// admits reports whether peer, in a policy of namespace, admits the pods
// of w. Only matchLabels selectors are used in the manifests; anything
// else fails the test rather than be guessed at.
func (c *cluster) admits(t *testing.T, namespace string, peer networkingv1.NetworkPolicyPeer, w workload) bool {
	t.Helper()
	if peer.IPBlock != nil ||
		peer.PodSelector != nil && len(peer.PodSelector.MatchExpressions) > 0 ||
		peer.NamespaceSelector != nil && len(peer.NamespaceSelector.MatchExpressions) > 0 {
		t.Fatalf("a NetworkPolicy peer this test does not evaluate: %+v", peer)
	}
	if peer.NamespaceSelector == nil {
		if w.namespace != namespace {
			return false
		}
	} else if !selectsOrAll(peer.NamespaceSelector.MatchLabels, c.namespaceLabels[w.namespace]) {
		return false
	}
	return peer.PodSelector == nil || selectsOrAll(peer.PodSelector.MatchLabels, w.template.Labels)
}

// selectsOrAll is selects, where an empty selector selects everything.
func selectsOrAll(selector, labels map[string]string) bool {
	return len(selector) == 0 || selects(selector, labels)
}
