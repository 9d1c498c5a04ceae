package deploy

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	appsv1 "k8s.io/api/apps/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// natsClient is a workload that runs meshauth with --nats, and the NKey
// seed it gives --nats-nkey.
type natsClient struct {
	workload workload
	role     string // "issuer" or "verifier"
	seed     string // the value prerequisites.sh put in the Secret it mounts
}

// natsClients returns the workloads of c that run meshauth with --nats.
// Each must give --nats-nkey a key of a Secret it mounts, the seed of its
// role (nats-issuer-seed for issuers, nats-verifier-seed for the others)
// that prerequisites.sh makes in its namespace.
func (c *cluster) natsClients(t *testing.T, made created) []natsClient {
	t.Helper()
	var out []natsClient
	for _, w := range c.workloads() {
		for _, ct := range w.template.Spec.Containers {
			if _, ok := flagValue(ct.Args, "nats"); !isMeshauth(ct) || !ok {
				continue
			}
			where := w.namespace + "/" + w.name
			file, ok := flagValue(ct.Args, "nats-nkey")
			if !ok {
				t.Errorf("%s: --nats without --nats-nkey: NATS would let it do anything", where)
				continue
			}
			role := "verifier"
			if ct.Args[0] == "issuer" {
				role = "issuer"
			}
			v := mountOf(w, ct, file)
			if v == nil || v.Secret == nil {
				t.Errorf("%s: --nats-nkey %s is not in a mounted Secret", where, file)
				continue
			}
			if want := "nats-" + role + "-seed"; v.Secret.SecretName != want {
				t.Errorf("%s authenticates to NATS with %s, want %s", where, v.Secret.SecretName, want)
			}
			seed := made["secret"][w.namespace+"/"+v.Secret.SecretName][filepath.Base(file)]
			if seed == "" {
				t.Errorf("%s: --nats-nkey %s: prerequisites.sh makes no Secret %s/%s with key %s", where, file, w.namespace, v.Secret.SecretName, filepath.Base(file))
				continue
			}
			out = append(out, natsClient{w, role, seed})
		}
	}
	return out
}

// natsServer returns the NATS StatefulSet of c, nil if c runs none (its
// meshauth uses a NATS of the operator's).
func (c *cluster) natsServer() *appsv1.StatefulSet {
	for _, s := range c.statefulSets {
		for _, ct := range s.Spec.Template.Spec.Containers {
			if ct.Name == "nats" {
				return s
			}
		}
	}
	return nil
}

// TestKubernetesNATSPermissions runs a NATS server with the nats.conf of
// each deployment that runs NATS, its users' public NKeys and the
// workloads' seeds those prerequisites.sh made: the issuers' user may
// publish on meshauth's subjects and subscribe to nothing, the verifiers'
// user may subscribe and publish nothing; every meshauth workload uses
// NATS with the seed of its role.
func TestKubernetesNATSPermissions(t *testing.T) {
	made := prerequisites(t)
	forEachCluster(t, func(t *testing.T, c *cluster) {
		clients := c.natsClients(t, made)
		for _, w := range c.workloads() {
			for _, ct := range w.template.Spec.Containers {
				if isMeshauth(ct) && !slices.ContainsFunc(clients, func(n natsClient) bool { return n.workload.name == w.name }) {
					t.Errorf("%s does not follow NATS with an NKey", w.name)
				}
			}
		}
		sts := c.natsServer()
		if sts == nil {
			t.Skip("no NATS in this deployment: nats.url names the operator's, whose users are theirs to set")
		}
		checkNATSPermissions(t, c, sts, made, clients)
	})
}

