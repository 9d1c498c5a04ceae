package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/meshauth/meshauth/issuer"
)

// issuerFile is the structured part of the issuer's config file.
type issuerFile struct {
	ForeignIssuers []foreignIssuerEntry `yaml:"foreign_issuers"`
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
