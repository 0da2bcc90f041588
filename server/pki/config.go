// Package pki is how krakenctl's components prove who they are to each other: the TLS
// configuration of every listener and every client between components, the identities that
// certificates carry, and a small certificate authority for `dev up --tls` and tests.
//
// A component holds a certificate from the cluster CA. Its Subject names it: the common name
// is the component's name (a build-index node's server id, a host name, a user) and the
// organizations are its groups ("agent", "origin", "tracker", "proxy", "build-index",
// "admin"). A server that requires client certificates (client_auth: require, the default)
// refuses a peer without one before any request is read; handlers then authorize by group
// with PeerIdentity.
//
// Certificates and the CA are read from files and re-read without a restart: when a file
// changes (checked every few seconds) or on SIGHUP. A reload that fails keeps the material
// that works and logs why, so a half-written file never takes a component off the network.
package pki

import (
	"errors"
	"fmt"
)

// Client authentication modes of Config.ClientAuth.
const (
	// ClientAuthRequire refuses a client without a certificate from the CA. It is the default,
	// for links between components.
	ClientAuthRequire = "require"
	// ClientAuthVerifyIfGiven accepts clients without a certificate (people with docker, who
	// authenticate with a password instead) and verifies the certificate of those who send
	// one: the proxy, and an agent's pull API.
	ClientAuthVerifyIfGiven = "verify_if_given"
	// ClientAuthNone never asks for a client certificate.
	ClientAuthNone = "none"
)

// Config is the `tls` section of every role's configuration file:
//
//	tls:
//	  cert_file: /etc/krakenctl/tls/origin.pem    # this component's certificate (PEM; a chain is fine)
//	  key_file: /etc/krakenctl/tls/origin-key.pem # its private key (PEM)
//	  ca_file: /etc/krakenctl/tls/ca.pem          # the cluster CA: peers' certificates must chain to it
//	  client_auth: require                        # require | verify_if_given | none
//
// Without cert_file the component speaks plain text, which is only for networks trusted by
// construction (and `dev up` without --tls); it says so in its log at start.
type Config struct {
	// CertFile is the PEM certificate the component presents, as server and as client.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of CertFile.
	KeyFile string `yaml:"key_file"`
	// CAFile holds the PEM certificates of the cluster CA (several during a rotation).
	CAFile string `yaml:"ca_file"`
	// ClientAuth says what the component's listeners ask of clients; see the ClientAuth*
	// constants. Default: require.
	ClientAuth string `yaml:"client_auth"`
}

// Enabled reports whether TLS is configured.
func (c *Config) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" || c.CAFile != "" }

// Defaults fills ClientAuth, when TLS is configured, with ClientAuthRequire.
func (c *Config) Defaults() { c.DefaultsTo(ClientAuthRequire) }

// DefaultsTo fills ClientAuth, when TLS is configured, with mode: the default of a role whose
// clients are people's tools rather than components (ClientAuthVerifyIfGiven).
func (c *Config) DefaultsTo(mode string) {
	if c.Enabled() && c.ClientAuth == "" {
		c.ClientAuth = mode
	}
}

// Validate reports what is missing or unknown; it does not read the files (Load does).
func (c *Config) Validate() error { return errors.Join(c.Problems()...) }

// Problems lists what Validate reports, one error per key, so a role can prefix each with
// "tls.".
func (c *Config) Problems() []error {
	if !c.Enabled() {
		if c.ClientAuth != "" {
			return []error{errors.New("client_auth: set without cert_file, key_file and ca_file")}
		}
		return nil
	}
	var errs []error
	for _, f := range []struct{ key, v string }{{"cert_file", c.CertFile}, {"key_file", c.KeyFile}, {"ca_file", c.CAFile}} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("%s: required when tls is configured", f.key))
		}
	}
	switch c.ClientAuth {
	case "", ClientAuthRequire, ClientAuthVerifyIfGiven, ClientAuthNone:
	default:
		errs = append(errs, fmt.Errorf("client_auth: %q is not one of %s, %s, %s", c.ClientAuth,
			ClientAuthRequire, ClientAuthVerifyIfGiven, ClientAuthNone))
	}
	return errs
}
