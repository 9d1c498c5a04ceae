package issuer

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"

	"github.com/meshauth/meshauth/internal/discovery"
	"github.com/meshauth/meshauth/issuer/keys"
)

// signingAlgorithms are the client assertion algorithms package token
// accepts; asymmetric only (RFC 8725 §3.1).
var signingAlgorithms = []string{"ES256", "ES384", "ES512", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}

// responseSigningAlgorithms are the algorithms the issuer's own keys sign
// with (package issuer/keys), for RFC 9701 introspection responses as for tokens.
var responseSigningAlgorithms = []string{keys.ES256, keys.EdDSA, keys.RS256}

// introspectionAuthMethods are the client authentication methods of the
// token endpoint that prove a client's identity: all but none.
func introspectionAuthMethods() []string {
	return slices.DeleteFunc(slices.Clone(AuthMethodsSupported), func(m string) bool { return m == authNone })
}

// buildMetadata renders the RFC 8414 §2 metadata document once; it is static
// for the life of the server.
func (s *Server) buildMetadata() ([]byte, error) {
	md := map[string]any{
		"issuer":                                           s.issuerURL,
		"authorization_endpoint":                           s.endpoint(pathAuthorize),
		"token_endpoint":                                   s.endpoint(pathToken),
		"jwks_uri":                                         s.endpoint(pathJWKS),
		"registration_endpoint":                            s.endpoint(pathRegister),
		"grant_types_supported":                            GrantTypesSupported,
		"response_types_supported":                         []string{responseTypeCode},
		"response_modes_supported":                         []string{"query"},
		"code_challenge_methods_supported":                 []string{pkceS256},
		"token_endpoint_auth_methods_supported":            AuthMethodsSupported,
		"token_endpoint_auth_signing_alg_values_supported": signingAlgorithms,
		// RFC 9207 §3: every authorization response carries iss.
		"authorization_response_iss_parameter_supported": true,
		// RFC 8414 §2 (RFC 7662, RFC 7009 endpoints) and RFC 9701 §7. Public
		// clients may revoke their own tokens but not introspect; signed
		// introspection responses are never encrypted, so no
		// introspection_encryption_* entries.
		"introspection_endpoint":                                   s.endpoint(pathIntrospect),
		"introspection_endpoint_auth_methods_supported":            introspectionAuthMethods(),
		"introspection_endpoint_auth_signing_alg_values_supported": signingAlgorithms,
		"introspection_signing_alg_values_supported":               responseSigningAlgorithms,
		"revocation_endpoint":                                      s.endpoint(pathRevoke),
		"revocation_endpoint_auth_methods_supported":               AuthMethodsSupported,
		"revocation_endpoint_auth_signing_alg_values_supported":    signingAlgorithms,
	}
	// OpenID Connect Discovery 1.0 §3 (also registered as RFC 8414
	// metadata, so both documents carry them).
	maps.Copy(md, map[string]any{
		"userinfo_endpoint":                     s.endpoint(pathUserinfo),
		"end_session_endpoint":                  s.endpoint(pathLogout),
		"scopes_supported":                      []string{scopeOpenID, scopeProfile, scopeEmail},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": responseSigningAlgorithms,
		"claims_supported": []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "amr", "idp",
			"preferred_username", "name", "email", "email_verified"},
		"claim_types_supported":           []string{"normal"},
		"claims_parameter_supported":      false,
		"request_parameter_supported":     false,
		"request_uri_parameter_supported": false,
		"prompt_values_supported":         promptValues,
		"frontchannel_logout_supported":   false,
		"backchannel_logout_supported":    false,
	})
	if s.snapshot != nil {
		// meshauth's own member (RFC 8414 §2 allows extensions): where
		// verifiers get the keys and revocations they follow.
		md[discovery.MemberSnapshotURI] = s.endpoint(pathSnapshot)
	}
	b, err := json.MarshalIndent(md, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render metadata: %w", err)
	}
	return b, nil
}

func (s *Server) handleMetadata(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "public, max-age=3600")
	_, _ = w.Write(s.metadata)
}
