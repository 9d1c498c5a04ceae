// Package storeurl opens the store named by a --store value: file:DIR for
// the embedded store, postgres:// or postgresql:// for PostgreSQL.
package storeurl

import (
	"context"
	"fmt"
	"strings"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/filestore"
	"github.com/meshauth/meshauth/issuer/store/pgstore"
)

// Open opens the store that raw names.
func Open(ctx context.Context, raw string) (store.Store, error) {
	switch {
	case strings.HasPrefix(raw, "file:"):
		dir := strings.TrimPrefix(raw, "file:")
		if dir == "" {
			return nil, fmt.Errorf("store %q: file: needs a directory, as in file:/var/lib/meshauth", raw)
		}
		st, err := filestore.Open(dir)
		if err != nil {
			return nil, err
		}
		return st, nil
	case strings.HasPrefix(raw, "postgres://"), strings.HasPrefix(raw, "postgresql://"):
		st, err := pgstore.Open(ctx, raw)
		if err != nil {
			return nil, err
		}
		return st, nil
	case raw == "":
		return nil, fmt.Errorf("no store given: use --store file:DIR or --store postgres://...")
	default:
		// The value may hold a password: name only its scheme.
		scheme, _, _ := strings.Cut(raw, ":")
		return nil, fmt.Errorf("store scheme %q is not supported: use file:DIR or postgres://...", scheme)
	}
}
