package proxy

import (
	"net"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzForwardedFields sets the forwarded fields of requests with any
// forwarded fields and Host of their own, trusted or not: what is set is
// always a valid field value, an untrusted caller's chain never survives,
// and a trusted one's ends with the peer.
func FuzzForwardedFields(f *testing.F) {
	for _, s := range [][3]string{
		{"6.6.6.6", "for=6.6.6.6", "svc"},
		{"a, b,,c", `for="[::1]";proto=https`, "svc:8000"},
		{"", "", ""},
		{" ", "\t", `ho"st`},
		{"1.2.3.4\r\nX-Evil: 1", "for=\x00", "h\\st"},
	} {
		f.Add(s[0], s[1], s[2], false, false)
	}
	_, loopback, _ := net.ParseCIDR("127.0.0.0/8")
	peer := net.ParseIP("127.0.0.1").To4()
	f.Fuzz(func(t *testing.T, xff, fwd, host string, rfc7239, trusted bool) {
		var h fasthttp.RequestHeader
		h.DisableNormalizing()
		h.SetBytesV("X-Forwarded-For", []byte(xff))
		h.SetBytesV("Forwarded", []byte(fwd))
		h.SetHostBytes([]byte(host))
		fw := forwarding{mode: forwardXFF}
		if rfc7239 {
			fw.mode = forwardRFC7239
		}
		if trusted {
			fw.trusted = []*net.IPNet{loopback}
		}
		fw.set(&h, h.Host(), peer, false, nil)
		field := "X-Forwarded-For"
		if rfc7239 {
			field = "Forwarded"
		}
		v := string(h.Peek(field))
		if !fieldValue(v) && fieldValue(xff) && fieldValue(fwd) {
			t.Fatalf("%s %q from valid input", field, v)
		}
		wantEnd := "127.0.0.1"
		if rfc7239 {
			wantEnd = "for=127.0.0.1;proto=http"
			if i := strings.LastIndex(v, ", "); i >= 0 {
				v = v[i+2:]
			}
			v, _, _ = strings.Cut(v, ";host=")
		}
		if !strings.HasSuffix(v, wantEnd) {
			t.Fatalf("%s %q does not end with the peer", field, v)
		}
		if !trusted && v != wantEnd {
			t.Fatalf("untrusted caller's %s kept: %q", field, v)
		}
	})
}
