package issuer

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"

	"github.com/meshauth/meshauth/issuer/store"
)

// Argon2id parameters of new password hashes: OWASP's recommended
// configuration (m=19 MiB, t=2, p=1). RFC 9106's second option (64 MiB,
// t=3) costs an offline attacker more, but costs the issuer three times the
// memory for every login attempt anyone can make; with the login backoff
// and hashSlots bounding concurrent hashes, the smaller figure keeps a
// burst of logins from exhausting a replica. The parameters are stored in
// each hash, so hashes made with other parameters keep verifying.
const (
	argonMemoryKiB = 19456
	argonTime      = 2
	argonThreads   = 1
	argonSaltLen   = 16
	argonKeyLen    = 32
)

// Bounds on the parameters a stored hash may ask for, so that a corrupt or
// hostile record cannot make a login allocate gigabytes.
const (
	maxArgonMemoryKiB = 1 << 20 // 1 GiB
	maxArgonTime      = 16
	maxArgonThreads   = 16
)

// Password length rules: the minimum is above NIST SP 800-63B's 8 for
// passwords people choose, since the login page is reachable from the
// Internet; the maximum only bounds the work of hashing attacker-sent input.
const (
	minPasswordChars = 12
	maxPasswordBytes = 1024
)

// hashSlots bounds concurrent password hashing: each hash holds
// argonMemoryKiB of memory for its duration.
var hashSlots = make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))

// HashPassword returns the argon2id hash of password in PHC string format
// ($argon2id$v=19$m=...,t=...,p=...$salt$hash, unpadded standard base64).
func HashPassword(password string) string {
	salt := make([]byte, argonSaltLen)
	_, _ = rand.Read(salt)
	key := argonKey(password, salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	enc := base64.RawStdEncoding.EncodeToString
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemoryKiB, argonTime, argonThreads, enc(salt), enc(key))
}

// argonKey derives an argon2id key, waiting for a hashing slot.
func argonKey(password string, salt []byte, t, m uint32, p uint8, keyLen uint32) []byte {
	hashSlots <- struct{}{}
	defer func() { <-hashSlots }()
	return argon2.IDKey([]byte(password), salt, t, m, p, keyLen)
}

// phcHash is a parsed argon2id PHC string.
type phcHash struct {
	memory, time uint32
	threads      uint8
	salt, key    []byte
}

var phcPattern = regexp.MustCompile(`^\$argon2id\$v=(\d+)\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$`)

// parsePHC reads an argon2id PHC string, refusing other versions and
// parameters outside the bounds above.
func parsePHC(s string) (*phcHash, error) {
	m := phcPattern.FindStringSubmatch(s)
	if m == nil {
		return nil, errors.New("password hash is not an argon2id PHC string")
	}
	if m[1] != strconv.Itoa(argon2.Version) {
		return nil, fmt.Errorf("password hash has argon2 version %s, want %d", m[1], argon2.Version)
	}
	memory, err1 := strconv.ParseUint(m[2], 10, 32)
	passes, err2 := strconv.ParseUint(m[3], 10, 32)
	threads, err3 := strconv.ParseUint(m[4], 10, 8)
	if err := errors.Join(err1, err2, err3); err != nil ||
		memory < 8*threads || memory > maxArgonMemoryKiB || passes < 1 || passes > maxArgonTime || threads < 1 || threads > maxArgonThreads {
		return nil, errors.New("password hash has argon2 parameters out of bounds")
	}
	salt, err := base64.RawStdEncoding.DecodeString(m[5])
	if err != nil || len(salt) < 8 {
		return nil, errors.New("password hash has a bad salt")
	}
	key, err := base64.RawStdEncoding.DecodeString(m[6])
	if err != nil || len(key) < 16 || len(key) > 64 {
		return nil, errors.New("password hash has a bad key")
	}
	return &phcHash{memory: uint32(memory), time: uint32(passes), threads: uint8(threads), salt: salt, key: key}, nil
}

