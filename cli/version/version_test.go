package version

import (
	"bytes"
	"encoding/json"
	"io"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
)

func testFactory() (*cmdutil.Factory, *bytes.Buffer) {
	ios, _, out, _ := iostreams.Test()
	return &cmdutil.Factory{IOStreams: ios, Version: "1.2.3", Commit: "0123abc", BuildDate: "2026-12-07T23:00:00Z"}, out
}

func TestNewCmdVersionFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		want     string // Options.Output passed to run
		wantCode int    // exit code of the error when run must not be called
	}{
		{name: "default is table", args: nil, want: cmdutil.OutputTable},
		{name: "short json", args: []string{"-o", "json"}, want: cmdutil.OutputJSON},
		{name: "long json", args: []string{"--output=json"}, want: cmdutil.OutputJSON},
		{name: "explicit table", args: []string{"--output", "table"}, want: cmdutil.OutputTable},
		{name: "yaml is a usage error", args: []string{"-o", "yaml"}, wantCode: cmdutil.ExitUsage},
		{name: "empty format is a usage error", args: []string{"-o", ""}, wantCode: cmdutil.ExitUsage},
		{name: "no arguments", args: []string{"extra"}, wantCode: cmdutil.ExitError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, _ := testFactory()
			var got *Options
			cmd := NewCmdVersion(f, func(o *Options) error { got = o; return nil })
			cmd.SetArgs(tt.args)
			cmd.SetOut(io.Discard)
			cmd.SetErr(io.Discard)
			err := cmd.Execute()
			if tt.wantCode != 0 {
				require.Error(t, err)
				require.Equal(t, tt.wantCode, cmdutil.ExitCode(err), "error: %v", err)
				require.Nil(t, got, "run must not be called after a usage error")
				return
			}
			require.NoError(t, err)
			require.NotNil(t, got)
			require.Equal(t, tt.want, got.Output)
		})
	}
}

func TestRunTable(t *testing.T) {
	t.Parallel()
	f, out := testFactory()
	require.NoError(t, run(f, &Options{Output: cmdutil.OutputTable}))
	require.Equal(t, "krakenctl 1.2.3 (commit 0123abc, built 2026-12-07T23:00:00Z, "+runtime.Version()+", "+runtime.GOOS+"/"+runtime.GOARCH+")\n", out.String())
}

// A build that recorded no commit or date says so instead of printing blanks.
func TestRunTableUnknownBuild(t *testing.T) {
	t.Parallel()
	ios, _, out, _ := iostreams.Test()
	require.NoError(t, run(&cmdutil.Factory{IOStreams: ios, Version: "(devel)"}, &Options{Output: cmdutil.OutputTable}))
	require.Equal(t, "krakenctl (devel) (commit unknown, built unknown, "+runtime.Version()+", "+runtime.GOOS+"/"+runtime.GOARCH+")\n", out.String())
}

func TestRunJSON(t *testing.T) {
	t.Parallel()
	f, out := testFactory()
	require.NoError(t, run(f, &Options{Output: cmdutil.OutputJSON}))

	var info Info
	require.NoError(t, json.Unmarshal(out.Bytes(), &info))
	require.Equal(t, Info{Version: "1.2.3", Commit: "0123abc", BuildDate: "2026-12-07T23:00:00Z", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}, info)

	// The JSON keys are a contract with scripts: exactly these, snake_case.
	var fields map[string]any
	require.NoError(t, json.Unmarshal(out.Bytes(), &fields))
	require.Len(t, fields, 5)
	for _, k := range []string{"version", "commit", "build_date", "go_version", "platform"} {
		require.Contains(t, fields, k)
	}
}

// failWriter fails every write, like a closed pipe.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestRunReportsWriteErrors(t *testing.T) {
	t.Parallel()
	for _, format := range []string{cmdutil.OutputTable, cmdutil.OutputJSON} {
		ios, _, _, _ := iostreams.Test()
		ios.Out = failWriter{}
		err := run(&cmdutil.Factory{IOStreams: ios, Version: "1.2.3"}, &Options{Output: format})
		require.ErrorIs(t, err, io.ErrClosedPipe, format)
	}
}
