package keys

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
)

func newTestSealer(t testing.TB) *Sealer {
	t.Helper()
	s, err := NewSealer(bytes.Repeat([]byte{7}, KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewSealerSize(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		_, err := NewSealer(make([]byte, n))
		if err == nil {
			t.Fatalf("NewSealer(%d bytes) succeeded", n)
		}
		want := "key-encryption key must be 32 bytes, base64-encoded; got " + strconv.Itoa(n) + " bytes"
		if err.Error() != want {
			t.Errorf("NewSealer(%d bytes) error %q, want %q", n, err, want)
		}
	}
}

func TestParseKEK(t *testing.T) {
	kek := make([]byte, KEKSize)
	rand.Read(kek)
	// Make sure both URL-unsafe characters appear in the standard encoding.
	kek[0], kek[1], kek[2] = 0xfb, 0xff, 0xbf

	for _, tc := range []struct {
		name, in string
		wantErr  string // "" for success
	}{
		{"std padded", base64.StdEncoding.EncodeToString(kek), ""},
		{"std raw", base64.RawStdEncoding.EncodeToString(kek), ""},
		{"url padded", base64.URLEncoding.EncodeToString(kek), ""},
		{"url raw", base64.RawURLEncoding.EncodeToString(kek), ""},
		{"trailing newline", base64.StdEncoding.EncodeToString(kek) + "\n", ""},
		{"short", base64.StdEncoding.EncodeToString(kek[:31]), "got 31 bytes"},
		{"long", base64.RawURLEncoding.EncodeToString(append(kek, 1)), "got 33 bytes"},
		{"empty", "", "got 0 bytes"},
		{"hex", strings.Repeat("ab", 32) + "!", "not valid base64"},
		{"mixed alphabets", "+-" + base64.RawStdEncoding.EncodeToString(kek)[2:], "not valid base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKEK(tc.in)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, kek) {
					t.Fatal("decoded KEK differs")
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "key-encryption key must be 32 bytes, base64-encoded; ") || !strings.Contains(msg, tc.wantErr) {
				t.Errorf("error %q, want it to say %q", msg, tc.wantErr)
			}
			if strings.TrimSpace(tc.in) != "" && strings.Contains(msg, strings.TrimSpace(tc.in)[:8]) {
				t.Errorf("error %q echoes the input", msg)
			}
		})
	}
}

func TestSealOpen(t *testing.T) {
	s := newTestSealer(t)
	plaintext := []byte("private key bytes")
	sealed := s.Seal(plaintext, "kid-1")
	if sealed[0] != sealVersion {
		t.Fatalf("version byte %d", sealed[0])
	}
	if bytes.Contains(sealed, plaintext) {
		t.Fatal("sealed bytes contain the plaintext")
	}
	if again := s.Seal(plaintext, "kid-1"); bytes.Equal(again, sealed) {
		t.Fatal("two seals are equal: nonce reused")
	}
	got, err := s.Open(sealed, "kid-1")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plaintext) {
		t.Fatal("round trip changed the plaintext")
	}

	other, err := NewSealer(bytes.Repeat([]byte{8}, KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	const wrong = "decrypt signing key kid-1: wrong key-encryption key or corrupted data"
	for _, tc := range []struct {
		name   string
		s      *Sealer
		sealed []byte
		kid    string
		want   string
	}{
		{"wrong KEK", other, sealed, "kid-1", wrong},
		{"other kid", s, sealed, "kid-2", "decrypt signing key kid-2: wrong key-encryption key or corrupted data"},
		{"tampered", s, flipped, "kid-1", wrong},
		{"truncated", s, sealed[:10], "kid-1", wrong},
		{"empty", s, nil, "kid-1", "decrypt signing key kid-1: empty sealed key"},
		{"future version", s, append([]byte{2}, sealed[1:]...), "kid-1", "decrypt signing key kid-1: unknown sealed-key format version 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.s.Open(tc.sealed, tc.kid)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Open error %v, want %q", err, tc.want)
			}
		})
	}
}
