package deploy

import (
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nkeys"
)

// nkPackage is the NKey tool prerequisites.sh runs, built from the nkeys
// module meshauth requires.
const nkPackage = "github.com/nats-io/nkeys/nk"

// created is what a cluster holds after prerequisites.sh: kind ("secret",
// "configmap") → "namespace/name" → key → value.
type created map[string]map[string]map[string]string

// has reports whether the object is there (and its key, unless "").
func (c created) has(kind, namespace, name, key string) bool {
	data, ok := c[kind][namespace+"/"+name]
	if ok && key != "" {
		_, ok = data[key]
	}
	return ok
}

var (
	prerequisitesOnce sync.Once
	prerequisitesMade created
	prerequisitesErr  error
)

// prerequisites runs deploy/kubernetes/prerequisites.sh, once, against a
// fake kubectl with the namespace shop of the examples, and returns what
// it created.
func prerequisites(t *testing.T) created {
	t.Helper()
	nk := built(t, nkPackage)
	prerequisitesOnce.Do(func() {
		dir, err := os.MkdirTemp("", "meshauth-prerequisites")
		if err != nil {
			prerequisitesErr = err
			return
		}
		defer os.RemoveAll(dir)
		prerequisitesMade, _, prerequisitesErr = runPrerequisites(dir, nk, map[string]string{
			"MESHAUTH_STORE": "postgres://meshauth:s3cret-pw@db:5432/meshauth", "MESHAUTH_CA_FILE": "envoy/sds/mesh-ca.yaml",
			"MESHAUTH_SIDECAR_NAMESPACES": "shop",
		})
	})
	if prerequisitesErr != nil {
		t.Fatal(prerequisitesErr)
	}
	return prerequisitesMade
}

// fakeKubectl logs each call's arguments, one line each, and keeps the
// Secrets and ConfigMaps it creates as files
// $KUBECTL_STATE/NAMESPACE/KIND/NAME/KEY, which get then finds (a key of
// a Secret's data printed base64-encoded, as kubectl's jsonpath does).
// Creating what exists fails, as with kubectl.
const fakeKubectl = `#!/bin/sh
printf 'call %s\n' "$*" >> "$KUBECTL_LOG"
ns=default verb= kind= name= output= files=
while [ $# -gt 0 ]; do
	case $1 in
	-n) ns=$2; shift ;;
	-o) output=$2; shift ;;
	--from-file=*) files="$files ${1#--from-file=}" ;;
	-*) ;;
	*)
		if [ -z "$verb" ]; then verb=$1
		elif [ -z "$kind" ]; then kind=$1
		elif [ "$kind" = secret ] && [ "$1" = generic ]; then :
		elif [ -z "$name" ]; then name=$1
		fi ;;
	esac
	shift
done
obj=$KUBECTL_STATE/$ns/$kind/$name
case $verb in
apply) cat > /dev/null ;;
get)
	[ -d "$obj" ] || { echo "Error from server (NotFound): $kind \"$name\" not found" >&2; exit 1; }
	case $output in
	'jsonpath={.data.'*'}') key=${output#'jsonpath={.data.'}; base64 < "$obj/${key%'}'}" | tr -d '\n' ;;
	esac ;;
create)
	case $kind in secret|configmap) ;; *) exit 0 ;; esac
	[ -d "$obj" ] && { echo "Error from server (AlreadyExists): $kind \"$name\" already exists" >&2; exit 1; }
	mkdir -p "$obj"
	for kv in $files; do cp "${kv#*=}" "$obj/${kv%%=*}"; done ;;
esac
exit 0
`

