package demo

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/meshauth/meshauth/rp"
)

// maxPending bounds the sign-ins in progress the demo remembers.
const maxPending = 1024

// RelyingParty is a web application that signs people in through an
// OpenID provider, meshauth's issuer: its page shows who signed in, the
// claims of the ID Token and the userinfo endpoint's answer, and signs out
// at the provider too (RP-Initiated Logout). It keeps everything in
// memory; it is a demo.
type RelyingParty struct {
	provider  *rp.Provider
	issuerURL string // meshauth's: /userinfo and /logout are below it
	selfURL   string
	client    *http.Client

	mu       sync.Mutex
	pending  map[string]rp.Login   // sign-ins in progress, by state
	sessions map[string]*rpSession // by session cookie value
}

// rpSession is a person signed in, as the page shows them.
type rpSession struct {
	ID       *rp.IDToken
	Claims   string // the ID Token's claims, indented
	Userinfo string // the userinfo answer, indented
}

// NewRelyingParty returns the demo application at selfURL, a client of the
// meshauth issuer at issuerURL through provider.
func NewRelyingParty(provider *rp.Provider, issuerURL, selfURL string) *RelyingParty {
	return &RelyingParty{provider: provider, issuerURL: issuerURL, selfURL: strings.TrimSuffix(selfURL, "/"), client: &http.Client{},
		pending: map[string]rp.Login{}, sessions: map[string]*rpSession{}}
}

var rpPage = template.Must(template.New("rp").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>meshauth demo app</title></head>
<body style="font:16px/1.5 system-ui,sans-serif;max-width:720px;margin:40px auto;padding:0 16px">
<h1>meshauth demo app</h1>
{{if .Error}}<p style="color:#991b1b">{{.Error}}</p>{{end}}
{{with .Session}}
<p>Signed in as <strong>{{.ID.Subject}}</strong>{{with .ID.PreferredUsername}} ({{.}}){{end}} through {{.ID.Issuer}}.</p>
<h2>ID Token claims</h2><pre>{{.Claims}}</pre>
<h2>Userinfo</h2><pre>{{.Userinfo}}</pre>
<p><a href="/logout">Sign out</a> (here and at the issuer)</p>
{{else}}
<p>Nobody is signed in.</p>
<p><a href="/login">Sign in with meshauth</a></p>
{{end}}
</body></html>
`))

func (d *RelyingParty) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/":
		d.home(w, r, "")
	case "/login":
		d.login(w, r)
	case "/callback":
		d.callback(w, r)
	case "/logout":
		d.logout(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (d *RelyingParty) home(w http.ResponseWriter, r *http.Request, problem string) {
	data := struct {
		Error   string
		Session *rpSession
	}{problem, d.session(r)}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = rpPage.Execute(w, data)
}

func (d *RelyingParty) session(r *http.Request) *rpSession {
	c, err := r.Cookie("demo-rp-session")
	if err != nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sessions[c.Value]
}

func (d *RelyingParty) login(w http.ResponseWriter, r *http.Request) {
	l := rp.NewLogin()
	target, err := d.provider.AuthCodeURL(r.Context(), l, nil)
	if err != nil {
		d.home(w, r, "The issuer cannot be reached: "+err.Error())
		return
	}
	d.mu.Lock()
	if len(d.pending) >= maxPending {
		clear(d.pending)
	}
	d.pending[l.State] = l
	d.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: "demo-rp-state", Value: l.State, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: 600})
	http.Redirect(w, r, target, http.StatusFound)
}

func (d *RelyingParty) callback(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie("demo-rp-state")
	d.mu.Lock()
	var l rp.Login
	var ok bool
	if err == nil {
		l, ok = d.pending[c.Value]
		delete(d.pending, c.Value) // one attempt per sign-in
	}
	d.mu.Unlock()
	if !ok {
		d.home(w, r, "This sign-in was not started here, or was completed already.")
		return
	}
	id, err := d.provider.Exchange(r.Context(), l, r.URL.Query(), nil)
	if err != nil {
		d.home(w, r, "Sign-in refused: "+err.Error())
		return
	}
	s := &rpSession{ID: id, Claims: indentedClaims(id.Raw), Userinfo: d.userinfo(r, id.AccessToken)}
	value := rand.Text()
	d.mu.Lock()
	d.sessions[value] = s
	d.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: "demo-rp-session", Value: value, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/", http.StatusFound)
}

// userinfo asks the issuer's userinfo endpoint about the access token.
func (d *RelyingParty) userinfo(r *http.Request, accessToken string) string {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, d.issuerURL+"/userinfo", nil)
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := d.client.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return indent(body)
}

// logout ends the session here and sends the browser to the issuer's
// end_session_endpoint with the ID Token as hint, to come back here.
func (d *RelyingParty) logout(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie("demo-rp-session")
	var s *rpSession
	if err == nil {
		d.mu.Lock()
		s = d.sessions[c.Value]
		delete(d.sessions, c.Value)
		d.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: "demo-rp-session", Path: "/", MaxAge: -1})
	if s == nil {
		http.Redirect(w, r, "/", http.StatusFound)
		return
	}
	q := url.Values{"id_token_hint": {s.ID.Raw}, "post_logout_redirect_uri": {d.selfURL + "/"}, "state": {rand.Text()}}
	http.Redirect(w, r, d.issuerURL+"/logout?"+q.Encode(), http.StatusFound)
}

// indentedClaims returns the claims of a JWS, indented.
func indentedClaims(jws string) string {
	parts := strings.Split(jws, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	return indent(payload)
}

func indent(b []byte) string {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return string(b)
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	return string(out)
}
