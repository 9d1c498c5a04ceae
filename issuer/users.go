package issuer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// SetUserDisabled disables or enables the user named name. A disabled user
// cannot sign in, its grants issue no tokens, and its sign-in sessions
// end.
func SetUserDisabled(ctx context.Context, st store.Store, name string, disabled bool) (*store.User, error) {
	u, err := userNamed(ctx, st, name)
	if err != nil {
		return nil, err
	}
	if err := st.SetUserDisabled(ctx, u.ID, disabled); err != nil {
		return nil, fmt.Errorf("store user: %w", err)
	}
	if disabled {
		if err := st.DeleteUserSessions(ctx, u.ID); err != nil {
			return nil, fmt.Errorf("end the user's sessions: %w", err)
		}
	}
	u.Disabled = disabled
	return u, nil
}

// LinkUpstreamIdentity links the user named name to the identity subject
// at the upstream provider issuer, so that signing in there signs in as
// the user. A taken identity, or a user linked to another identity of that
// provider, is refused (store.ErrExists).
func LinkUpstreamIdentity(ctx context.Context, st store.Store, name, issuer, subject string, now time.Time) (*store.User, error) {
	u, err := userNamed(ctx, st, name)
	if err != nil {
		return nil, err
	}
	err = st.LinkIdentity(ctx, &store.Identity{Issuer: issuer, Subject: subject, UserID: u.ID, CreatedAt: now.UTC()})
	if errors.Is(err, store.ErrExists) {
		return nil, fmt.Errorf("that identity is linked already, or %s is linked to another identity at %s: %w", u.Name, issuer, store.ErrExists)
	}
	if err != nil {
		return nil, fmt.Errorf("link identity: %w", err)
	}
	return u, nil
}
