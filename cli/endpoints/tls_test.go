package endpoints_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/pki"
)

func TestTLSResolve(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewCA("test")
	require.NoError(t, err)
	certs := t.TempDir()
	alice, err := ca.IssueFiles(certs, "alice", pki.Leaf{Name: "alice", Groups: []string{pki.GroupAdmin}})
	require.NoError(t, err)
	bob, err := ca.IssueFiles(certs, "bob", pki.Leaf{Name: "bob", Groups: []string{pki.GroupAdmin}})
	require.NoError(t, err)
	fileTLS := func(c pki.Config) *api.EndpointsTLS {
		return &api.EndpointsTLS{CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile}
	}

	state := t.TempDir()
	defaultFile := filepath.Join(state, "krakenctl", "dev", "endpoints.yaml")
	require.NoError(t, api.WriteEndpoints(defaultFile, api.Endpoints{Origins: []string{"127.0.0.1:1"}, TLS: fileTLS(alice)}))
	custom := filepath.Join(t.TempDir(), "custom.yaml")
	require.NoError(t, api.WriteEndpoints(custom, api.Endpoints{Origins: []string{"127.0.0.1:1"}, TLS: fileTLS(bob)}))
	plain := filepath.Join(t.TempDir(), "plain.yaml")
	require.NoError(t, api.WriteEndpoints(plain, api.Endpoints{Origins: []string{"127.0.0.1:1"}}))
	broken := filepath.Join(t.TempDir(), "broken.yaml")
	require.NoError(t, api.WriteEndpoints(broken, api.Endpoints{Origins: []string{"127.0.0.1:1"}, TLS: &api.EndpointsTLS{CAFile: alice.CAFile, CertFile: alice.CertFile, KeyFile: bob.KeyFile}}))
	withState := map[string]string{"XDG_STATE_HOME": state}
	bobEnv := map[string]string{"XDG_STATE_HOME": state, endpoints.EnvTLSCAFile: bob.CAFile, endpoints.EnvTLSCertFile: bob.CertFile, endpoints.EnvTLSKeyFile: bob.KeyFile}

	for _, tt := range []struct {
		name      string
		flags     endpoints.TLSFlags
		env       map[string]string
		want      string // the identity presented; empty for plain text
		wantErr   string
		wantUsage bool
	}{
		{name: "default endpoints file", env: withState, want: "alice"},
		{name: "named endpoints file beats the default one", flags: endpoints.TLSFlags{EndpointsFile: custom}, env: withState, want: "bob"},
		{name: "a file without tls is plain text", flags: endpoints.TLSFlags{EndpointsFile: plain}, env: withState},
		{name: "no endpoints file is plain text", env: map[string]string{"XDG_STATE_HOME": t.TempDir()}},
		{name: "no state directory is plain text", env: map[string]string{}},
		{name: "variables beat the endpoints file", env: bobEnv, want: "bob"},
		{name: "flags beat the variables", flags: endpoints.TLSFlags{CAFile: alice.CAFile, CertFile: alice.CertFile, KeyFile: alice.KeyFile}, env: bobEnv, want: "alice"},
		{name: "a flag with the other files from variables", flags: endpoints.TLSFlags{CertFile: alice.CertFile, KeyFile: alice.KeyFile}, env: bobEnv, want: "alice"},
		{name: "a CA without a certificate", flags: endpoints.TLSFlags{CAFile: alice.CAFile}, env: withState, wantErr: "--tls-cert-file (or $KRAKENCTL_TLS_CERT_FILE) is missing", wantUsage: true},
		{name: "a certificate without its key", flags: endpoints.TLSFlags{CAFile: alice.CAFile, CertFile: alice.CertFile}, wantErr: "--tls-key-file (or $KRAKENCTL_TLS_KEY_FILE) is missing", wantUsage: true},
		{name: "a missing file", flags: endpoints.TLSFlags{CAFile: filepath.Join(certs, "nope.pem"), CertFile: alice.CertFile, KeyFile: alice.KeyFile}, wantErr: "nope.pem: no such file or directory (named by --tls-* flags)"},
		{name: "a key that is not the certificate's, from a file", flags: endpoints.TLSFlags{EndpointsFile: broken}, wantErr: "named by the endpoints file " + broken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := tt.flags.Resolve(envOf(tt.env))
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				usage := cmdutil.ExitCode(err) == cmdutil.ExitUsage
				require.Equal(t, tt.wantUsage, usage, "%v", err)
				return
			}
			require.NoError(t, err)
			if tt.want == "" {
				require.Nil(t, p)
				return
			}
			require.NotNil(t, p)
			require.Equal(t, tt.want, p.Identity().Name)
		})
	}
}
