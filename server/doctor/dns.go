package doctor

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/krakenctl/krakenctl/ring/members"
)

// dnsEntries are the dns:/// entries of a Config, resolved.
type dnsEntries struct {
	order []string
	addrs map[string][]string
	errs  map[string]error
}

// ParseDNS splits a dns:///NAME:PORT entry as the roles do (ring/members): ok is false for an
// entry that is not a DNS entry; err says what is wrong with one that is malformed.
func ParseDNS(entry string) (name, port string, ok bool, err error) {
	if !members.IsDNS(entry) {
		return "", "", false, nil
	}
	n, p, err := members.ParseDNS(entry)
	if err != nil {
		return "", "", true, err
	}
	return n, strconv.Itoa(int(p)), true, nil
}

func resolveAll(ctx context.Context, cfg Config, d Deps) dnsEntries {
	e := dnsEntries{addrs: map[string][]string{}, errs: map[string]error{}}
	for _, list := range [][]string{cfg.Trackers, cfg.Origins, cfg.BuildIndex} {
		for _, entry := range list {
			name, port, ok, err := ParseDNS(entry)
			if !ok {
				continue
			}
			if _, seen := e.addrs[entry]; seen || e.errs[entry] != nil {
				continue
			}
			e.order = append(e.order, entry)
			if err != nil {
				e.errs[entry] = err
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, checkTimeout)
			ips, err := d.Resolver.LookupHost(cctx, name)
			cancel()
			if err == nil && len(ips) == 0 {
				err = fmt.Errorf("%s resolves to no address", name)
			}
			if err != nil {
				e.errs[entry] = err
				continue
			}
			// Bounded as the roles bound it: a huge answer is checked as far as they use it.
			slices.Sort(ips)
			for _, ip := range slices.Compact(ips)[:min(len(slices.Compact(ips)), members.MaxAddrs)] {
				e.addrs[entry] = append(e.addrs[entry], net.JoinHostPort(ip, port))
			}
		}
	}
	return e
}

// expand replaces each dns:/// entry of list by what it resolved to.
func (e dnsEntries) expand(list []string) []string {
	var out []string
	for _, entry := range list {
		if _, _, ok, _ := ParseDNS(entry); ok {
			out = append(out, e.addrs[entry]...)
			continue
		}
		out = append(out, entry)
	}
	return out
}

func (e dnsEntries) result() Result {
	r := Result{Check: "dns"}
	if len(e.order) == 0 {
		r.Status, r.Found = OK, "no dns:/// entries to resolve"
		return r
	}
	var good, bad []string
	for _, entry := range e.order {
		if err := e.errs[entry]; err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", entry, err))
			continue
		}
		good = append(good, fmt.Sprintf("%s → %d", entry, len(e.addrs[entry])))
	}
	if len(bad) > 0 {
		r.Status = Fail
		r.Found = shorten(bad)
		r.Fix = "check the Service name (a headless Service for a StatefulSet lists every pod) and this node's resolv.conf"
		return r
	}
	r.Status, r.Found = OK, strings.Join(good, ", ")
	return r
}
