package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ReloadInterval is how often Watch looks for changed certificate, key and CA files (a
// variable so tests can shorten it).
var ReloadInterval = 5 * time.Second

// Provider holds a component's certificate, key and CA, and hands out TLS configurations that
// always use the newest of them: a reload takes effect at the next handshake, for listeners
// and clients alike, without rebuilding either.
type Provider struct {
	cfg Config
	mat atomic.Pointer[material]

	mu     sync.Mutex // serializes reloads
	stamps [3]stamp
	// require is what the role adds to the checks of every loading (see Require).
	require func(leaf *x509.Certificate) error
	now     func() time.Time
}

// material is one consistent loading of the files.
type material struct {
	cert   tls.Certificate // Leaf set
	pool   *x509.CertPool
	server map[string]*tls.Config // what listeners answer with, per client_auth, built once per loading
	peer   *tls.Config            // what swarm (P2P) listeners answer with
	id     Identity
}

type stamp struct {
	mod  time.Time
	size int64
}

// Load reads cfg's files and checks them: the key matches the certificate, the certificate is
// valid now and chains to the CA. The error names the file at fault.
func Load(cfg Config) (*Provider, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if !cfg.Enabled() {
		return nil, errors.New("tls: not configured")
	}
	p := &Provider{cfg: cfg, now: time.Now}
	if err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// Reload re-reads the files. On an error the provider keeps what it had, so a rotation that
// went wrong (a key that does not match, a certificate from another CA) never takes the
// component off the network; the error says what is wrong. Either way the files as read are
// noted, so Watch tries them again only once one of them changes (or on SIGHUP), rather than
// logging the same failure every interval.
func (p *Provider) Reload() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stamps = p.statAll()
	m, err := p.load()
	if err != nil {
		return err
	}
	p.mat.Store(m)
	return nil
}

// Require adds check to what every later reload demands of the certificate, besides its CA,
// validity and key usages: a role whose peers expect more of its certificate (a build-index
// node's must keep naming its raft.node_id) refuses a rotation that would break that, keeping
// the certificate in use. It returns check's verdict on the certificate in use now.
func (p *Provider) Require(check func(leaf *x509.Certificate) error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.require = check
	return check(p.mat.Load().cert.Leaf)
}

func (p *Provider) files() [3]string { return [3]string{p.cfg.CertFile, p.cfg.KeyFile, p.cfg.CAFile} }

func (p *Provider) statAll() [3]stamp {
	var s [3]stamp
	for i, f := range p.files() {
		if fi, err := os.Stat(f); err == nil {
			s[i] = stamp{fi.ModTime(), fi.Size()}
		}
	}
	return s
}

func (p *Provider) load() (*material, error) {
	certPEM, err := os.ReadFile(p.cfg.CertFile)
	if err != nil {
		return nil, fmt.Errorf("tls: cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(p.cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: key_file: %w", err)
	}
	caPEM, err := os.ReadFile(p.cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("tls: ca_file: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls: cert_file %s with key_file %s: %w", p.cfg.CertFile, p.cfg.KeyFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("tls: ca_file %s: no PEM certificate in it", p.cfg.CAFile)
	}
	leaf := cert.Leaf
	now := p.now()
	if err := checkValidity(leaf, now); err != nil {
		return nil, fmt.Errorf("tls: cert_file %s: %w", p.cfg.CertFile, err)
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("tls: cert_file %s is not issued by the CA in ca_file %s: %w", p.cfg.CertFile, p.cfg.CAFile, err)
	}
	if p.require != nil {
		if err := p.require(leaf); err != nil {
			return nil, fmt.Errorf("tls: cert_file %s: %w", p.cfg.CertFile, err)
		}
	}
	// A component is a server to some peers and a client of others: a certificate for one use
	// only would start, then fail every call of the other kind at the peer, in its terms.
	if missing := missingUsages(leaf); len(missing) > 0 {
		return nil, fmt.Errorf("tls: cert_file %s (%q) lacks the extended key usage %s: a component's certificate must allow both server and client authentication",
			p.cfg.CertFile, leaf.Subject.CommonName, strings.Join(missing, " and "))
	}
	m := &material{cert: cert, pool: pool, id: identityOf(leaf), server: map[string]*tls.Config{}}
	for _, mode := range []string{ClientAuthRequire, ClientAuthVerifyIfGiven, ClientAuthNone} {
		auth := clientAuth(mode)
		m.server[mode] = &tls.Config{
			MinVersion:   serverMinVersion(auth),
			Certificates: []tls.Certificate{cert},
			ClientCAs:    pool,
			ClientAuth:   auth,
			NextProtos:   []string{"http/1.1"},
		}
	}
	m.peer = &tls.Config{
		MinVersion:                  tls.VersionTLS13,
		Certificates:                []tls.Certificate{cert},
		ClientCAs:                   pool,
		ClientAuth:                  tls.RequireAndVerifyClientCert,
		NextProtos:                  []string{PeerProtocol},
		DynamicRecordSizingDisabled: true,
	}
	return m, nil
}

// missingUsages names the uses among server and client authentication that leaf's extended
// key usages do not allow (a certificate without any allows every use).
func missingUsages(leaf *x509.Certificate) []string {
	if len(leaf.ExtKeyUsage) == 0 || slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return nil
	}
	var missing []string
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		missing = append(missing, "serverAuth")
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		missing = append(missing, "clientAuth")
	}
	return missing
}