func checkNATSPermissions(t *testing.T, c *cluster, sts *appsv1.StatefulSet, made created, clients []natsClient) {
	nc, _ := container(workload{template: &sts.Spec.Template}, "nats")
	var conf string
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil {
			conf = c.configMaps[sts.Namespace+"/"+v.ConfigMap.Name].Data["nats.conf"]
		}
	}
	// The environment nats.conf reads: the public keys from the Secrets
	// prerequisites.sh made.
	for _, e := range nc.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			t.Setenv(e.Name, made["secret"][sts.Namespace+"/"+ref.Name][ref.Key])
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			t.Setenv(e.Name, sts.Name+"-0")
		}
	}
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
	connect := func(n natsClient) *nats.Conn {
		kp, err := nkeys.FromSeed([]byte(n.seed))
		if err != nil {
			t.Fatalf("%s: %v", n.workload.name, err)
		}
		pub, _ := kp.PublicKey()
		nc, err := nats.Connect(s.ClientURL(), nats.Nkey(pub, kp.Sign), nats.PermissionErrOnSubscribe(true),
			nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		if err != nil {
			t.Fatalf("%s (%s) cannot connect: %v", n.workload.name, n.role, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	byRole := map[string][]natsClient{}
	for _, n := range clients {
		byRole[n.role] = append(byRole[n.role], n)
	}
	if len(byRole["issuer"]) == 0 {
		t.Fatal("no issuer publishes on NATS")
	}
	const subject = "meshauth.0123456789abcdef0123456789abcdef.revocation"
	issuer := connect(byRole["issuer"][0])
	var subs []*nats.Subscription
	for _, v := range byRole["verifier"] {
		nc := connect(v)
		sub, err := nc.SubscribeSync("meshauth.>")
		if err != nil {
			t.Fatalf("%s: %v", v.workload.name, err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	// everyReceives publishes data as the issuer, and checks that it is
	// the next message of every verifier.
	everyReceives := func(data string) {
		t.Helper()
		if err := issuer.Publish(subject, []byte(data)); err != nil {
			t.Fatal(err)
		}
		for i, sub := range subs {
			if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != data {
				t.Errorf("%s: %v, want %q published by the issuer", byRole["verifier"][i].workload.name, err, data)
			}
		}
	}
	everyReceives("signed")
	for _, tc := range []struct {
		name, role string
		op         func(*nats.Conn) error
	}{
		{"publishing on meshauth's subjects", "verifier", func(nc *nats.Conn) error { return nc.Publish(subject, []byte("forged")) }},
		{"publishing elsewhere", "verifier", func(nc *nats.Conn) error { return nc.Publish("other", []byte("x")) }},
		{"subscribing", "issuer", func(nc *nats.Conn) error { _, err := nc.SubscribeSync("meshauth.>"); return err }},
		{"subscribing elsewhere", "verifier", func(nc *nats.Conn) error { _, err := nc.SubscribeSync("other"); return err }},
	} {
		for _, n := range byRole[tc.role] {
			nc := connect(n) // a connection of its own: LastError is its refusal
			err := tc.op(nc)
			if err == nil {
				err = nc.Flush()
			}
			if err == nil {
				err = nc.LastError()
			}
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Errorf("%s (%s) %s: %v, want a permissions violation", n.workload.name, n.role, tc.name, err)
			}
		}
	}
	// Nothing of what was refused arrived: the next message is the
	// issuer's.
	everyReceives("after the refusals")
	if _, err := nats.Connect(s.ClientURL()); err == nil {
		t.Error("a client without an NKey was let in")
	}
}

// TestKubernetesNATSNetworkPolicy: NATS's client port admits exactly the
// workloads that run meshauth with --nats, its cluster port the NATS peers
// alone, and no other port is open.
func TestKubernetesNATSNetworkPolicy(t *testing.T) {
	made := prerequisites(t)
	forEachCluster(t, func(t *testing.T, c *cluster) {
		sts := c.natsServer()
		if sts == nil {
			t.Skip("no NATS in this deployment: nats.url names the operator's")
		}
		policy := c.natsPolicy(sts)
		if policy == nil {
			if len(c.policies) == 0 {
				t.Skip("no NetworkPolicy in this deployment (networkPolicy.enabled false)")
			}
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
		for _, n := range c.natsClients(t, made) {
			clients = append(clients, n.workload.name)
		}
		slices.Sort(clients)
		slices.Sort(admitted[4222])
		if !slices.Equal(admitted[4222], clients) {
			t.Errorf("NATS's client port admits %v, want the workloads with --nats %v", admitted[4222], clients)
		}
		if !slices.Equal(admitted[6222], []string{sts.Name}) {
			t.Errorf("NATS's cluster port admits %v, want the NATS peers alone", admitted[6222])
		}
		for port := range admitted {
			if port != 4222 && port != 6222 && port != 8222 {
				t.Errorf("the NATS NetworkPolicy opens port %d", port)
			}
		}
	})
}

// natsPolicy returns the NetworkPolicy that selects the pods of sts, the
// NATS StatefulSet; nil if none does.
func (c *cluster) natsPolicy(sts *appsv1.StatefulSet) *networkingv1.NetworkPolicy {
	for _, p := range c.policies {
		if p.Namespace == sts.Namespace && selects(p.Spec.PodSelector.MatchLabels, sts.Spec.Template.Labels) {
			return p
		}
	}
	return nil
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