// passwordMatches reports, comparing in constant time, whether password
// hashes to the PHC string stored. A stored hash it cannot read never
// matches.
func passwordMatches(stored, password string) bool {
	h, err := parsePHC(stored)
	if err != nil || len(password) > maxPasswordBytes {
		return false
	}
	key := argonKey(password, h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(key, h.key) == 1
}

// dummyPasswordHash is verified against when a login names no user, so an
// unknown name costs the same work as a wrong password.
var dummyPasswordHash = HashPassword("meshauth-no-such-user")

// CheckPassword refuses passwords too short to resist guessing or too long
// to hash cheaply.
func CheckPassword(password string) error {
	if n := utf8.RuneCountInString(password); n < minPasswordChars {
		return fmt.Errorf("password too weak: it has %d characters, at least %d are needed (a passphrase of a few random words is easy to remember)", n, minPasswordChars)
	}
	if len(password) > maxPasswordBytes {
		return fmt.Errorf("password longer than %d bytes", maxPasswordBytes)
	}
	if !utf8.ValidString(password) {
		return errors.New("password is not valid UTF-8")
	}
	return nil
}

var userNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._@+-]{0,127}$`)

// NormalizeUserName returns the stored form of a login name: trimmed and
// lower-cased, so that "Alice" and "alice " are one account. It refuses
// names outside letters, digits and . _ @ + -.
func NormalizeUserName(name string) (string, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if !userNamePattern.MatchString(n) {
		return "", errInvalidUserName
	}
	return n, nil
}

// errInvalidUserName is a name no user can have.
var errInvalidUserName = errors.New("user name must be 1-128 characters of letters, digits, '.', '_', '@', '+' or '-', starting with a letter or digit")

// noUserError says that no user has a name; it wraps store.ErrNotFound.
type noUserError struct{ name string }

func (e *noUserError) Error() string { return fmt.Sprintf("no user named %q", e.name) }
func (e *noUserError) Unwrap() error { return store.ErrNotFound }

// CreateUser stores a new user with an argon2id hash of password and
// returns it. Errors say what was wrong with the name or password; a taken
// name wraps store.ErrExists.
func CreateUser(ctx context.Context, st store.Users, name, password string, now time.Time) (*store.User, error) {
	return CreateUserWithProfile(ctx, st, name, password, Profile{}, now)
}

// Profile is what a user record tells clients about the person, as the
// OpenID Connect claims name, email and email_verified.
type Profile struct {
	DisplayName   string
	Email         string
	EmailVerified bool
}

// maxDisplayName bounds a display name.
const maxDisplayName = 200

// CreateUserWithProfile is CreateUser with the person's profile. The email
// is stored lower-cased.
func CreateUserWithProfile(ctx context.Context, st store.Users, name, password string, p Profile, now time.Time) (*store.User, error) {
	n, err := NormalizeUserName(name)
	if err != nil {
		return nil, err
	}
	if err := CheckPassword(password); err != nil {
		return nil, err
	}
	email := normalizeEmail(p.Email)
	switch {
	case p.Email != "" && email == "":
		return nil, fmt.Errorf("email %q is not an email address", truncate(p.Email, 64))
	case p.EmailVerified && email == "":
		return nil, errors.New("an email can be verified only if there is one")
	case len(p.DisplayName) > maxDisplayName || !utf8.ValidString(p.DisplayName) || strings.ContainsFunc(p.DisplayName, unicode.IsControl):
		return nil, fmt.Errorf("display name must be at most %d bytes of text", maxDisplayName)
	}
	u := &store.User{ID: randomID(), Name: n, PasswordHash: HashPassword(password), CreatedAt: now.UTC(),
		DisplayName: p.DisplayName, Email: email, EmailVerified: p.EmailVerified}
	if err := st.CreateUser(ctx, u); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, fmt.Errorf("user %q: %w", n, store.ErrExists)
		}
		return nil, fmt.Errorf("store user: %w", err)
	}
	return u, nil
}

// SetUserPassword replaces the password of the user named name.
func SetUserPassword(ctx context.Context, st store.Users, name, password string) (*store.User, error) {
	if err := CheckPassword(password); err != nil {
		return nil, err
	}
	u, err := userNamed(ctx, st, name)
	if err != nil {
		return nil, err
	}
	if err := st.UpdateUserPassword(ctx, u.ID, HashPassword(password)); err != nil {
		return nil, fmt.Errorf("store password: %w", err)
	}
	return u, nil
}

// userNamed returns the user named name, which it normalises; an unknown
// name is an error that says so.
func userNamed(ctx context.Context, st store.Users, name string) (*store.User, error) {
	n, err := NormalizeUserName(name)
	if err != nil {
		return nil, err
	}
	u, err := st.GetUserByName(ctx, n)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &noUserError{n}
	}
	if err != nil {
		return nil, fmt.Errorf("look up user: %w", err)
	}
	return u, nil
}
