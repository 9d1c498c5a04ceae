package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// recordJSON is a record as encoding/json reads it: the independent reader
// the encoder is checked against.
type recordJSON struct {
	Seq        uint64    `json:"seq"`
	Prev       string    `json:"prev"`
	Hash       string    `json:"hash"`
	Time       time.Time `json:"time"`
	Type       string    `json:"type"`
	Outcome    string    `json:"outcome"`
	Grant      string    `json:"grant"`
	ActorKind  string    `json:"actor_kind"`
	Actor      string    `json:"actor"`
	Subject    string    `json:"subject"`
	Audience   string    `json:"audience"`
	Scope      string    `json:"scope"`
	Operation  string    `json:"operation"`
	Reason     string    `json:"reason"`
	JTIHash    string    `json:"jti_hash"`
	RemoteAddr string    `json:"remote_addr"`
	RequestID  string    `json:"request_id"`
	TraceID    string    `json:"trace_id"`
	Truncated  bool      `json:"truncated"`
}

// decodeRecord decodes a record's line strictly: every member known.
func decodeRecord(t *testing.T, line []byte) recordJSON {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var r recordJSON
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("record %s: %v", line, err)
	}
	return r
}

// encodeOne returns the line of ev as the first record of a chain.
func encodeOne(ev *Event) []byte {
	line, _ := Link{}.appendRecord(nil, appendBody(nil, ev))
	return line
}

