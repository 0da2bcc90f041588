package endpoints

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/spf13/pflag"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/pki"
)

// Environment variables naming the TLS files of commands that talk to components.
const (
	EnvTLSCAFile   = "KRAKENCTL_TLS_CA_FILE"
	EnvTLSCertFile = "KRAKENCTL_TLS_CERT_FILE"
	EnvTLSKeyFile  = "KRAKENCTL_TLS_KEY_FILE"
)

// TLSFlags are the global flags that say how commands reach a cluster that runs with TLS.
type TLSFlags struct {
	CAFile, CertFile, KeyFile string
	// EndpointsFile is the endpoints file the command reads its addresses from, when it was
	// named (--endpoints-file): its tls section applies rather than the default file's.
	EndpointsFile string
}

// AddTLSFlags registers --tls-ca-file, --tls-cert-file and --tls-key-file on fs (the root
// command's persistent flags).
func AddTLSFlags(fs *pflag.FlagSet, f *TLSFlags) {
	fs.StringVar(&f.CAFile, "tls-ca-file", "",
		"talk to components over TLS, trusting the cluster CA in this PEM file (default $"+EnvTLSCAFile+", else the endpoints file's tls section)")
	fs.StringVar(&f.CertFile, "tls-cert-file", "",
		"the client certificate (PEM) to present with --tls-ca-file; components require one (default $"+EnvTLSCertFile+")")
	fs.StringVar(&f.KeyFile, "tls-key-file", "",
		"the private key (PEM) of --tls-cert-file (default $"+EnvTLSKeyFile+")")
}

// Resolve returns the certificate and CA that commands present to and trust in components,
// nil for plain text. Each file comes from its flag, else its variable; when none is set, the
// tls section of the endpoints file (EndpointsFile, else the default one that `krakenctl dev up
// --tls` writes) names them, and a file without one means plain text. The three go together:
// a set that lacks one is a usage error (*cmdutil.FlagError). Files that do not load (missing,
// a key that does not match, a certificate expired or not from the CA) are an error that says
// where they were named.
func (f TLSFlags) Resolve(env Env) (*pki.Provider, error) {
	pick := func(flag, envKey string) string {
		if flag != "" {
			return flag
		}
		return env(envKey)
	}
	cfg := pki.Config{
		CAFile:   pick(f.CAFile, EnvTLSCAFile),
		CertFile: pick(f.CertFile, EnvTLSCertFile),
		KeyFile:  pick(f.KeyFile, EnvTLSKeyFile),
	}
	source := "--tls-* flags"
	if cfg.Enabled() {
		for _, m := range []struct{ v, flag, env string }{
			{cfg.CAFile, "--tls-ca-file", EnvTLSCAFile},
			{cfg.CertFile, "--tls-cert-file", EnvTLSCertFile},
			{cfg.KeyFile, "--tls-key-file", EnvTLSKeyFile},
		} {
			if m.v == "" {
				return nil, cmdutil.FlagErrorf("tls: %s (or $%s) is missing: --tls-ca-file, --tls-cert-file and --tls-key-file go together", m.flag, m.env)
			}
		}
	} else {
		path := f.EndpointsFile
		if path == "" {
			p, err := DefaultFile(env)
			if err != nil {
				return nil, nil //nolint:nilerr // no default file to read: plain text, as without one
			}
			path = p
		}
		e, err := api.ReadEndpoints(path)
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, api.ErrNoEndpoints):
			return nil, nil // the command says what is missing, if it needs addresses
		case err != nil:
			return nil, fmt.Errorf("tls: %w", err)
		case e.TLS == nil:
			return nil, nil
		}
		cfg = pki.Config{CAFile: e.TLS.CAFile, CertFile: e.TLS.CertFile, KeyFile: e.TLS.KeyFile}
		source = "the endpoints file " + path
	}
	p, err := pki.Load(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w (named by %s)", err, source)
	}
	return p, nil
}
