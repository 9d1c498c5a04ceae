package issuer

import (
	"context"
	"fmt"

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
