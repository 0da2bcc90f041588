package endpoints_test

import (
	"errors"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
)

func TestResolveAgent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		flag      string
		env       map[string]string
		want      endpoints.Agent
		wantErr   string
		wantUsage bool
	}{
		{want: endpoints.Agent{Addr: "127.0.0.1:16000", Source: "default"}},
		{env: map[string]string{endpoints.EnvAgent: " 10.0.0.1:7000 "}, want: endpoints.Agent{Addr: "10.0.0.1:7000", Source: "$KRAKENCTL_AGENT"}},
		{flag: "h:1", env: map[string]string{endpoints.EnvAgent: "10.0.0.1:7000"}, want: endpoints.Agent{Addr: "h:1", Source: "--agent"}},
		{flag: "https://agent.example:8443", want: endpoints.Agent{Addr: "https://agent.example:8443", Source: "--agent"}},
		{flag: "h", wantErr: "invalid --agent", wantUsage: true},
		{flag: "ftp://h:1", wantErr: "invalid --agent", wantUsage: true},
		{flag: "http://", wantErr: "invalid --agent", wantUsage: true},
		{env: map[string]string{endpoints.EnvAgent: "h:0"}, wantErr: "invalid $KRAKENCTL_AGENT"},
	} {
		got, err := endpoints.AgentFlags{Addr: tc.flag}.Resolve(envOf(tc.env))
		if tc.wantErr != "" {
			require.ErrorContains(t, err, tc.wantErr, tc.flag)
			if tc.wantUsage {
				require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
			}
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tc.want, got)
	}
}

func TestAgentExplain(t *testing.T) {
	t.Parallel()
	a := endpoints.Agent{Addr: "127.0.0.1:16000", Source: "default"}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	err := a.Explain(refused)
	require.ErrorIs(t, err, refused)
	require.ErrorContains(t, err, "no agent answers at 127.0.0.1:16000, from default")
	require.ErrorContains(t, err, "--from-origins")
	other := errors.New("blob unknown")
	require.Equal(t, other, a.Explain(other))
	require.NoError(t, a.Explain(nil))
}