// checkValidity says plainly when a certificate is outside its validity period, which
// x509.Verify reports in terms a person has to decode.
func checkValidity(c *x509.Certificate, now time.Time) error {
	switch {
	case now.After(c.NotAfter):
		return fmt.Errorf("certificate %q expired at %s", c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(c.NotBefore):
		return fmt.Errorf("certificate %q is not valid before %s", c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

func clientAuth(mode string) tls.ClientAuthType {
	switch mode {
	case ClientAuthVerifyIfGiven:
		return tls.VerifyClientCertIfGiven
	case ClientAuthNone:
		return tls.NoClientCert
	default:
		return tls.RequireAndVerifyClientCert
	}
}

// serverMinVersion is TLS 1.3 for links between components (client_auth: require). A
// listener that also serves people's tools accepts TLS 1.2, which some still speak.
func serverMinVersion(auth tls.ClientAuthType) uint16 {
	if auth == tls.RequireAndVerifyClientCert {
		return tls.VersionTLS13
	}
	return tls.VersionTLS12
}

// Identity is the component's own identity, from its certificate.
func (p *Provider) Identity() Identity { return p.mat.Load().id }

// NotAfter is when the certificate in use expires.
func (p *Provider) NotAfter() time.Time { return p.mat.Load().cert.Leaf.NotAfter }

// ServerConfig is the TLS configuration of a listener: the current certificate, clients
// verified against the current CA as Config.ClientAuth says.
func (p *Provider) ServerConfig() *tls.Config { return p.ServerConfigFor(p.cfg.ClientAuth) }

// ServerConfigFor is ServerConfig with client authentication as mode says (one of the
// ClientAuth constants): the admin listener, probed by orchestrators without certificates,
// verifies a certificate only if given and authorizes per endpoint.
func (p *Provider) ServerConfigFor(mode string) *tls.Config {
	if clientAuth(mode) == tls.RequireAndVerifyClientCert {
		mode = ClientAuthRequire
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return p.mat.Load().server[mode], nil
		},
	}
}

// ClientConfig is the TLS configuration of a client between components: TLS 1.3, the current
// certificate presented when asked, and the server's certificate verified against the CA as it
// is now and the name dialled (tls.Dial fills ServerName from the address; set it when dialling
// otherwise). The CA is fixed in the returned configuration, so take a new one for every
// connection, as DialContext does, to follow reloads.
func (p *Provider) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    p.mat.Load().pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &p.mat.Load().cert, nil
		},
	}
}

// Pool is the cluster CA as currently loaded, for code that verifies a peer's chain itself
// (the Raft transport, which names peers by server id rather than host).
func (p *Provider) Pool() *x509.CertPool { return p.mat.Load().pool }

// Dialer dials TLS connections to other components with ClientConfig; d makes the TCP
// connections (its timeout bounds the handshake too). Its DialContext fits
// http.Transport.DialTLSContext.
func (p *Provider) Dialer(d *net.Dialer) *Dialer { return &Dialer{p: p, d: d} }

// DialTLS is Dialer(d).DialContext, in the shape of httpserve.ClientOptions.DialTLS: a client
// built with it speaks TLS with this provider's certificate to every component.
func (p *Provider) DialTLS(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return p.Dialer(d).DialContext
}

// Dialer dials other components over TLS; see Provider.Dialer.
type Dialer struct {
	p *Provider
	d *net.Dialer
}

// DialContext connects to addr and completes the handshake, verifying the server's certificate
// for addr's host. A certificate the CA did not issue, an expired one, or one for another
// name fail with an error that says which.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("tls dial %s: %w", addr, err)
	}
	cfg := d.p.ClientConfig()
	cfg.ServerName = host
	c, err := (&tls.Dialer{NetDialer: d.d, Config: cfg}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, explain(addr, err)
	}
	return c, nil
}

// explain rewrites crypto/tls's verification failures in a person's terms.
func explain(addr string, err error) error {
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &cve) || len(cve.UnverifiedCertificates) == 0 {
		return fmt.Errorf("tls dial %s: %w", addr, err)
	}
	leaf := cve.UnverifiedCertificates[0]
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("tls dial %s: the server presents certificate %q issued by %q, not by the cluster CA: %w",
			addr, leaf.Subject.CommonName, leaf.Issuer.CommonName, err)
	case errors.As(err, new(x509.HostnameError)):
		return fmt.Errorf("tls dial %s: the server's certificate %q does not name %s (its names: %s): issue it with every address it is reached at: %w",
			addr, leaf.Subject.CommonName, hostOf(addr), certHosts(leaf), err)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		if verr := checkValidity(leaf, time.Now()); verr != nil {
			return fmt.Errorf("tls dial %s: the server's %w: %w", addr, verr, err)
		}
	}
	return fmt.Errorf("tls dial %s: %w", addr, err)
}

// Watch reloads the files when one of them changes and on SIGHUP, until ctx ends. A failed
// reload is logged and the current material kept; Watch itself never fails.
func (p *Provider) Watch(ctx context.Context, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	t := time.NewTicker(ReloadInterval)
	defer t.Stop()
	for {
		var why string
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			why = "SIGHUP"
		case <-t.C:
			p.mu.Lock()
			changed := p.statAll() != p.stamps
			p.mu.Unlock()
			if !changed {
				continue
			}
			why = "files changed"
		}
		if err := p.Reload(); err != nil {
			log.Error("tls reload failed; keeping the certificate in use", "why", why, "err", err,
				"not_after", p.NotAfter())
			continue
		}
		log.Info("tls reloaded", "why", why, "identity", p.Identity().Name, "not_after", p.NotAfter())
	}
}

// hostOf is addr without its port.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// certHosts lists the IP addresses and DNS names a certificate is valid for.
func certHosts(c *x509.Certificate) string {
	hosts := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	if len(hosts) == 0 {
		return "none"
	}
	return strings.Join(hosts, ", ")
}
