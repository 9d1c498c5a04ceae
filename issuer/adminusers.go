package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// pathAdminUsers lists the users (GET, a page at a time: ?after=NAME and
// ?limit=N); one user is pathAdminUsers/{name} (GET, DELETE).
const pathAdminUsers = "/admin/users"

// UserInfo is a person as the admin API shows them. The store holds only
// a hash of their password, which is never shown.
type UserInfo struct {
	// ID is the sub of their tokens.
	ID            string `json:"id"`
	Name          string `json:"name"`
	DisplayName   string `json:"display_name,omitempty"`
	Email         string `json:"email,omitempty"`
	EmailVerified bool   `json:"email_verified,omitempty"`
	Disabled      bool   `json:"disabled"`
	// Password tells whether they may sign in with a password; without
	// one, only through an upstream provider.
	Password   bool             `json:"password"`
	CreatedAt  time.Time        `json:"created_at"`
	Identities []LinkedIdentity `json:"identities"`
}

// LinkedIdentity is an upstream identity a user signs in as.
type LinkedIdentity struct {
	Issuer   string    `json:"issuer"`
	Subject  string    `json:"subject"`
	LinkedAt time.Time `json:"linked_at"`
}

// UserList is a page of users, ordered by name. Next, unless empty, is
// the after of the next page.
type UserList struct {
	Users []UserInfo `json:"users"`
	Next  string     `json:"next,omitempty"`
}

// Page sizes of ListUsers.
const (
	DefaultUserPage = 100
	MaxUserPage     = 1000
)

// ListUsers returns the page of at most limit users named after after
// (byte order; "" for the first), with their upstream identities.
func ListUsers(ctx context.Context, st store.Store, after string, limit int) (*UserList, error) {
	// One more than the page tells whether there is a next one.
	users, err := st.ListUsers(ctx, after, limit+1)
	if err != nil {
		return nil, err
	}
	list := &UserList{}
	if len(users) > limit {
		users = users[:limit]
		list.Next = users[limit-1].Name
	}
	list.Users = make([]UserInfo, 0, len(users))
	if err := describeUsers(ctx, st, users, func(info UserInfo) { list.Users = append(list.Users, info) }); err != nil {
		return nil, err
	}
	return list, nil
}

// DescribeUser returns the user named name with their upstream
// identities. A user who does not exist is an error wrapping
// store.ErrNotFound.
func DescribeUser(ctx context.Context, st store.Store, name string) (*UserInfo, error) {
	u, err := userNamed(ctx, st, name)
	if err != nil {
		return nil, err
	}
	var info UserInfo
	err = describeUsers(ctx, st, []*store.User{u}, func(i UserInfo) { info = i })
	return &info, err
}

// describeUsers gives each of users, with their identities, to add.
func describeUsers(ctx context.Context, st store.Store, users []*store.User, add func(UserInfo)) error {
	ids := make([]string, len(users))
	for i, u := range users {
		ids[i] = u.ID
	}
	identities, err := st.ListIdentities(ctx, ids)
	if err != nil {
		return err
	}
	byUser := map[string][]LinkedIdentity{}
	for _, id := range identities {
		byUser[id.UserID] = append(byUser[id.UserID], LinkedIdentity{Issuer: id.Issuer, Subject: id.Subject, LinkedAt: id.CreatedAt})
	}
	for _, u := range users {
		add(UserInfo{
			ID: u.ID, Name: u.Name, DisplayName: u.DisplayName, Email: u.Email, EmailVerified: u.EmailVerified,
			Disabled: u.Disabled, Password: u.PasswordHash != "", CreatedAt: u.CreatedAt,
			Identities: append([]LinkedIdentity{}, byUser[u.ID]...),
		})
	}
	return nil
}

