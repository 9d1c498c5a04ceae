package filestore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	bolt "go.etcd.io/bbolt"
)

// ListUsers walks user_names, which bbolt keeps in byte order.
func (s *Store) ListUsers(ctx context.Context, after string, limit int) ([]*store.User, error) {
	var users []*store.User
	err := s.view(ctx, func(tx *bolt.Tx) error {
		byID := tx.Bucket(bucketUsers)
		c := tx.Bucket(bucketUserNames).Cursor()
		k, id := c.Seek([]byte(after))
		if k != nil && string(k) == after {
			k, id = c.Next()
		}
		for ; k != nil && len(users) < limit; k, id = c.Next() {
			var r userRecord
			if err := get(byID, string(id), &r); err != nil {
				return fmt.Errorf("user %q named %q: %w", id, k, err)
			}
			u := store.User(r)
			users = append(users, &u)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return users, nil
}

// ListIdentities finds each user's links through identity_users.
func (s *Store) ListIdentities(ctx context.Context, userIDs []string) ([]*store.Identity, error) {
	var ids []*store.Identity
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIdentities)
		for _, userID := range userIDs {
			prefix := appendLengthPrefixed(nil, userID)
			c := tx.Bucket(bucketIdentityUsers).Cursor()
			for k, key := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, key = c.Next() {
				var r identityRecord
				if err := get(b, string(key), &r); err != nil {
					return fmt.Errorf("identity of user %q: %w", userID, err)
				}
				id := store.Identity(r)
				ids = append(ids, &id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list identities: %w", err)
	}
	// The index orders a user's issuers by length first.
	slices.SortFunc(ids, func(a, b *store.Identity) int {
		if c := strings.Compare(a.UserID, b.UserID); c != 0 {
			return c
		}
		return strings.Compare(a.Issuer, b.Issuer)
	})
	return ids, nil
}

func (s *Store) DeleteUser(ctx context.Context, id string) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		users := tx.Bucket(bucketUsers)
		var r userRecord
		if err := get(users, id, &r); err != nil {
			return err
		}
		if err := tx.Bucket(bucketUserNames).Delete([]byte(r.Name)); err != nil {
			return err
		}
		if err := users.Delete([]byte(id)); err != nil {
			return err
		}
		prefix := appendLengthPrefixed(nil, id)
		for _, index := range []struct {
			bucket []byte
			remove func(k, v []byte) error
		}{
			{bucketIdentityUsers, func(k, v []byte) error {
				if err := tx.Bucket(bucketIdentities).Delete(v); err != nil {
					return err
				}
				return tx.Bucket(bucketIdentityUsers).Delete(k)
			}},
			{bucketSessionUsers, func(k, _ []byte) error { return deleteSession(tx, k[len(prefix):]) }},
		} {
			var keys, values [][]byte
			c := tx.Bucket(index.bucket).Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				keys, values = append(keys, bytes.Clone(k)), append(values, bytes.Clone(v))
			}
			for i := range keys {
				if err := index.remove(keys[i], values[i]); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete user %q: %w", id, err)
	}
	return nil
}

// RevokeUserGrants reads every grant: it runs only when an administrator
// revokes a person, and the embedded store serves one node.
func (s *Store) RevokeUserGrants(ctx context.Context, subject string, at time.Time) (int, error) {
	n := 0
	err := s.update(ctx, func(tx *bolt.Tx) error {
		n = 0
		var grants []grantRecord
		err := tx.Bucket(bucketGrants).ForEach(func(k, v []byte) error {
			var r grantRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode grant %q: %w", k, err)
			}
			if r.Subject == subject {
				grants = append(grants, r)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i := range grants {
			revoked, err := revokeGrant(tx, &grants[i], at)
			if err != nil {
				return err
			}
			if revoked {
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("revoke grants of %q: %w", subject, err)
	}
	return n, nil
}