// runPrerequisites runs the script with env, the fake kubectl in dir and
// the NKey tool nk (none if ""), and returns what the cluster in dir holds
// after it and the kubectl calls of this run. A second run in the same dir
// finds what the first created.
func runPrerequisites(dir, nk string, env map[string]string) (created, string, error) {
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, "", err
	}
	if err := os.WriteFile(filepath.Join(bin, "kubectl"), []byte(fakeKubectl), 0o755); err != nil {
		return nil, "", err
	}
	if nk != "" {
		os.Remove(filepath.Join(bin, "nk"))
		if err := os.Symlink(nk, filepath.Join(bin, "nk")); err != nil {
			return nil, "", err
		}
	}
	// Only the tools the script may use: no nk of this machine's.
	for _, tool := range []string{"sh", "mktemp", "rm", "cat", "tr", "openssl", "base64", "cp", "mkdir"} {
		path, err := exec.LookPath(tool)
		if err != nil {
			return nil, "", err
		}
		if err := os.Symlink(path, filepath.Join(bin, tool)); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, "", err
		}
	}
	logFile, state := filepath.Join(dir, "kubectl.log"), filepath.Join(dir, "cluster")
	os.Remove(logFile)
	cmd := exec.Command(filepath.Join(bin, "sh"), "kubernetes/prerequisites.sh")
	cmd.Env = []string{"PATH=" + bin, "KUBECTL_LOG=" + logFile, "KUBECTL_STATE=" + state, "HOME=" + dir}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, "", &scriptError{err, string(out)}
	}
	log, err := os.ReadFile(logFile)
	if err != nil {
		return nil, "", err
	}
	made := created{"secret": {}, "configmap": {}}
	files, _ := filepath.Glob(filepath.Join(state, "*", "*", "*", "*"))
	for _, f := range files {
		rel, _ := filepath.Rel(state, f)
		p := strings.Split(rel, string(filepath.Separator)) // namespace, kind, name, key
		value, err := os.ReadFile(f)
		if err != nil {
			return nil, "", err
		}
		object := p[0] + "/" + p[2]
		if made[p[1]][object] == nil {
			made[p[1]][object] = map[string]string{}
		}
		made[p[1]][object][p[3]] = string(value)
	}
	return made, string(log), nil
}

type scriptError struct {
	err    error
	output string
}

func (e *scriptError) Error() string { return "prerequisites.sh: " + e.err.Error() + "\n" + e.output }

// natsUser returns a fresh NKey user's seed and public key.
func natsUser(t *testing.T) (seed, public string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := kp.Seed()
	p, _ := kp.PublicKey()
	return string(s), p
}

