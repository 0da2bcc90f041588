package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// ListenAddr is one address a role binds and the key that configures it.
type ListenAddr struct {
	// Key is the address's key path as spelled in YAML, e.g. "peer.listen".
	Key string
	// Addr is host:port; empty means the listener is off.
	Addr string
}

// CheckHostPort reports whether addr is a listen address: host:port with a port in 0..65535
// (0 lets the kernel choose) and a host that may be empty (every interface).
func CheckHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil || (len(port) > 1 && port[0] == '0') {
		return fmt.Errorf("%q: port %q is not a number in 0..65535", addr, port)
	}
	return nil
}

// CheckListenAddrs reports each pair of addresses that cannot both be bound, naming both keys:
// the same port on the same host, or on any host when either binds every interface
// ("0.0.0.0:X" takes X from "127.0.0.1:X"). Port 0 collides with nothing, and addresses that
// are not host:port are left to Validate.
func CheckListenAddrs(addrs []ListenAddr) []error {
	var errs []error
	for i, a := range addrs {
		for _, b := range addrs[:i] {
			if overlap(a.Addr, b.Addr) {
				errs = append(errs, fmt.Errorf("%s: %q overlaps %s %q: two listeners cannot bind the same port",
					a.Key, a.Addr, b.Key, b.Addr))
			}
		}
	}
	return errs
}

func overlap(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || a == "" || b == "" {
		return false
	}
	na, errA := strconv.ParseUint(pa, 10, 16)
	nb, errB := strconv.ParseUint(pb, 10, 16)
	if errA != nil || errB != nil || na != nb || na == 0 {
		return false
	}
	if everyInterface(ha) || everyInterface(hb) {
		return true
	}
	ia, errA := netip.ParseAddr(ha)
	ib, errB := netip.ParseAddr(hb)
	if errA == nil && errB == nil {
		return ia.Unmap() == ib.Unmap()
	}
	return strings.EqualFold(ha, hb)
}

// everyInterface reports whether a listen host binds every interface: "", 0.0.0.0 or ::.
func everyInterface(host string) bool {
	if host == "" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsUnspecified()
}
