package doctor

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// dnsScheme starts a membership entry that stands for every address a name resolves to.
const dnsScheme = "dns:///"

// dnsEntries are the dns:/// entries of a Config, resolved.
type dnsEntries struct {
	order []string
	addrs map[string][]string
	errs  map[string]error
}

// ParseDNS splits a dns:///NAME:PORT entry. ok is false for an entry of another form; err
// says what is wrong with a dns:/// entry that is malformed.
func ParseDNS(entry string) (name, port string, ok bool, err error) {
	rest, found := strings.CutPrefix(entry, dnsScheme)
	if !found {
		return "", "", false, nil
	}
	name, port, err = net.SplitHostPort(rest)
	if err != nil {
		return "", "", true, fmt.Errorf("%q must be dns:///NAME:PORT: %w", entry, err)
	}
	if n, perr := strconv.Atoi(port); perr != nil || n < 1 || n > 65535 || name == "" || strings.ContainsAny(name, "/?#@") {
		return "", "", true, fmt.Errorf("%q must be dns:///NAME:PORT, NAME a DNS name and PORT a number", entry)
	}
	return name, port, true, nil
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
			for _, ip := range ips {
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
