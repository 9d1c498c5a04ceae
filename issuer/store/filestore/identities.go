package filestore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	bolt "go.etcd.io/bbolt"
)

// Identities are stored under their issuer (length-prefixed) and subject;
// identity_users has a key per link made of the user's id and the issuer
// (both length-prefixed), which makes a user's link to an issuer unique.
var (
	bucketIdentities    = []byte("identities")
	bucketIdentityUsers = []byte("identity_users")
)

func init() {
	allBuckets = append(allBuckets, bucketIdentities, bucketIdentityUsers)
}

type identityRecord struct {
	Issuer    string    `json:"iss"`
	Subject   string    `json:"sub"`
	UserID    string    `json:"user_id"`
	CreatedAt time.Time `json:"created_at"`
}

func identityKey(issuer, subject string) string {
	return string(appendLengthPrefixed(nil, issuer)) + subject
}

func identityUserKey(userID, issuer string) []byte {
	return appendLengthPrefixed(appendLengthPrefixed(nil, userID), issuer)
}

// linkIdentity stores id, refusing a taken identity or a second link of
// the user to the same issuer.
func linkIdentity(tx *bolt.Tx, id *store.Identity) error {
	b, byUser := tx.Bucket(bucketIdentities), tx.Bucket(bucketIdentityUsers)
	key, userKey := identityKey(id.Issuer, id.Subject), identityUserKey(id.UserID, id.Issuer)
	if b.Get([]byte(key)) != nil {
		return fmt.Errorf("identity linked already: %w", store.ErrExists)
	}
	if byUser.Get(userKey) != nil {
		return fmt.Errorf("user linked to that issuer already: %w", store.ErrExists)
	}
	if err := byUser.Put(userKey, []byte(key)); err != nil {
		return err
	}
	r := identityRecord(*id)
	r.CreatedAt = r.CreatedAt.UTC()
	return put(b, key, r)
}

func (s *Store) LinkIdentity(ctx context.Context, id *store.Identity) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		if tx.Bucket(bucketUsers).Get([]byte(id.UserID)) == nil {
			return fmt.Errorf("user %q: %w", id.UserID, store.ErrNotFound)
		}
		return linkIdentity(tx, id)
	})
	if err != nil {
		return fmt.Errorf("link identity at %q to user %q: %w", id.Issuer, id.UserID, err)
	}
	return nil
}

func (s *Store) CreateUserWithIdentity(ctx context.Context, u *store.User, id *store.Identity) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		if err := createUser(tx, u); err != nil {
			return err
		}
		return linkIdentity(tx, id)
	})
	if err != nil {
		return fmt.Errorf("create user %q linked to an identity at %q: %w", u.ID, id.Issuer, err)
	}
	return nil
}

func (s *Store) GetIdentity(ctx context.Context, issuer, subject string) (*store.Identity, error) {
	var r identityRecord
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return get(tx.Bucket(bucketIdentities), identityKey(issuer, subject), &r)
	})
	if err != nil {
		return nil, fmt.Errorf("get identity at %q: %w", issuer, err)
	}
	id := store.Identity(r)
	return &id, nil
}

// FindUsersByEmail reads every user: it runs only when someone signs in
// through an upstream provider for the first time, and only where the
// operator lets a verified email find an account.
func (s *Store) FindUsersByEmail(ctx context.Context, email string) ([]*store.User, error) {
	var users []*store.User
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var r userRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode user %q: %w", k, err)
			}
			if r.Email == email && email != "" {
				u := store.User(r)
				users = append(users, &u)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("find users by email: %w", err)
	}
	return users, nil
}

func (s *Store) SetUserDisabled(ctx context.Context, id string, disabled bool) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		var r userRecord
		if err := get(b, id, &r); err != nil {
			return err
		}
		r.Disabled = disabled
		return put(b, id, r)
	})
	if err != nil {
		return fmt.Errorf("set disabled of user %q: %w", id, err)
	}
	return nil
}