func jtiHash(jti string) string {
	sum := sha256.Sum256([]byte(jti))
	return hex.EncodeToString(sum[:])
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

const aJWT = "eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"

func TestEncodeEvent(t *testing.T) {
	long := strings.Repeat("é", 200) // 400 bytes
	for _, tt := range []struct {
		name string
		ev   Event
		want recordJSON
	}{
		{"minimal", Event{Time: t0, Type: KeyRotated},
			recordJSON{Type: "key.rotated", Outcome: "success"}},
		{"every field", Event{Time: t0.In(time.FixedZone("x", 3600)), Type: TokenExchanged, Outcome: Failure,
			Grant: "urn:ietf:params:oauth:grant-type:token-exchange", Actor: Client("orders"), Subject: "alice",
			Audience: "payments", Scope: "payments.charge", Operation: "POST /token", Reason: "invalid_target: audience not allowed",
			JTI: "jti-1", Origin: Origin{RemoteAddr: netip.MustParseAddr("10.0.0.7"), RequestID: "req-42", TraceID: TraceID{0: 0xab, 15: 0xcd}}},
			recordJSON{Type: "token.exchanged", Outcome: "failure", Grant: "urn:ietf:params:oauth:grant-type:token-exchange",
				ActorKind: "client", Actor: "orders", Subject: "alice", Audience: "payments", Scope: "payments.charge",
				Operation: "POST /token", Reason: "invalid_target: audience not allowed", JTIHash: jtiHash("jti-1"),
				RemoteAddr: "10.0.0.7", RequestID: "req-42", TraceID: "ab0000000000000000000000000000cd"}},
		{"admin actor", Event{Time: t0, Type: AdminCall, Actor: Admin(), Operation: "GET /admin/clients"},
			recordJSON{Type: "admin.call", Outcome: "success", ActorKind: "admin", Operation: "GET /admin/clients"}},
		{"a token where a name goes is redacted", Event{Time: t0, Type: TokenIntrospected, Subject: aJWT, Reason: "bad token " + aJWT + " given"},
			recordJSON{Type: "token.introspected", Outcome: "success", Subject: "[redacted]", Reason: "[redacted]"}},
		{"the jti is written hashed, whatever it holds", Event{Time: t0, Type: TokenRevoked, JTI: aJWT},
			recordJSON{Type: "token.revoked", Outcome: "success", JTIHash: jtiHash(aJWT)}},
		{"long values are cut at a character", Event{Time: t0, Type: UserCreated, Actor: User(long), Reason: strings.Repeat("r", 2000)},
			recordJSON{Type: "user.created", Outcome: "success", ActorKind: "user", Actor: strings.Repeat("é", 128), Reason: strings.Repeat("r", maxText), Truncated: true}},
		{"control characters and bad UTF-8", Event{Time: t0, Type: SignIn, Outcome: Failure, Actor: User("a\x1b[31m\"b\\\n\u2028\xff")},
			recordJSON{Type: "user.sign_in", Outcome: "failure", ActorKind: "user", Actor: "a\x1b[31m\"b\\\n\u2028\ufffd"}},
		{"a request id that is not visible ASCII is left out", Event{Time: t0, Type: ClientAuthentication, Origin: Origin{RequestID: "a b"}},
			recordJSON{Type: "client.authentication", Outcome: "success"}},
		{"unknown type and actor kind", Event{Time: t0, Type: typeEnd, Actor: Actor{Kind: 9, ID: "x"}},
			recordJSON{Type: "unknown", Outcome: "success", Actor: "x"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			line := encodeOne(&tt.ev)
			if bytes.ContainsAny(line, "\n\r") || !json.Valid(line) {
				t.Fatalf("not one line of JSON: %q", line)
			}
			got := decodeRecord(t, line)
			tt.want.Seq, tt.want.Prev, tt.want.Hash, tt.want.Time = 1, strings.Repeat("0", 64), got.Hash, t0
			if !got.Time.Equal(t0) {
				t.Errorf("time %v, want %v", got.Time, t0)
			}
			got.Time = t0
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if tt.ev.JTI != "" && bytes.Contains(line, []byte(tt.ev.JTI)) {
				t.Errorf("the jti itself is written: %s", line)
			}
		})
	}
}

func TestRequestOrigin(t *testing.T) {
	const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, tt := range []struct {
		name, remote, requestID, traceparent string
		want                                 Origin
	}{
		{"IPv4 with port", "192.0.2.1:1234", "", "", Origin{RemoteAddr: netip.MustParseAddr("192.0.2.1")}},
		{"IPv6 with port", "[2001:db8::1]:443", "", "", Origin{RemoteAddr: netip.MustParseAddr("2001:db8::1")}},
		{"IPv4-mapped", "[::ffff:192.0.2.1]:1", "", "", Origin{RemoteAddr: netip.MustParseAddr("192.0.2.1")}},
		{"no port", "192.0.2.1", "", "", Origin{RemoteAddr: netip.MustParseAddr("192.0.2.1")}},
		{"not an address", "pipe", "r1", "", Origin{RequestID: "r1"}},
		{"traceparent", "", "", "00-" + trace + "-00f067aa0ba902b7-01", Origin{TraceID: mustTraceID(trace)}},
		{"future version, longer", "", "", "cc-" + trace + "-00f067aa0ba902b7-01-what-the-future-holds", Origin{TraceID: mustTraceID(trace)}},
		{"version 00 with more", "", "", "00-" + trace + "-00f067aa0ba902b7-01-x", Origin{}},
		{"version ff", "", "", "ff-" + trace + "-00f067aa0ba902b7-01", Origin{}},
		{"upper-case hex", "", "", "00-" + strings.ToUpper(trace) + "-00f067aa0ba902b7-01", Origin{}},
		{"bad parent id", "", "", "00-" + trace + "-00f067aa0ba902bx-01", Origin{}},
		{"bad flags", "", "", "00-" + trace + "-00f067aa0ba902b7-0g", Origin{}},
		{"short", "", "", "00-" + trace, Origin{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/token", nil)
			r.RemoteAddr = tt.remote
			if tt.requestID != "" {
				r.Header.Set("X-Request-Id", tt.requestID)
			}
			if tt.traceparent != "" {
				r.Header.Set("traceparent", tt.traceparent)
			}
			if got := RequestOrigin(r); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func mustTraceID(s string) (id TraceID) {
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		panic(err)
	}
	return id
}

// FuzzAppendString checks the JSON string encoder against encoding/json:
// both must read back the same string.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\" backslash\\ nl\n", "\x00\x1f\x7f", "\u2028\u2029", "\xff\xfe", "é\xc3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc := appendString(nil, s)
		var got string
		if err := json.Unmarshal(enc, &got); err != nil {
			t.Fatalf("%q encodes to %q, not JSON: %v", s, enc, err)
		}
		want, _ := json.Marshal(s)
		var wantS string
		if err := json.Unmarshal(want, &wantS); err != nil {
			t.Fatal(err)
		}
		if got != wantS {
			t.Fatalf("%q reads back as %q, encoding/json's as %q", s, got, wantS)
		}
		if bytes.ContainsAny(enc, "\n\r") {
			t.Fatalf("%q encodes to more than one line: %q", s, enc)
		}
	})
}
