package proxy

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// The forwarded fields a proxy sets for its upstream (SidecarConfig.ForwardedHeaders).
const (
	// ForwardedXFF sets X-Forwarded-For, X-Forwarded-Proto and
	// X-Forwarded-Host, the de facto fields.
	ForwardedXFF = "xff"
	// ForwardedRFC7239 sets Forwarded (RFC 7239).
	ForwardedRFC7239 = "rfc7239"
	// ForwardedNone passes the caller's fields on as they came: for a
	// proxy behind another that owns them.
	ForwardedNone = "none"
)

type forwardedMode uint8

const (
	forwardXFF forwardedMode = iota
	forwardRFC7239
	forwardNone
)

func parseForwardedMode(s string) (forwardedMode, error) {
	switch s {
	case "", ForwardedXFF:
		return forwardXFF, nil
	case ForwardedRFC7239:
		return forwardRFC7239, nil
	case ForwardedNone:
		return forwardNone, nil
	}
	return 0, fmt.Errorf("proxy: forwarded headers %q: want %s, %s or %s", s, ForwardedXFF, ForwardedRFC7239, ForwardedNone)
}

const (
	headerXForwardedProto = "X-Forwarded-Proto"
	headerXForwardedHost  = "X-Forwarded-Host"
	headerForwarded       = "Forwarded"
)

// forwarding is what a forwarder says of the requests' origin.
type forwarding struct {
	mode    forwardedMode
	trusted []*net.IPNet // peers whose forwarded fields are believed
}

// headerFields are the header fields of an HTTP/1.1 request
// (*fasthttp.RequestHeader) or an HTTP/2 one (httpFields).
type headerFields interface {
	PeekAll(key string) [][]byte
	Peek(key string) []byte
	Del(key string)
	Set(key, value string)
	SetBytesV(key string, value []byte)
}

// set writes the forwarded fields of a request for host received from
// peer, over TLS if tls, using buf. A trusted peer's fields are kept and
// the peer is appended to the chain; anyone else's are replaced, so that a
// caller cannot pass itself off as another address, scheme or host.
func (f *forwarding) set(h headerFields, host []byte, peer net.IP, tls bool, buf []byte) []byte {
	if f.mode == forwardNone {
		return buf
	}
	trusted := trustedPeer(peer, f.trusted)
	proto := "http"
	if tls {
		proto = "https"
	}
	if f.mode == forwardRFC7239 {
		if !trusted {
			h.Del(fasthttp.HeaderXForwardedFor)
			h.Del(headerXForwardedProto)
			h.Del(headerXForwardedHost)
		}
		// RFC 7239 §4: for=, proto=, host=; an IPv6 address and a host
		// with a port are quoted (§6).
		b := buf[:0]
		if trusted {
			b = appendJoined(b, h.PeekAll(headerForwarded))
		}
		if len(b) > 0 {
			b = append(b, ", "...)
		}
		b = append(b, "for="...)
		if a := addrOf(peer); a.Is6() {
			b = append(b, `"[`...)
			b = a.AppendTo(b)
			b = append(b, `]"`...)
		} else {
			b = a.AppendTo(b)
		}
		b = append(append(b, ";proto="...), proto...)
		if len(host) > 0 && fieldValue(host) && bytes.IndexByte(host, '"') < 0 && bytes.IndexByte(host, '\\') < 0 {
			b = append(append(append(b, `;host="`...), host...), '"')
		}
		h.SetBytesV(headerForwarded, b)
		return b
	}
	if !trusted {
		h.Del(headerForwarded)
	}
	b := buf[:0]
	if trusted {
		b = appendJoined(b, h.PeekAll(fasthttp.HeaderXForwardedFor))
	}
	if len(b) > 0 {
		b = append(b, ", "...)
	}
	b = addrOf(peer).AppendTo(b)
	h.SetBytesV(fasthttp.HeaderXForwardedFor, b)
	if !trusted || len(h.Peek(headerXForwardedProto)) == 0 {
		h.Set(headerXForwardedProto, proto)
	}
	if !trusted || len(h.Peek(headerXForwardedHost)) == 0 {
		if len(host) > 0 {
			h.SetBytesV(headerXForwardedHost, host)
		} else {
			h.Del(headerXForwardedHost)
		}
	}
	return b
}

// appendJoined appends the values of a repeated field joined by ", ",
// which is what the one field with the list would say (RFC 9110 §5.3).
func appendJoined(b []byte, values [][]byte) []byte {
	for _, v := range values {
		if v = trimOWS(v); len(v) == 0 {
			continue
		}
		if len(b) > 0 {
			b = append(b, ", "...)
		}
		b = append(b, v...)
	}
	return b
}

// addrOf converts a peer address without allocating.
func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// clientAddr returns the address a request's dereferences are counted
// against: the peer's, or, when the peer is a trusted proxy, the last
// address of X-Forwarded-For, the one that proxy appended. Addresses a
// client put earlier in the field are its own claims and are ignored. A
// field that does not end in an IP address leaves the peer's.
func clientAddr(peer net.IP, xff [][]byte, trusted []*net.IPNet) []byte {
	if len(xff) == 0 || !trustedPeer(peer, trusted) {
		return peer
	}
	last := xff[len(xff)-1]
	if i := bytes.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	ip := net.ParseIP(string(trimOWS(last)))
	if ip == nil {
		return peer
	}
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip
}

// trustedPeer reports whether peer is one of the trusted proxies, whose
// forwarded fields are believed.
func trustedPeer(peer net.IP, trusted []*net.IPNet) bool {
	for _, n := range trusted {
		if n.Contains(peer) {
			return true
		}
	}
	return false
}
