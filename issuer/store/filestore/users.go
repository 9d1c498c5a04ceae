package filestore

import (
	"context"
	"fmt"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	bolt "go.etcd.io/bbolt"
)

type userRecord struct {
	ID            string    `json:"id"`
	Name          string    `json:"name"`
	PasswordHash  string    `json:"password_hash"`
	CreatedAt     time.Time `json:"created_at"`
	DisplayName   string    `json:"display_name,omitempty"`
	Email         string    `json:"email,omitempty"`
	EmailVerified bool      `json:"email_verified,omitempty"`
	Disabled      bool      `json:"disabled,omitempty"`
}

// CreateUser stores the user under its id and its name in user_names, so
// that both are unique and a login finds the user without a scan.
func (s *Store) CreateUser(ctx context.Context, u *store.User) error {
	err := s.update(ctx, func(tx *bolt.Tx) error { return createUser(tx, u) })
	if err != nil {
		return fmt.Errorf("create user %q: %w", u.ID, err)
	}
	return nil
}

func createUser(tx *bolt.Tx, u *store.User) error {
	r := userRecord(*u)
	r.CreatedAt = r.CreatedAt.UTC()
	users, names := tx.Bucket(bucketUsers), tx.Bucket(bucketUserNames)
	if users.Get([]byte(u.ID)) != nil {
		return fmt.Errorf("id taken: %w", store.ErrExists)
	}
	if names.Get([]byte(u.Name)) != nil {
		return fmt.Errorf("name %q taken: %w", u.Name, store.ErrExists)
	}
	if err := names.Put([]byte(u.Name), []byte(u.ID)); err != nil {
		return err
	}
	return put(users, u.ID, r)
}

func (s *Store) GetUserByName(ctx context.Context, name string) (*store.User, error) {
	var r userRecord
	err := s.view(ctx, func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketUserNames).Get([]byte(name))
		if id == nil {
			return store.ErrNotFound
		}
		return get(tx.Bucket(bucketUsers), string(id), &r)
	})
	if err != nil {
		return nil, fmt.Errorf("get user named %q: %w", name, err)
	}
	u := store.User(r)
	return &u, nil
}

func (s *Store) GetUser(ctx context.Context, id string) (*store.User, error) {
	var r userRecord
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return get(tx.Bucket(bucketUsers), id, &r)
	})
	if err != nil {
		return nil, fmt.Errorf("get user %q: %w", id, err)
	}
	u := store.User(r)
	return &u, nil
}

func (s *Store) UpdateUserPassword(ctx context.Context, id, passwordHash string) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		var r userRecord
		if err := get(b, id, &r); err != nil {
			return err
		}
		r.PasswordHash = passwordHash
		return put(b, id, r)
	})
	if err != nil {
		return fmt.Errorf("update password of user %q: %w", id, err)
	}
	return nil
}
