package token

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// fuzzValidTokens returns valid tokens of varied shapes. Their signing
// inputs depend only on fixed keys and the fixed clock, so that they are
// the same in every run and in every fuzzing worker.
func fuzzValidTokens() [][]byte {
	k := fixture()
	var toks [][]byte
	for _, alg := range algNames[1:] {
		toks = append(toks, validToken(alg))
	}
	now := testNow.Unix()
	for _, c := range []string{
		claimsJSON(`"act":{"sub":"orders","act":{"sub":"edge"}},"may_act":{"sub":"payments"}`),
		fmt.Sprintf(`{"iss":"https:\/\/issuer.example","aud":["x","orders"],"exp":%d.5,"nbf":%d,"sub":"\u00e9\ud83d\ude00","n":[1,-2.5e3,true,false,null,{}]}`, now+60, now),
	} {
		toks = append(toks, compact(header("ES256"), c, "ES256", k.es256))
	}
	toks = append(toks, compact(`{"alg":"EdDSA","typ":"application/AT+JWT","kid":"key-EdDSA","x5t":"abc"}`, claimsJSON(""), "EdDSA", k.ed))
	return toks
}

// signingInput returns the text a token's signature covers.
func signingInput(tok []byte) string {
	if i := bytes.LastIndexByte(tok, '.'); i >= 0 {
		return string(tok[:i])
	}
	return ""
}

func FuzzVerify(f *testing.F) {
	v := testVerifier(f, testPolicy())
	signed := map[string]bool{}
	for _, tok := range fuzzValidTokens() {
		if _, err := v.Verify(tok); err != nil {
			f.Fatalf("seed refused: %v", err)
		}
		signed[signingInput(tok)] = true
		f.Add(tok)
	}
	for _, tt := range hostileTokens() {
		f.Add(tt.tok)
	}
	f.Fuzz(func(t *testing.T, tok []byte) {
		c, err := v.Verify(tok)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Reason.String() == "unknown" || c != nil {
				t.Fatalf("bad refusal: %v, %v", c, err)
			}
			if len(tok) > 16 && strings.Contains(err.Error(), string(tok)) {
				t.Fatal("error quotes the token")
			}
			return
		}
		// Accepted: it must be a token we signed, verified again here by a
		// separate, simpler path through encoding/json and the stdlib.
		if !signed[signingInput(tok)] {
			t.Fatalf("accepted a token never signed: %q", tok)
		}
		if err := independentVerify(tok); err != nil {
			t.Fatalf("accepted, but %v: %q", err, tok)
		}
		if !bytes.Equal(c.Raw, mustDecode(t, strings.Split(string(tok), ".")[1])) {
			t.Fatal("Raw is not the payload")
		}
	})
}

func mustDecode(t *testing.T, s string) []byte {
	b, err := enc.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// independentVerify checks a token the slow, obvious way.
func independentVerify(tok []byte) error {
	parts := strings.Split(string(tok), ".")
	if len(parts) != 3 {
		return errors.New("not three segments")
	}
	var dec [3][]byte
	for i, p := range parts {
		b, err := enc.DecodeString(p)
		if err != nil || enc.EncodeToString(b) != p {
			return fmt.Errorf("segment %d not canonical base64url", i)
		}
		dec[i] = b
	}
	var h struct{ Alg, Kid, Typ string }
	if err := json.Unmarshal(dec[0], &h); err != nil {
		return err
	}
	if h.Kid != kidOf(h.Alg) {
		return fmt.Errorf("kid %q for alg %q", h.Kid, h.Alg)
	}
	pub := fixture().signer(h.Alg).Public()
	msg := []byte(parts[0] + "." + parts[1])
	var ok bool
	if h.Alg == "EdDSA" {
		ok = ed25519.Verify(pub.(ed25519.PublicKey), msg, dec[2])
	} else {
		hash := map[string]crypto.Hash{"256": crypto.SHA256, "384": crypto.SHA384, "512": crypto.SHA512}[h.Alg[2:]]
		hh := hash.New()
		hh.Write(msg)
		digest := hh.Sum(nil)
		switch h.Alg[:2] {
		case "ES":
			n := len(dec[2]) / 2
			r, s := new(big.Int).SetBytes(dec[2][:n]), new(big.Int).SetBytes(dec[2][n:])
			ok = ecdsa.Verify(pub.(*ecdsa.PublicKey), digest, r, s)
		case "RS":
			ok = rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), hash, digest, dec[2]) == nil
		case "PS":
			ok = rsa.VerifyPSS(pub.(*rsa.PublicKey), hash, digest, dec[2], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
		}
	}
	if !ok {
		return errors.New("signature does not verify")
	}
	var claims struct {
		Iss string
		Exp float64
	}
	if err := json.Unmarshal(dec[1], &claims); err != nil {
		return err
	}
	if claims.Iss != testIssuer || float64(testNow.Unix()) >= claims.Exp+DefaultLeeway.Seconds() {
		return errors.New("claims not acceptable")
	}
	return nil
}

