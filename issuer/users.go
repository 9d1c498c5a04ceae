package issuer

import (
	"context"
	"errors"
	"fmt"

	"github.com/meshauth/meshauth/issuer/store"
)

// SetUserDisabled disables or enables the user named name. A disabled user
// cannot sign in, its grants issue no tokens, and its sign-in sessions
// end.
func SetUserDisabled(ctx context.Context, st store.Store, name string, disabled bool) (*store.User, error) {
	n, err := NormalizeUserName(name)
	if err != nil {
		return nil, err
	}
	u, err := st.GetUserByName(ctx, n)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("no user named %q", n)
	}
	if err != nil {
		return nil, fmt.Errorf("look up user: %w", err)
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
