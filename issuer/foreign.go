package issuer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/meshauth/meshauth/internal/loopback"
	"github.com/meshauth/meshauth/internal/strictjson"
	"github.com/meshauth/meshauth/token"
)

// ForeignIssuer is another authorization server, say another vendor's,
// whose opaque access tokens an edge gateway may dereference through this
// issuer. The edge names it in the extension parameter subject_issuer of
// its token exchange; this issuer then introspects the token at the
// foreign server itself (RFC 7662), with its own credentials there, and
// mints the internal JWT from the answer. The trust decision stays here:
// nothing the edge asserts about the token is believed.
type ForeignIssuer struct {
	// ID is the foreign issuer's identifier: the subject_issuer value, and
	// the "iss" its introspection answers must carry if they carry one.
	ID string
	// IntrospectionURL is its RFC 7662 endpoint: https, or http on a
	// loopback host.
	IntrospectionURL string
	// ClientID and ClientSecret are this issuer's credentials at the
	// foreign server, sent with HTTP Basic (RFC 6749 §2.3.1).
	ClientID, ClientSecret string
	// Audiences are this issuer's services that the foreign tokens may be
	// dereferenced for. The foreign "aud" is in the foreign server's
	// namespace and is not read. Required.
	Audiences []string
	// SubjectPrefix is put before the foreign sub and client_id in the
	// internal JWT, so that a foreign subject cannot pass for a local one
	// of the same name; default ID followed by "#".
	SubjectPrefix string
	// HTTPClient sends the introspection requests; nil means one with a
	// 5 s timeout. Redirects are never followed.
	HTTPClient *http.Client
}

// Bounds of a foreign introspection.
const (
	foreignTimeout   = 5 * time.Second
	maxForeignAnswer = 64 << 10
)

// errForeignInactive: the foreign server says the token is not active, or
// its answer does not describe a token that can be dereferenced.
var errForeignInactive = errors.New("the foreign issuer does not vouch for the token")

// foreignIssuer is a ForeignIssuer ready for use.
type foreignIssuer struct {
	ForeignIssuer
	basic string // the Authorization field value: holds the secret, never logged
}

func newForeignIssuers(cfg []ForeignIssuer, own string) (map[string]*foreignIssuer, error) {
	out := make(map[string]*foreignIssuer, len(cfg))
	for _, f := range cfg {
		u, err := url.Parse(f.IntrospectionURL)
		switch {
		case f.ID == "" || f.ID == own:
			return nil, fmt.Errorf("foreign issuer %q: an id other than this issuer's is required", f.ID)
		case out[f.ID] != nil:
			return nil, fmt.Errorf("foreign issuer %q configured twice", f.ID)
		case err != nil || u.Host == "" || u.User != nil || u.Fragment != "" ||
			(u.Scheme != "https" && (u.Scheme != "http" || !loopback.Host(u.Hostname()))):
			return nil, fmt.Errorf("foreign issuer %q: introspection URL %q must be https (http only on a loopback host)", f.ID, f.IntrospectionURL)
		case f.ClientID == "" || f.ClientSecret == "":
			return nil, fmt.Errorf("foreign issuer %q: client id and secret are required", f.ID)
		case len(f.Audiences) == 0:
			return nil, fmt.Errorf("foreign issuer %q: no audiences: name the services its tokens may be dereferenced for", f.ID)
		}
		fi := &foreignIssuer{ForeignIssuer: f}
		if fi.SubjectPrefix == "" {
			fi.SubjectPrefix = f.ID + "#"
		}
		hc := http.Client{Timeout: foreignTimeout}
		if f.HTTPClient != nil {
			hc = *f.HTTPClient
		}
		hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		fi.HTTPClient = &hc
		// RFC 6749 §2.3.1: the id and secret are form-encoded, then joined.
		fi.basic = "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(f.ClientID)+":"+url.QueryEscape(f.ClientSecret)))
		out[f.ID] = fi
	}
	return out, nil
}