func (s *Server) handleListUsers(w http.ResponseWriter, r *http.Request) {
	if !s.checkAdmin(w, r) {
		return
	}
	q := r.URL.Query()
	limit := DefaultUserPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxUserPage {
			s.writeError(w, r, errInvalidRequest(fmt.Sprintf("limit must be a number from 1 to %d", MaxUserPage)))
			return
		}
		limit = n
	}
	list, err := ListUsers(r.Context(), s.store, q.Get("after"), limit)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("list users: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) handleGetUser(w http.ResponseWriter, r *http.Request) {
	if !s.checkAdmin(w, r) {
		return
	}
	info, err := DescribeUser(r.Context(), s.store, r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, adminUserError(err))
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// handleDeleteUser removes a person: disabled first, so that they can
// neither sign in nor get tokens meanwhile; then every token and grant of
// theirs revoked (the revocation pushed to every verifier) and their
// sessions ended; then the user deleted with their upstream links. A step
// that fails leaves the user disabled, and the same request, sent again,
// finishes the job.
func (s *Server) handleDeleteUser(w http.ResponseWriter, r *http.Request) {
	if !s.checkAdmin(w, r) {
		return
	}
	ctx := r.Context()
	u, err := s.adminUser(ctx, r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	unfinished := func(step string, err error) {
		s.log.Error("user not deleted", "sub", u.ID, "step", step, "err", err)
		w.Header().Set("Retry-After", "1")
		s.writeError(w, r, &oauthError{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable",
			Description: fmt.Sprintf("the user %s could not be %s; if the user is disabled, they can neither sign in nor get tokens: delete the user again to finish", u.Name, step)})
	}
	if err := s.store.SetUserDisabled(ctx, u.ID, true); err != nil && !errors.Is(err, store.ErrNotFound) {
		unfinished("disabled", err)
		return
	}
	rev, err := s.revokeSubject(ctx, u.ID)
	if err != nil {
		unfinished("revoked", err)
		return
	}
	if err := s.store.DeleteUser(ctx, u.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		unfinished("deleted after their tokens were revoked", err)
		return
	}
	s.log.Info("user deleted and their tokens revoked", "sub", u.ID, "revocation", rev.ID)
	writeJSON(w, http.StatusOK, RevokeResponse{ID: rev.ID, Kind: "user", Value: u.Name, Subject: u.ID, RevokedAt: rev.RevokedAt, ExpiresAt: rev.ExpiresAt})
}

// adminUser returns the user named name, or the error to answer: 400 for
// a name no user can have, 404 for no such user, else the store's (503).
func (s *Server) adminUser(ctx context.Context, name string) (*store.User, error) {
	u, err := userNamed(ctx, s.store, name)
	if err != nil {
		return nil, adminUserError(err)
	}
	return u, nil
}

// adminUserError maps an error of userNamed to the admin API's answer.
func adminUserError(err error) error {
	switch {
	case errors.Is(err, errInvalidUserName):
		return errInvalidRequest(err.Error())
	case errors.Is(err, store.ErrNotFound):
		return &oauthError{Status: http.StatusNotFound, Code: "invalid_request", Description: err.Error()}
	}
	return err
}

// revokeSubject refuses every token whose sub is subject, issued until
// now, and ends what would issue new ones: the grants of that subject
// (with their refresh and reference tokens) and, for a person, their
// sign-in sessions. The revocation is stored first: if a later step fails,
// revoking again finishes the job.
func (s *Server) revokeSubject(ctx context.Context, subject string) (*store.Revocation, error) {
	rev, err := s.recordRevocation(ctx, store.RevokeSubject, subject)
	if err != nil {
		return nil, err
	}
	if _, err := s.store.RevokeUserGrants(ctx, subject, s.now().UTC()); err != nil {
		return nil, fmt.Errorf("revoke the subject's grants: %w", err)
	}
	// Otherwise the person's next authorization would get new tokens
	// without a password.
	if err := s.store.DeleteUserSessions(ctx, subject); err != nil {
		return nil, fmt.Errorf("end the user's sessions: %w", err)
	}
	return rev, nil
}