// FuzzClaims compares the claims reader with a reference built on
// encoding/json plus the strictness encoding/json lacks.
func FuzzClaims(f *testing.F) {
	for _, tok := range fuzzValidTokens() {
		f.Add(mustDecodeSeed(strings.Split(string(tok), ".")[1]))
	}
	for _, s := range []string{
		`{}`, `[]`, `{"exp":1,"exp":2}`, `{"a":{"b":1,"b":2}}`, `{"\u0061":1,"a":2}`, `{"aud":["a",null]}`,
		`{"exp":"1"}`, `{"exp":1e400}`, `{"exp":-0.0000001}`, `{"exp":9007199254740992}`, `{"sub":"\ud800"}`,
		`{"sub":"\udc00\ud800"}`, "{\"sub\":\"\xed\xa0\x80\"}", `{"act":[]}`, `{"x":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`,
		`{"scope":"a b","client_id":"c","jti":"d","nbf":1,"iat":2.5}`, ` {"iss" : "x" } `, `{"iss":"x"}x`,
		`{"m":{` + manyMembers(40) + `}}`, `{"m":{` + manyMembers(40) + `,"k1":0}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var c Claims
		err := decodeClaims(raw, &c)
		want, refErr := referenceClaims(raw)
		switch {
		case err != nil && refErr != nil:
			return
		case err != nil:
			t.Fatalf("refused claims the reference accepts: %v: %q", err, raw)
		case refErr != nil:
			t.Fatalf("accepted claims the reference refuses: %v: %q", refErr, raw)
		}
		if c.Issuer != want.Issuer || c.Subject != want.Subject || c.ID != want.ID || c.ClientID != want.ClientID ||
			c.Scope != want.Scope || !equalStrings(c.Audience, want.Audience) || c.seen != want.seen ||
			!bytes.Equal(c.Act, want.Act) || !bytes.Equal(c.MayAct, want.MayAct) || !bytes.Equal(c.Raw, raw) {
			t.Fatalf("claims differ:\n got %+v\nwant %+v\n%q", c, want, raw)
		}
		for _, d := range [][2]time.Time{{c.ExpiresAt, want.ExpiresAt}, {c.NotBefore, want.NotBefore}, {c.IssuedAt, want.IssuedAt}} {
			if diff := d[0].Sub(d[1]); diff < -time.Microsecond || diff > time.Microsecond {
				t.Fatalf("date %v, want %v: %q", d[0], d[1], raw)
			}
		}
	})
}

func mustDecodeSeed(s string) []byte {
	b, err := enc.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// referenceClaims decodes a claims set with encoding/json, after checking
// separately what encoding/json tolerates: invalid UTF-8, unpaired
// surrogates, duplicate names, excessive depth.
func referenceClaims(raw []byte) (Claims, error) {
	c := Claims{Raw: raw}
	if !utf8.Valid(raw) {
		return c, errors.New("invalid UTF-8")
	}
	if !json.Valid(raw) {
		return c, errors.New("invalid JSON")
	}
	if err := checkSurrogates(raw); err != nil {
		return c, err
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber() // numbers beyond float64 are valid JSON
	tok, _ := d.Token()
	if tok != json.Delim('{') {
		return c, errors.New("not an object")
	}
	if err := checkValue(d, tok, 1); err != nil {
		return c, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return c, err
	}
	str := func(name string, dst *string) error {
		v, ok := m[name]
		if !ok {
			return nil
		}
		if v[0] != '"' {
			return fmt.Errorf("%s not a string", name)
		}
		return json.Unmarshal(v, dst)
	}
	date := func(name string, dst *time.Time, bit claimSet) error {
		v, ok := m[name]
		if !ok {
			return nil
		}
		c.seen |= bit
		if v[0] != '-' && (v[0] < '0' || v[0] > '9') {
			return fmt.Errorf("%s not a number", name)
		}
		var f float64
		if err := json.Unmarshal(v, &f); err != nil {
			return err
		}
		if math.Abs(f) >= 1<<53 {
			return fmt.Errorf("%s out of range", name)
		}
		sec := math.Floor(f)
		*dst = time.Unix(int64(sec), int64((f-sec)*1e9))
		return nil
	}
	object := func(name string, dst *json.RawMessage) error {
		v, ok := m[name]
		if !ok {
			return nil
		}
		if v[0] != '{' {
			return fmt.Errorf("%s not an object", name)
		}
		*dst = v
		return nil
	}
	if _, ok := m["iss"]; ok {
		c.seen |= claimIss
	}
	errs := []error{
		str("iss", &c.Issuer), str("sub", &c.Subject), str("jti", &c.ID), str("client_id", &c.ClientID), str("scope", &c.Scope),
		date("exp", &c.ExpiresAt, claimExp), date("nbf", &c.NotBefore, claimNbf), date("iat", &c.IssuedAt, claimIat),
		object("act", &c.Act), object("may_act", &c.MayAct),
	}
	if v, ok := m["aud"]; ok {
		c.seen |= claimAud
		var elems []json.RawMessage
		switch v[0] {
		case '"':
			elems = []json.RawMessage{v}
		case '[':
			if err := json.Unmarshal(v, &elems); err != nil {
				return c, err
			}
		default:
			return c, errors.New("aud not a string or array")
		}
		for _, e := range elems {
			var s string
			if e[0] != '"' {
				return c, errors.New("aud element not a string")
			}
			if err := json.Unmarshal(e, &s); err != nil {
				return c, err
			}
			c.Audience = append(c.Audience, s)
		}
	}
	return c, errors.Join(errs...)
}

// checkValue reads the rest of the value that starts with tok, a container
// at the given nesting level, refusing repeated names and nesting beyond
// maxDepth.
func checkValue(d *json.Decoder, tok json.Token, level int) error {
	if tok != json.Delim('{') && tok != json.Delim('[') {
		return nil
	}
	if level > maxDepth {
		return errors.New("too deep")
	}
	seen := map[string]bool{}
	for d.More() {
		if tok == json.Delim('{') {
			name, err := d.Token()
			if err != nil {
				return err
			}
			if seen[name.(string)] {
				return fmt.Errorf("duplicate %q", name)
			}
			seen[name.(string)] = true
		}
		v, err := d.Token()
		if err != nil {
			return err
		}
		if err := checkValue(d, v, level+1); err != nil {
			return err
		}
	}
	_, err := d.Token() // the closing delimiter
	return err
}

// checkSurrogates refuses \u escapes of unpaired UTF-16 surrogates, which
// encoding/json silently turns into U+FFFD.
func checkSurrogates(raw []byte) error {
	inString := false
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '"':
			inString = !inString
		case c == '\\' && inString:
			i++
			if raw[i] != 'u' {
				continue
			}
			var r rune
			fmt.Sscanf(string(raw[i+1:i+5]), "%04x", &r)
			i += 4
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return errors.New("unpaired low surrogate")
			case r >= 0xD800 && r <= 0xDBFF:
				var r2 rune
				if i+6 >= len(raw) || raw[i+1] != '\\' || raw[i+2] != 'u' {
					return errors.New("unpaired high surrogate")
				}
				fmt.Sscanf(string(raw[i+3:i+7]), "%04x", &r2)
				if r2 < 0xDC00 || r2 > 0xDFFF {
					return errors.New("unpaired high surrogate")
				}
				i += 6
			}
		}
	}
	return nil
}

func FuzzParseJWKS(f *testing.F) {
	k := fixture()
	f.Add([]byte(jwks(
		jwkJSON(k.es256.Public(), map[string]any{"kid": "p256", "use": "sig"}),
		jwkJSON(k.es384.Public(), map[string]any{"kid": "p384", "alg": "ES384"}),
		jwkJSON(k.es512.Public(), map[string]any{"kid": "p521", "key_ops": []string{"verify"}}),
		jwkJSON(k.ed.Public(), map[string]any{"kid": "ed", "alg": "EdDSA"}),
		jwkJSON(k.rsa.Public(), map[string]any{"kid": "rsa"}),
		jwkJSON(k.rsa.Public(), map[string]any{"kid": "enc", "use": "enc"}),
		`{"kty":"OKP","crv":"X25519","kid":"x","x":"AA"}`,
	)))
	f.Add([]byte(jwks(jwkJSON(k.es256.Public(), map[string]any{"alg": "ES384"}))))
	f.Add([]byte(jwks(jwkJSON(k.rsa1024.Public(), nil))))
	f.Add([]byte(jwks(`{"kty":"oct","k":"c2VjcmV0"}`)))
	f.Add([]byte(jwks(jwkJSON(k.es256.Public(), map[string]any{"d": "AQAB"}))))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"\u0041A","y":"AA"}],"x":[1,{"y":null}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := ParseJWKS(data)
		if err != nil {
			if keys != nil {
				t.Fatal("keys with an error")
			}
			return
		}
		if !json.Valid(data) || !utf8.Valid(data) {
			t.Fatalf("accepted invalid JSON: %q", data)
		}
		ids := map[string]bool{}
		for _, key := range keys {
			if err := key.check(); err != nil {
				t.Fatal(err)
			}
			if key.ID != "" && ids[key.ID] {
				t.Fatalf("duplicate kid %q", key.ID)
			}
			ids[key.ID] = true
		}
	})
}

// TestReferenceClaims makes sure the fuzzing reference itself refuses
// what it should, or FuzzClaims would prove nothing.
func TestReferenceClaims(t *testing.T) {
	for _, s := range []string{`{"a":1,"a":2}`, `{"a":[{"b":1,"b":2}]}`, `{"a":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`, `{"a":"\ud800"}`, "{\"a\":\"\xff\"}"} {
		if _, err := referenceClaims([]byte(s)); err == nil {
			t.Errorf("reference accepted %q", s)
		}
	}
	if _, err := referenceClaims([]byte(`{"a":[1,{"b":[]},[{"c":{}}]],"b":{"a":1},"c":` + strings.Repeat("[", 63) + strings.Repeat("]", 63) + `}`)); err != nil {
		t.Errorf("reference refused valid claims: %v", err)
	}
}

// FuzzSignedToken fuzzes the JSON of the header and claims of tokens that
// are correctly signed, so that the fuzzer reaches every check after the
// signature, and compares the verdict with a reference policy built on
// referenceClaims.
func FuzzSignedToken(f *testing.F) {
	v := testVerifier(f, testPolicy())
	for _, tok := range fuzzValidTokens() {
		parts := strings.Split(string(tok), ".")
		hdr := mustDecodeSeed(parts[0])
		f.Add(bytes.ReplaceAll(bytes.ReplaceAll(hdr, []byte(`ES256`), []byte(`EdDSA`)), []byte(`RS256`), []byte(`EdDSA`)), mustDecodeSeed(parts[1]))
	}
	for _, tt := range hostileTokens() {
		parts := strings.Split(string(tt.tok), ".")
		if len(parts) != 3 {
			continue
		}
		hdr, err1 := enc.DecodeString(parts[0])
		claims, err2 := enc.DecodeString(parts[1])
		if err1 == nil && err2 == nil {
			f.Add(bytes.ReplaceAll(hdr, []byte(`"ES256"`), []byte(`"EdDSA"`)), claims)
		}
	}
	ed := fixture().ed
	f.Fuzz(func(t *testing.T, header, claims []byte) {
		tok := compact(string(header), string(claims), "EdDSA", ed)
		_, err := v.Verify(tok)
		refErr := referenceVerdict(header, claims)
		if err == nil && refErr != nil {
			t.Fatalf("accepted, reference refuses: %v\nheader %q\nclaims %q", refErr, header, claims)
		}
		if err != nil && refErr == nil && len(tok) <= DefaultMaxSize {
			t.Fatalf("refused (%v), reference accepts\nheader %q\nclaims %q", err, header, claims)
		}
	})
}

// referenceVerdict applies the policy of testPolicy, for a token signed by
// the Ed25519 test key, the obvious way.
func referenceVerdict(header, claims []byte) error {
	h, err := referenceClaims(header) // the same JSON strictness
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(h.Raw, &m); err != nil {
		return err
	}
	str := func(name string) (string, bool, error) {
		v, ok := m[name]
		if !ok {
			return "", false, nil
		}
		var s string
		if v[0] != '"' {
			return "", true, fmt.Errorf("%s not a string", name)
		}
		return s, true, json.Unmarshal(v, &s)
	}
	for _, name := range []string{"crit", "jku", "jwk", "x5u", "x5c"} {
		if _, ok := m[name]; ok {
			return fmt.Errorf("%s present", name)
		}
	}
	if b, ok := m["b64"]; ok && string(b) != "true" {
		return errors.New("b64 not true")
	}
	alg, _, err := str("alg")
	if err != nil || alg != "EdDSA" {
		return fmt.Errorf("alg %q, %v", alg, err)
	}
	typ, ok, err := str("typ")
	if err != nil || !ok {
		return fmt.Errorf("typ missing or %v", err)
	}
	if len(typ) > 12 && strings.EqualFold(typ[:12], "application/") && !strings.Contains(typ[12:], "/") {
		typ = typ[12:]
	}
	if !strings.EqualFold(typ, "at+jwt") {
		return fmt.Errorf("typ %q", typ)
	}
	if kid, _, err := str("kid"); err != nil || kid != "key-EdDSA" {
		return fmt.Errorf("kid %q, %v", kid, err)
	}
	c, err := referenceClaims(claims)
	if err != nil {
		return err
	}
	now, leeway := testNow, DefaultLeeway
	switch {
	case c.seen&claimIss == 0 || c.Issuer != testIssuer:
		return errors.New("iss")
	case !slices.Contains(c.Audience, "orders") && !slices.Contains(c.Audience, "payments"):
		return errors.New("aud")
	case c.seen&claimExp == 0 || !now.Before(c.ExpiresAt.Add(leeway)):
		return errors.New("exp")
	case c.seen&claimNbf != 0 && c.NotBefore.After(now.Add(leeway)):
		return errors.New("nbf")
	case c.seen&claimIat != 0 && c.IssuedAt.After(now.Add(leeway)):
		return errors.New("iat")
	}
	return nil
}
