package issuer

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/token"
)

// The end_session_endpoint of OpenID Connect RP-Initiated Logout 1.0, and
// where its confirmation page posts.
const (
	pathLogout        = "/logout"
	pathLogoutConfirm = "/logout/confirm"
)

const (
	purposeLogout = "meshauth logout form v1"
	// logoutFormLifetime bounds the confirmation page's answer.
	logoutFormLifetime = 5 * time.Minute
)

// logoutForm is what the confirmation page carries, sealed.
type logoutForm struct {
	Binding     string `json:"bind"`
	RedirectURI string `json:"redirect_uri,omitempty"`
	State       string `json:"state,omitempty"`
	ExpiresAt   int64  `json:"exp"`
}

// handleLogout serves RP-Initiated Logout (§2). The browser's session ends
// at once when the request carries an ID Token of this issuer
// (id_token_hint, expired or not) for the signed-in user; otherwise the
// person is asked first, so that a link on another site cannot sign them
// out (§6). Then the browser goes to post_logout_redirect_uri with state,
// if the client registered that URI, or sees a page saying they are
// signed out. Requests that cannot be trusted get an error page and no
// redirect.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	params := r.URL.Query()
	if r.Method == http.MethodPost {
		form, err := readForm(w, r)
		if err != nil {
			s.showError(w, http.StatusBadRequest, "The sign-out request is malformed.")
			return
		}
		params = form
	}
	ctx := r.Context()
	var hint *token.Claims
	if raw := params.Get("id_token_hint"); raw != "" {
		c, err := s.hints.VerifyExpired([]byte(raw))
		if err != nil {
			s.showError(w, http.StatusBadRequest, "The sign-out request names an ID Token this server did not issue (id_token_hint), so it was refused.")
			return
		}
		hint = c
	}
	clientID := params.Get("client_id")
	if hint != nil {
		switch {
		case clientID == "" && len(hint.Audience) == 1:
			clientID = hint.Audience[0]
		case clientID != "" && !slices.Contains(hint.Audience, clientID):
			s.showError(w, http.StatusBadRequest, "The sign-out request names one application in client_id and another in its ID Token, so it was refused.")
			return
		}
	}
	state := params.Get("state")
	if len(state) > maxStateBytes {
		s.showError(w, http.StatusBadRequest, "The sign-out request's state is too long.")
		return
	}
	redirect := params.Get("post_logout_redirect_uri")
	if redirect != "" {
		c, err := s.logoutClient(r, clientID)
		if err != nil {
			s.writeLogoutError(w, r, err)
			return
		}
		if !slices.Contains(c.PostLogoutRedirectURIs, redirect) {
			s.showError(w, http.StatusBadRequest, "The application asked to send you to an address it has not registered for after signing out (post_logout_redirect_uri), so you were not sent there.")
			return
		}
	}
	var sess *store.Session
	if value, ok := s.parseSessionCookie(r); ok {
		got, err := s.store.GetSession(ctx, ReferenceTokenHash(value))
		switch {
		case err == nil:
			sess = got
		case !errors.Is(err, store.ErrNotFound):
			s.writeLogoutError(w, r, fmt.Errorf("look up session: %w", err))
			return
		}
	}
	if sess != nil && (hint == nil || hint.Subject != sess.UserID) {
		s.showLogoutConfirm(w, r, redirect, state)
		return
	}
	s.finishLogout(w, r, redirect, state)
}

// logoutClient returns the client a sign-out request names.
func (s *Server) logoutClient(r *http.Request, id string) (*store.Client, error) {
	if id == "" {
		return nil, &pageError{http.StatusBadRequest, "The application asked to send you back after signing out, but did not say who it is (client_id or id_token_hint), so you were not sent anywhere."}
	}
	c, err := s.store.GetClient(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &pageError{http.StatusBadRequest, "The application is not registered with this server (unknown client_id)."}
	}
	if err != nil {
		return nil, fmt.Errorf("look up client: %w", err)
	}
	return c, nil
}

// writeLogoutError answers a sign-out that failed with a page: a
// *pageError's, or for a store failure "temporarily unavailable".
func (s *Server) writeLogoutError(w http.ResponseWriter, r *http.Request, err error) {
	var pe *pageError
	if errors.As(err, &pe) {
		s.showError(w, pe.status, pe.message)
		return
	}
	s.remote.ErrorContext(r.Context(), "sign-out failed", "error", err)
	s.showError(w, http.StatusServiceUnavailable, "Signing out is temporarily unavailable. Please try again in a moment.")
}

// showLogoutConfirm asks the person whether to sign out.
func (s *Server) showLogoutConfirm(w http.ResponseWriter, r *http.Request, redirect, state string) {
	token, err := s.seal(purposeLogout, &logoutForm{
		Binding: s.browserBinding(w, r), RedirectURI: redirect, State: state, ExpiresAt: s.now().Add(logoutFormLifetime).Unix(),
	})
	if err != nil {
		s.writeLogoutError(w, r, err)
		return
	}
	s.render(w, http.StatusOK, redirect, &pageData{Kind: "logout", Title: "Sign out?", Action: s.prefix + pathLogoutConfirm, FormToken: token})
}

// handleLogoutConfirm answers the confirmation page: from this site's
// page, in the browser it was shown to, in time.
func (s *Server) handleLogoutConfirm(w http.ResponseWriter, r *http.Request) {
	if crossOrigin.Check(r) != nil {
		s.showError(w, http.StatusForbidden, "This form was submitted from another site, so it was refused.")
		return
	}
	form, err := readForm(w, r)
	if err != nil {
		s.showError(w, http.StatusBadRequest, "The form could not be read.")
		return
	}
	var lf logoutForm
	cookie, ok := s.csrfCookie(r)
	switch {
	case !ok:
		s.showError(w, http.StatusForbidden, "Your browser did not send this site's cookie, which protects the form from forgery.")
	case s.unseal(purposeLogout, form.Get("form_token"), &lf) != nil:
		s.showError(w, http.StatusBadRequest, "The form is incomplete or has been altered.")
	case subtle.ConstantTimeCompare([]byte(lf.Binding), []byte(ReferenceTokenHash(cookie))) != 1:
		s.showError(w, http.StatusForbidden, "This form was not issued to this browser, so it was refused (cross-site request forgery protection).")
	case !s.now().Before(time.Unix(lf.ExpiresAt, 0)):
		s.showError(w, http.StatusBadRequest, "The form has expired.")
	default:
		s.finishLogout(w, r, lf.RedirectURI, lf.State)
	}
}

// finishLogout ends the browser's session and sends it to redirect, with
// state, or shows that the person is signed out.
func (s *Server) finishLogout(w http.ResponseWriter, r *http.Request, redirect, state string) {
	if err := s.endSession(r.Context(), w, r); err != nil {
		s.writeLogoutError(w, r, err)
		return
	}
	if redirect == "" {
		s.render(w, http.StatusOK, "", &pageData{Kind: "signedout", Title: "Signed out"})
		return
	}
	if state != "" {
		redirect = withQuery(redirect, url.Values{"state": {state}})
	}
	redirectBrowser(w, r, redirect)
}
