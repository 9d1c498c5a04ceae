package deploy

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// traefikDynamic is the part of Traefik's dynamic configuration that
// traefik/meshauth.yml may use; decoding strictly refuses anything else,
// a misspelt option included.
type traefikDynamic struct {
	HTTP struct {
		Middlewares map[string]struct {
			ForwardAuth *struct {
				Address                  string   `json:"address"`
				TrustForwardHeader       bool     `json:"trustForwardHeader"`
				AuthResponseHeaders      []string `json:"authResponseHeaders"`
				AuthResponseHeadersRegex string   `json:"authResponseHeadersRegex"`
			} `json:"forwardAuth"`
		} `json:"middlewares"`
		Routers map[string]struct {
			EntryPoints []string `json:"entryPoints"`
			Rule        string   `json:"rule"`
			Middlewares []string `json:"middlewares"`
			Service     string   `json:"service"`
		} `json:"routers"`
		Services map[string]struct {
			LoadBalancer struct {
				Servers []struct {
					URL string `json:"url"`
				} `json:"servers"`
			} `json:"loadBalancer"`
		} `json:"services"`
	} `json:"http"`
}

type traefikStatic struct {
	EntryPoints map[string]struct {
		Address string `json:"address"`
	} `json:"entryPoints"`
	Providers struct {
		File struct {
			Filename string `json:"filename"`
		} `json:"file"`
	} `json:"providers"`
}

// TestTraefikForwardAuth checks the shape of the Traefik configuration,
// which no test runs (Traefik is not packaged for Debian and does not
// build from the module proxy alone): strict decoding, every router
// behind the meshauth middleware, and a header selection that replaces
// every identity field of the caller's, in both spellings, with meshauth's
// answer's, as Traefik does (it removes the request's fields that
// authResponseHeadersRegex matches or authResponseHeaders names, then
// copies the answer's).
func TestTraefikForwardAuth(t *testing.T) {
	var static traefikStatic
	strictFile(t, "traefik/traefik.yml", &static)
	if static.Providers.File.Filename != "meshauth.yml" || len(static.EntryPoints) == 0 {
		t.Errorf("static configuration: %+v", static)
	}
	var dyn traefikDynamic
	strictFile(t, "traefik/meshauth.yml", &dyn)
	mw, ok := dyn.HTTP.Middlewares["meshauth"]
	if !ok || mw.ForwardAuth == nil {
		t.Fatal("no meshauth forwardAuth middleware")
	}
	fa := mw.ForwardAuth
	if !strings.HasSuffix(fa.Address, "/.meshauth/auth") || fa.TrustForwardHeader {
		t.Errorf("forwardAuth address %q, trustForwardHeader %v", fa.Address, fa.TrustForwardHeader)
	}
	for name, r := range dyn.HTTP.Routers {
		if !slices.Contains(r.Middlewares, "meshauth") {
			t.Errorf("router %s is not behind meshauth", name)
		}
		if _, ok := dyn.HTTP.Services[r.Service]; !ok {
			t.Errorf("router %s names service %q, not defined", name, r.Service)
		}
	}
	re, err := regexp.Compile(fa.AuthResponseHeadersRegex) // Traefik's regexp is Go's
	if err != nil {
		t.Fatal(err)
	}
	replaced := func(name string) bool {
		return re.MatchString(name) || slices.ContainsFunc(fa.AuthResponseHeaders, func(h string) bool { return strings.EqualFold(h, name) })
	}
	for _, name := range []string{"X-Meshauth-Subject", "X-Meshauth-Client", "X-Meshauth-Scope", "X-Meshauth-Issuer",
		"X_meshauth_subject", "x-meshauth-scope", "X-Meshauth-Anything", "X-Caller"} {
		if !replaced(name) {
			t.Errorf("a caller's %s would reach the service", name)
		}
	}
	for _, name := range []string{"Authorization", "X-Meshauthx", "X-Other", "Cookie"} {
		if replaced(name) {
			t.Errorf("%s would be taken from meshauth's answer", name)
		}
	}
}

// strictFile decodes a YAML file into v, refusing unknown fields.
func strictFile(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	strict(t, path, data, v)
}