// introspect asks the foreign server about value and returns the claims of
// the internal JWT's subject token. A refusal is errForeignInactive; a
// server that cannot be asked, another error (answered 503).
func (f *foreignIssuer) introspect(ctx context.Context, value string, now time.Time) (*token.Claims, error) {
	ctx, cancel := context.WithTimeout(ctx, foreignTimeout)
	defer cancel()
	body := url.Values{"token": {value}, "token_type_hint": {"access_token"}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.IntrospectionURL, strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("foreign issuer %s: %w", f.ID, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", f.basic)
	resp, err := f.HTTPClient.Do(req)
	if err != nil {
		// A *url.Error names the URL only: neither the token nor the secret.
		return nil, fmt.Errorf("foreign issuer %s: introspection: %w", f.ID, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxForeignAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("foreign issuer %s: reading the introspection answer: %w", f.ID, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("foreign issuer %s: introspection answered %d", f.ID, resp.StatusCode)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil, fmt.Errorf("foreign issuer %s: introspection answer is not application/json", f.ID)
	}
	if len(answer) > maxForeignAnswer {
		return nil, fmt.Errorf("foreign issuer %s: introspection answer over %d bytes", f.ID, maxForeignAnswer)
	}
	return f.claims(answer, now)
}

// claims turns a foreign introspection answer into the claims of a subject
// token, or refuses it: inactive; no sub or exp (an internal JWT needs a
// subject and must not outlive the token); expired; another issuer's; or
// a token type other than a bearer access token (a DPoP-bound or refresh
// token must not become a bearer JWT). Member names are matched exactly,
// and one given twice is refused: which one a parser keeps differs.
func (f *foreignIssuer) claims(answer []byte, now time.Time) (*token.Claims, error) {
	a, err := readIntrospectionAnswer(answer)
	if err != nil {
		return nil, fmt.Errorf("foreign issuer %s: introspection answer: %w", f.ID, err)
	}
	switch {
	case !a.Active, a.Subject == "", a.ExpiresAt == nil:
		return nil, errForeignInactive
	case a.Issuer != "" && a.Issuer != f.ID:
		return nil, errForeignInactive
	case a.TokenType != "" && !strings.EqualFold(a.TokenType, "bearer") && a.TokenType != "access_token":
		return nil, errForeignInactive
	}
	exp := time.Unix(*a.ExpiresAt, 0)
	if !now.Before(exp) {
		return nil, errForeignInactive
	}
	c := &token.Claims{
		Issuer: f.ID, Subject: f.SubjectPrefix + a.Subject, Audience: slices.Clone(f.Audiences),
		ExpiresAt: exp, IssuedAt: now, Scope: a.Scope,
	}
	if a.IssuedAt != nil {
		c.IssuedAt = time.Unix(*a.IssuedAt, 0)
	}
	if a.ClientID != "" {
		c.ClientID = f.SubjectPrefix + a.ClientID
	}
	return c, nil
}

// introspectionAnswer is what claims reads of an RFC 7662 §2.2 answer.
type introspectionAnswer struct {
	Active    bool
	Subject   string
	ClientID  string
	Scope     string
	Issuer    string
	TokenType string
	ExpiresAt *int64
	IssuedAt  *int64
}

// readIntrospectionAnswer reads the members of an RFC 7662 §2.2 answer that
// claims uses, each of the JSON type RFC 7662 gives it.
func readIntrospectionAnswer(answer []byte) (*introspectionAnswer, error) {
	var a introspectionAnswer
	members := []struct {
		name string
		dst  any
	}{
		{"active", &a.Active}, {"sub", &a.Subject}, {"client_id", &a.ClientID}, {"scope", &a.Scope},
		{"iss", &a.Issuer}, {"token_type", &a.TokenType}, {"exp", &a.ExpiresAt}, {"iat", &a.IssuedAt},
	}
	names := make([]string, len(members))
	for i, m := range members {
		names[i] = m.name
	}
	values, err := strictjson.Members(answer, names...)
	if err != nil {
		return nil, err
	}
	for i, m := range members {
		if values[i] == nil {
			continue
		}
		if err := json.Unmarshal(values[i], m.dst); err != nil {
			return nil, fmt.Errorf("member %s: %w", m.name, err)
		}
	}
	return &a, nil
}
