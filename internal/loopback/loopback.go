// Package loopback answers one question asked wherever meshauth allows plain
// http for development only: is this host the local machine?
package loopback

import "net"

// Host reports whether host is "localhost" (RFC 6761 §6.3) or a loopback IP
// address (127.0.0.0/8, ::1).
func Host(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
