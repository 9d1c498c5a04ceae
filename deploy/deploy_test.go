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
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"sigs.k8s.io/yaml"
)

func stripComments(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// built returns the command of the Go package pkg, built once for the
// whole test into a directory TestMain removes.
var (
	buildMu  sync.Mutex
	buildDir string
	builtCmd = map[string]string{}
)

func built(t *testing.T, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if cmd, ok := builtCmd[pkg]; ok {
		return cmd
	}
	if buildDir == "" {
		dir, err := os.MkdirTemp("", "meshauth-deploy-test")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = dir
	}
	cmd := filepath.Join(buildDir, path.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", cmd, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	builtCmd[pkg] = cmd
	return cmd
}

// meshauthHelp returns the --help output of a meshauth command.
var (
	helpMu    sync.Mutex
	helpCache = map[string]string{}
)

func meshauthHelp(t *testing.T, command string) string {
	t.Helper()
	binary := built(t, "../cmd/meshauth")
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
	if buildDir != "" {
		os.RemoveAll(buildDir)
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
