package keys

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/meshauth/meshauth/internal/broadcast"
	"github.com/meshauth/meshauth/issuer/store"
)

var errNotImplemented = errors.New("not implemented by the fake store")

// fakeStore is an in-memory KeyStore, with AddSigningKey's
// compare-and-swap.
type fakeStore struct {
	mu      sync.Mutex
	keys    map[string]*store.SigningKey
	seq     store.ChangeSeq
	changed broadcast.Signal
	// fail, if set, is returned by every signing-key method.
	fail error
	// beforeAdd, if set, runs at the start of AddSigningKey, without mu.
	beforeAdd func()
}

func newFakeStore() *fakeStore {
	return &fakeStore{keys: make(map[string]*store.SigningKey), seq: store.ChangeSeq{Seq: 1, KeysSeq: 1}}
}

// keysChangedLocked numbers a change of the keys.
func (s *fakeStore) keysChangedLocked() {
	s.seq.Seq++
	s.seq.KeysSeq = s.seq.Seq
	s.changed.Notify()
}

func (s *fakeStore) ChangeSeq(context.Context) (store.ChangeSeq, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return store.ChangeSeq{}, s.fail
	}
	return s.seq, nil
}

func (s *fakeStore) ListSigningKeysAt(context.Context) ([]*store.SigningKey, store.ChangeSeq, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, store.ChangeSeq{}, s.fail
	}
	return s.sortedLocked(), s.seq, nil
}

func (s *fakeStore) Changed() <-chan struct{} { return s.changed.C() }

func (s *fakeStore) setFail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

func (s *fakeStore) AddSigningKey(ctx context.Context, k *store.SigningKey, ifNewestID string) error {
	if s.beforeAdd != nil {
		s.beforeAdd()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	newest := ""
	if sorted := s.sortedLocked(); len(sorted) > 0 {
		newest = sorted[len(sorted)-1].ID
	}
	if newest != ifNewestID {
		return store.ErrConflict
	}
	if _, ok := s.keys[k.ID]; ok {
		return store.ErrExists
	}
	s.keys[k.ID] = copyKey(k)
	s.keysChangedLocked()
	return nil
}

func (s *fakeStore) ListSigningKeys(ctx context.Context) ([]*store.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	return s.sortedLocked(), nil
}

func (s *fakeStore) DeleteSigningKey(ctx context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	if _, ok := s.keys[id]; ok {
		delete(s.keys, id)
		s.keysChangedLocked()
	}
	return nil
}

// sortedLocked returns copies of the keys, oldest first, ties by id.
func (s *fakeStore) sortedLocked() []*store.SigningKey {
	out := make([]*store.SigningKey, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, copyKey(k))
	}
	slices.SortFunc(out, func(a, b *store.SigningKey) int {
		return cmp.Or(a.ActivateAt.Compare(b.ActivateAt), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// put stores k unconditionally, for setting up a test.
func (s *fakeStore) put(k *store.SigningKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[k.ID] = copyKey(k)
	s.keysChangedLocked()
}

func (s *fakeStore) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, k := range s.sortedLocked() {
		ids = append(ids, k.ID)
	}
	return ids
}

func copyKey(k *store.SigningKey) *store.SigningKey {
	c := *k
	c.PublicJWK = slices.Clone(k.PublicJWK)
	c.EncryptedPrivateKey = slices.Clone(k.EncryptedPrivateKey)
	return &c
}

var _ KeyStore = (*fakeStore)(nil)
