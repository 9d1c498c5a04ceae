package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/meshauth/meshauth/issuer"
)

// issuerFile is the structured part of the issuer's config file.
type issuerFile struct {
	ForeignIssuers    []foreignIssuerEntry    `yaml:"foreign_issuers"`
	UpstreamProviders []upstreamProviderEntry `yaml:"upstream_providers"`
}

// upstreamProviderEntry is one OpenID provider people may sign in with
// (issuer.UpstreamProvider). Its client secret comes from a file or an
// environment variable, never from the config file itself.
type upstreamProviderEntry struct {
	ID                string   `yaml:"id"`
	Name              string   `yaml:"name"`
	Issuer            string   `yaml:"issuer"`
	ClientID          string   `yaml:"client_id"`
	ClientSecretFile  string   `yaml:"client_secret_file"`
	ClientSecretEnv   string   `yaml:"client_secret_env"`
	Scopes            []string `yaml:"scopes"`
	CreateUsers       bool     `yaml:"create_users"`
	LinkVerifiedEmail bool     `yaml:"link_verified_email"`
}

// upstreamProviders reads the secrets of the upstream_providers entries.
func (f *issuerFile) upstreamProviders() ([]issuer.UpstreamProvider, error) {
	out := make([]issuer.UpstreamProvider, 0, len(f.UpstreamProviders))
	for i, e := range f.UpstreamProviders {
		where := fmt.Sprintf("config file upstream_providers[%d] (%s)", i, e.ID)
		var secret string
		switch {
		case (e.ClientSecretFile == "") == (e.ClientSecretEnv == ""):
			return nil, fmt.Errorf("%s: give the client secret in exactly one of client_secret_file and client_secret_env", where)
		case e.ClientSecretFile != "":
			b, err := os.ReadFile(e.ClientSecretFile)
			if err != nil {
				return nil, fmt.Errorf("%s: read client secret: %w", where, err)
			}
			secret = strings.TrimSpace(string(b))
		default:
			secret = os.Getenv(e.ClientSecretEnv)
		}
		if secret == "" {
			return nil, fmt.Errorf("%s: the client secret is empty", where)
		}
		out = append(out, issuer.UpstreamProvider{ID: e.ID, Name: e.Name, Issuer: e.Issuer, ClientID: e.ClientID, ClientSecret: secret,
			Scopes: e.Scopes, CreateUsers: e.CreateUsers, LinkVerifiedEmail: e.LinkVerifiedEmail})
	}
	return out, nil
}

// foreignIssuerEntry is one foreign authorization server whose tokens edges
// may dereference through this issuer (issuer.ForeignIssuer).
type foreignIssuerEntry struct {
	Issuer           string   `yaml:"issuer"`
	IntrospectionURL string   `yaml:"introspection_url"`
	ClientID         string   `yaml:"client_id"`
	ClientSecretFile string   `yaml:"client_secret_file"`
	Audiences        []string `yaml:"audiences"`
	SubjectPrefix    string   `yaml:"subject_prefix"`
}

// foreignIssuers reads the secrets of the foreign_issuers entries.
func (f *issuerFile) foreignIssuers() ([]issuer.ForeignIssuer, error) {
	out := make([]issuer.ForeignIssuer, 0, len(f.ForeignIssuers))
	for i, e := range f.ForeignIssuers {
		if e.ClientSecretFile == "" {
			return nil, fmt.Errorf("config file foreign_issuers[%d]: client_secret_file is required", i)
		}
		secret, err := os.ReadFile(e.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("config file foreign_issuers[%d]: read client secret: %w", i, err)
		}
		out = append(out, issuer.ForeignIssuer{ID: e.Issuer, IntrospectionURL: e.IntrospectionURL, ClientID: e.ClientID,
			ClientSecret: strings.TrimSpace(string(secret)), Audiences: e.Audiences, SubjectPrefix: e.SubjectPrefix})
	}
	return out, nil
}
