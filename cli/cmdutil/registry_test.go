package cmdutil

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/stretchr/testify/require"
)

func TestRegistryResolve(t *testing.T) {
	t.Parallel()
	noEnv := func(string) string { return "" }
	env := func(k string) string {
		if k == EnvRegistry {
			return " 10.0.0.9:15400 "
		}
		return ""
	}

	r, err := RegistryFlags{}.Resolve(noEnv, strings.NewReader(""), false)
	require.NoError(t, err)
	require.Nil(t, r, "no registry: the command talks the internal APIs")

	r, err = RegistryFlags{}.Resolve(env, strings.NewReader(""), false)
	require.NoError(t, err)
	require.Equal(t, "10.0.0.9:15400", r.Name.RegistryStr())
	require.Equal(t, "$KRAKENCTL_REGISTRY", r.Source)
	require.Nil(t, r.auth, "without --username Docker's config is asked")

	r, err = RegistryFlags{Addr: "http://127.0.0.1:5000", Username: "ci", PasswordStdin: true}.Resolve(env, strings.NewReader("pa ss\r\n"), false)
	require.NoError(t, err)
	require.Equal(t, "--registry", r.Source)
	require.Equal(t, "http", r.Name.Scheme())
	cfg, err := r.auth.Authorization()
	require.NoError(t, err)
	require.Equal(t, authn.AuthConfig{Username: "ci", Password: "pa ss"}, *cfg, "one trailing newline is dropped, nothing else")
	repo, err := r.Repository("team/app")
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:5000/team/app", repo.Name())
	require.Equal(t, "http", repo.Scheme())

	r, err = RegistryFlags{Addr: "https://registry.example.com"}.Resolve(noEnv, nil, false)
	require.NoError(t, err)
	require.Equal(t, "https", r.Name.Scheme())

	for _, tc := range []struct {
		f     RegistryFlags
		env   func(string) string
		stdin string
		inUse bool
		want  string
		usage bool
	}{
		{f: RegistryFlags{Username: "ci", PasswordStdin: true}, env: noEnv, want: "credentials for --registry (or $KRAKENCTL_REGISTRY), which is not set", usage: true},
		{f: RegistryFlags{Addr: "h:1", PasswordStdin: true}, env: noEnv, want: "--password-stdin needs --username", usage: true},
		{f: RegistryFlags{Addr: "h:1", Username: "ci"}, env: noEnv, want: "--username needs --password-stdin", usage: true},
		{f: RegistryFlags{Addr: "h:1", Username: "ci", PasswordStdin: true}, env: noEnv, inUse: true, want: "cannot share stdin", usage: true},
		{f: RegistryFlags{Addr: "h:1", Username: "ci", PasswordStdin: true}, env: noEnv, stdin: "\n", want: "stdin holds no password", usage: true},
		{f: RegistryFlags{Addr: "h:1", Username: "ci", PasswordStdin: true}, env: noEnv, stdin: strings.Repeat("p", maxPassword+1), want: "over 4096 bytes", usage: true},
		{f: RegistryFlags{Addr: "ftp://h:1"}, env: noEnv, want: "invalid --registry", usage: true},
		{f: RegistryFlags{Addr: "http://h:1/path"}, env: noEnv, want: "invalid --registry", usage: true},
		{f: RegistryFlags{Addr: "http://u:p@h:1"}, env: noEnv, want: "invalid --registry", usage: true},
		{f: RegistryFlags{Addr: "Bad Host"}, env: noEnv, want: "invalid --registry", usage: true},
		{f: RegistryFlags{}, env: func(string) string { return "a b" }, want: "invalid $KRAKENCTL_REGISTRY"},
	} {
		_, err := tc.f.Resolve(tc.env, strings.NewReader(tc.stdin), tc.inUse)
		require.ErrorContains(t, err, tc.want, "%+v", tc.f)
		require.Equal(t, tc.usage, ExitCode(err) == ExitUsage, "%+v: %v", tc.f, err)
		require.NotContains(t, err.Error(), "pa ss")
	}
}

func TestRegistryExplain(t *testing.T) {
	t.Parallel()
	r, err := RegistryFlags{Addr: "h:1"}.Resolve(func(string) string { return "" }, nil, false)
	require.NoError(t, err)
	for status, want := range map[int]string{
		http.StatusUnauthorized: "wants credentials: `docker login h:1`, or pass --username and --password-stdin",
		http.StatusForbidden:    "does not allow this user to do that",
	} {
		err := r.Explain(fmt.Errorf("push: %w", &transport.Error{StatusCode: status}))
		require.ErrorContains(t, err, want)
		var te *transport.Error
		require.ErrorAs(t, err, &te, "the cause stays visible")
	}
	other := errors.New("boom")
	require.Equal(t, other, r.Explain(other))

	r, err = RegistryFlags{Addr: "h:1", Username: "ci", PasswordStdin: true}.Resolve(func(string) string { return "" }, strings.NewReader("x"), false)
	require.NoError(t, err)
	require.ErrorContains(t, r.Explain(&transport.Error{StatusCode: 401}), "refused user ci: check the password")
	require.NotEmpty(t, r.Options(t.Context(), &http.Client{Transport: &http.Transport{}}))
}
