package proxy

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// FuzzClientAddr: X-Forwarded-For is the client's to write. Whatever it
// holds, the address is the peer's or one IP address, and the rate
// limiter takes it.
func FuzzClientAddr(f *testing.F) {
	f.Add([]byte("192.0.2.1"), []byte(""))
	f.Add([]byte("198.51.100.7, 192.0.2.1"), []byte(" 2001:db8::1 "))
	f.Add([]byte(",,,"), []byte("unknown"))
	_, loop, _ := net.ParseCIDR("127.0.0.0/8")
	peer := net.IPv4(127, 0, 0, 1).To4()
	l := newRateLimiter(1, 1, 4)
	f.Fuzz(func(t *testing.T, a, b []byte) {
		addr := clientAddr(peer, [][]byte{a, b}, []*net.IPNet{loop})
		if len(addr) != net.IPv4len && len(addr) != net.IPv6len {
			t.Fatalf("address of %d bytes", len(addr))
		}
		if !bytes.Equal(addr, peer) && net.ParseIP(string(bytes.TrimSpace(b[bytes.LastIndexByte(b, ',')+1:]))) == nil {
			t.Fatalf("%v taken from a field that does not end in an address", net.IP(addr))
		}
		l.allow(addr, time.Now())
		if len(l.buckets) > l.max {
			t.Fatalf("%d addresses tracked, max %d", len(l.buckets), l.max)
		}
	})
}
