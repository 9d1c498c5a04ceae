package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/meshauth/meshauth/"

// dataPlane are the packages a sidecar, an edge, an xds server and a
// relying party are built of.
var dataPlane = []string{"token", "jwks", "exchange", "proxy", "xds", "rp"}

// persistence is what the data plane must not link: the issuer and its
// store, the drivers of the stores, and the password hash of sign-in.
var persistence = []string{
	module + "issuer",
	"github.com/jackc/pgx",
	"go.etcd.io/bbolt",
	"golang.org/x/crypto/argon2",
}

// TestDataPlaneLinksNoPersistence: what verifies tokens beside every
// service depends on the issuer only through what it publishes (metadata,
// keys, snapshots, the token endpoint), never on its persistence, so that
// a sidecar stays small and the issuer's store can change without it.
func TestDataPlaneLinksNoPersistence(t *testing.T) {
	args := []string{"list", "-deps", "-f", `{{.ImportPath}}`}
	for _, p := range dataPlane {
		args = append(args, module+p)
	}
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < len(dataPlane) {
		t.Fatalf("go list named %d packages", len(deps))
	}
	for _, dep := range deps {
		for _, p := range persistence {
			if dep == p || strings.HasPrefix(dep, p+"/") {
				t.Errorf("the data plane (%s) links %s", strings.Join(dataPlane, ", "), dep)
			}
		}
	}
}
