package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority held in memory: for `dev up --tls`, which needs a throwaway
// one, and for tests. Clusters in production use their own PKI and only hand krakenctl files.
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

// DefaultValidity is how long NewCA's CA and Issue's certificates are valid when not told.
const DefaultValidity = 365 * 24 * time.Hour

// NewCA creates a CA named commonName with a new P-256 key, valid for DefaultValidity.
func NewCA(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"krakenctl"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(DefaultValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	return &CA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// CertPEM is the CA's certificate, the content of every component's ca_file.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// Leaf describes a certificate to issue.
type Leaf struct {
	// Name is the Subject's common name: a component's name, a build-index node's server id,
	// a user.
	Name string
	// Groups are the Subject's organizations (GroupAgent, GroupAdmin, ...).
	Groups []string
	// Hosts are the IP addresses and DNS names the holder serves under (its listeners'
	// hosts); empty for a certificate that is only ever a client's.
	Hosts []string
	// NotBefore and NotAfter bound validity; zero means a minute ago and DefaultValidity on.
	NotBefore, NotAfter time.Time
}

// Issue signs a certificate for l, usable as server and client, with a new P-256 key.
func (ca *CA) Issue(l Leaf) (certPEM, keyPEM []byte, err error) {
	if l.Name == "" {
		return nil, nil, errors.New("issue: a certificate needs a name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s: %w", l.Name, err)
	}
	now := time.Now()
	if l.NotBefore.IsZero() {
		l.NotBefore = now.Add(-time.Minute)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = now.Add(DefaultValidity)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: l.Name, Organization: l.Groups},
		NotBefore:    l.NotBefore,
		NotAfter:     l.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range l.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s: %w", l.Name, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s: %w", l.Name, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// WriteCA writes the CA's certificate to dir/ca.pem (readable by all: it is public) and
// returns the path. A file that already holds it is left alone, and a new one replaces the old
// by rename: IssueFiles calls it for every member while the members started before are running
// and watching the file, and a rewrite in place let one of them read it empty ("no PEM
// certificate in it") and sent every running one a needless reload.
func (ca *CA) WriteCA(dir string) (string, error) {
	path := filepath.Join(dir, "ca.pem")
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, ca.certPEM) {
		return path, nil
	}
	tmp, err := os.CreateTemp(dir, ".ca.pem-*")
	if err != nil {
		return "", fmt.Errorf("write ca: %w", err)
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // gone after the rename; else a leftover temporary file
	_, err = tmp.Write(ca.certPEM)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644) //nolint:gosec // a CA certificate is public
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return "", fmt.Errorf("write ca: %w", err)
	}
	return path, nil
}

// IssueFiles issues l and writes dir/<base>.pem and dir/<base>-key.pem (the key readable by
// its owner only) next to dir/ca.pem, and returns the Config that names them.
func (ca *CA) IssueFiles(dir, base string, l Leaf) (Config, error) {
	certPEM, keyPEM, err := ca.Issue(l)
	if err != nil {
		return Config{}, err
	}
	caFile, err := ca.WriteCA(dir)
	if err != nil {
		return Config{}, err
	}
	c := Config{CertFile: filepath.Join(dir, base+".pem"), KeyFile: filepath.Join(dir, base+"-key.pem"), CAFile: caFile}
	if err := os.WriteFile(c.KeyFile, keyPEM, 0o600); err != nil {
		return Config{}, fmt.Errorf("write key: %w", err)
	}
	if err := os.WriteFile(c.CertFile, certPEM, 0o644); err != nil { //nolint:gosec // a certificate is public
		return Config{}, fmt.Errorf("write certificate: %w", err)
	}
	return c, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}