// TestPrerequisites: the script makes the issuer's Secret and the NATS
// users' Secrets from the environment, generating what is not given, and
// the CA ConfigMap and the verifiers' seed in meshauth and each namespace
// with sidecars; a second run adds a namespace with the seeds already
// there; no value ever appears on a command line.
func TestPrerequisites(t *testing.T) {
	nk := built(t, nkPackage)
	const store, admin = "postgres://meshauth:s3cret-pw@db:5432/meshauth", "given-admin-token-0123456789"
	issuerSeed, issuerPublic := natsUser(t)
	ca, err := os.ReadFile("envoy/sds/mesh-ca.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	made, log, err := runPrerequisites(dir, nk, map[string]string{
		"MESHAUTH_STORE": store, "MESHAUTH_ADMIN_TOKEN": admin, "MESHAUTH_NATS_ISSUER_SEED": issuerSeed,
		"MESHAUTH_CA_FILE": "envoy/sds/mesh-ca.yaml", "MESHAUTH_SIDECAR_NAMESPACES": "shop",
	})
	if err != nil {
		t.Fatal(err)
	}
	secret := func(namespace, name, key string) string {
		if !made.has("secret", namespace, name, key) {
			t.Errorf("no secret %s/%s with key %s; made %v", namespace, name, key, made)
		}
		return made["secret"][namespace+"/"+name][key]
	}
	if got := secret("meshauth", "meshauth-issuer", "store"); got != store {
		t.Errorf("store %q, want %q", got, store)
	}
	if got := secret("meshauth", "meshauth-issuer", "admin-token"); got != admin {
		t.Errorf("admin-token %q, want the one given", got)
	}
	kek := secret("meshauth", "meshauth-issuer", "key-encryption-key")
	if k, err := base64.StdEncoding.DecodeString(kek); err != nil || len(k) != 32 {
		t.Errorf("key-encryption-key %q: want 32 generated bytes in base64", kek)
	}
	for _, ns := range []string{"meshauth", "shop"} {
		if got := made["configmap"][ns+"/meshauth-ca"]["ca.crt"]; got != string(ca) {
			t.Errorf("configmap %s/meshauth-ca: ca.crt %q, want the CA file", ns, got)
		}
	}

	// The NATS users: the issuer's pair from its given seed, the
	// verifiers' made fresh, one seed in every namespace.
	if got := secret("meshauth", "nats-issuer-seed", "seed"); got != issuerSeed {
		t.Errorf("nats-issuer-seed %q, want the one given", got)
	}
	if got := secret("meshauth", "nats-users", "issuer-nkey"); got != issuerPublic {
		t.Errorf("nats-users issuer-nkey %q, want the given seed's public key %s", got, issuerPublic)
	}
	verifierSeed := secret("meshauth", "nats-verifier-seed", "seed")
	kp, err := nkeys.FromSeed([]byte(verifierSeed))
	if err != nil {
		t.Fatalf("nats-verifier-seed: %v", err)
	}
	verifierPublic, _ := kp.PublicKey()
	if !nkeys.IsValidPublicUserKey(verifierPublic) || verifierPublic == issuerPublic {
		t.Errorf("the verifiers' public key %s: want a user of its own", verifierPublic)
	}
	if got := secret("meshauth", "nats-users", "verifier-nkey"); got != verifierPublic {
		t.Errorf("nats-users verifier-nkey %q, want the generated seed's public key %s", got, verifierPublic)
	}
	if got := secret("shop", "nats-verifier-seed", "seed"); got != verifierSeed {
		t.Error("shop's nats-verifier-seed is not meshauth's")
	}
	secrets := []string{"s3cret", admin, kek, issuerSeed, verifierSeed}
	noSecretOnCommandLines := func(log string) {
		t.Helper()
		for line := range strings.Lines(log) {
			for _, s := range secrets {
				if strings.Contains(line, s) {
					t.Errorf("a secret on kubectl's command line: %s", line)
				}
			}
		}
	}
	noSecretOnCommandLines(log)

	// Again, with one more namespace: it gets the verifiers' seed that is
	// there, and nothing else is made again.
	made, log, err = runPrerequisites(dir, nk, map[string]string{
		"MESHAUTH_STORE": store, "MESHAUTH_CA_FILE": "envoy/sds/mesh-ca.yaml", "MESHAUTH_SIDECAR_NAMESPACES": "shop billing",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := secret("billing", "nats-verifier-seed", "seed"); got != verifierSeed {
		t.Error("the second run gave namespace billing a verifier seed other than meshauth's")
	}
	if got := secret("meshauth", "nats-users", "verifier-nkey"); got != verifierPublic {
		t.Error("the second run replaced nats-users")
	}
	if creates := regexp.MustCompile(`(?m)^call .* create (secret generic|configmap) .*$`).FindAllString(log, -1); len(creates) != 2 ||
		!strings.Contains(creates[0], "-n billing create secret generic nats-verifier-seed") || !strings.Contains(creates[1], "-n billing create configmap meshauth-ca") {
		t.Errorf("the second run created %q, want billing's seed and CA alone", creates)
	}
	noSecretOnCommandLines(log)

	// What cannot work is refused, naming what to fix.
	otherSeed, _ := natsUser(t)
	account, _ := nkeys.CreateAccount()
	accountSeed, _ := account.Seed()
	for _, tc := range []struct {
		name  string
		again bool // in dir, after the runs above
		nk    string
		env   map[string]string
		want  string
	}{
		{"no store", false, nk, nil, "MESHAUTH_STORE"},
		{"no nk", false, "", map[string]string{"MESHAUTH_STORE": store}, "go install " + nkPackage + "@"},
		{"a verifier seed that is not the one in the cluster", true, nk, map[string]string{"MESHAUTH_STORE": store, "MESHAUTH_NATS_VERIFIER_SEED": otherSeed}, "MESHAUTH_NATS_VERIFIER_SEED is not the seed in Secret meshauth/nats-verifier-seed"},
		{"not a seed", false, nk, map[string]string{"MESHAUTH_STORE": store, "MESHAUTH_NATS_ISSUER_SEED": "SUNOTASEED"}, "issuer seed (MESHAUTH_NATS_ISSUER_SEED or Secret meshauth/nats-issuer-seed) is not an NKey seed"},
		{"an account's seed", false, nk, map[string]string{"MESHAUTH_STORE": store, "MESHAUTH_NATS_VERIFIER_SEED": string(accountSeed)}, "is not the seed of an NKey user"},
	} {
		runDir := t.TempDir()
		if tc.again {
			runDir = dir
		}
		if _, _, err := runPrerequisites(runDir, tc.nk, tc.env); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
		} else if strings.Contains(err.Error(), otherSeed) || strings.Contains(err.Error(), string(accountSeed)) {
			t.Errorf("%s: the error shows the seed: %v", tc.name, err)
		}
	}
}

// TestPrerequisitesNKeyTool: the nk that prerequisites.sh tells to install
// is the one of the nkeys version meshauth requires.
func TestPrerequisitesNKeyTool(t *testing.T) {
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/nats-io/nkeys (v\S+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod does not require github.com/nats-io/nkeys")
	}
	want := "go install " + nkPackage + "@" + string(m[1])
	for _, f := range []string{"kubernetes/prerequisites.sh", "../README.md"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), want) {
			t.Errorf("%s does not say %q", f, want)
		}
	}
}
