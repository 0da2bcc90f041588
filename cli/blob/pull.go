package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/client"
)

// PullOptions are the inputs of `krakenctl pull`.
type PullOptions struct {
	deps
	// Agent names the agent to pull through (the default mode).
	Agent endpoints.AgentFlags
	// FromOrigins pulls from the origins directly, which --origins and --endpoints-file imply.
	FromOrigins bool
	Endpoints   endpoints.Flags
	Digest      digest.Digest
	// OutFile is the file to write (--file, -O); "" writes to stdout unless it is a terminal,
	// "-" always writes to stdout.
	OutFile string
	// Output is the format of the report printed once the blob is written (-o, --output):
	// table prints nothing (the progress bar said it all), json one summary object on stdout.
	Output    string
	Namespace string
	// Registry, when it names one, pulls from repository Namespace of that registry (a proxy)
	// with the distribution API instead.
	Registry cmdutil.RegistryFlags

	reg *cmdutil.Registry
}

// viaOrigins reports whether the pull goes to the origins rather than through an agent.
func (o *PullOptions) viaOrigins() bool {
	return o.FromOrigins || len(o.Endpoints.Origins) > 0 || o.Endpoints.File != ""
}

// NewCmdPull returns `krakenctl pull`. runF replaces the run function in tests.
func NewCmdPull(f *cmdutil.Factory, runF func(context.Context, *PullOptions) error) *cobra.Command {
	opts := &PullOptions{deps: depsOf(f)}
	cmd := &cobra.Command{
		Use:   "pull DIGEST [--file FILE]",
		Short: "Download a blob through an agent (or from the origins)",
		Long: `Download the blob with the given digest (sha256:<hex> or the hex alone) and verify every
byte against the digest.

By default the blob comes through an agent, which downloads it from the peer-to-peer swarm and
streams it while it arrives: the agent at --agent, else $KRAKENCTL_AGENT, else this host's
agent at 127.0.0.1:16000. A transfer that breaks off resumes where it stopped.

With --from-origins, --origins or --endpoints-file the blob comes from the origin cluster
directly instead (no agent needed); if an origin fails mid-download the next owner resumes
where it stopped. Origins come from --origins, else --endpoints-file, else $KRAKENCTL_ORIGINS,
else the endpoints file written by ` + "`krakenctl dev up`" + `.

With --file FILE (-O FILE) the blob is written to a temporary file next to FILE and renamed
into place only once it is complete and verified, so FILE is never left partial: on a digest
mismatch the error names the expected and the actual digest and FILE is left as it was.
Without --file it is written to stdout, unless stdout is a terminal (use --file - to force
it). A progress bar with the bytes and the rate is drawn on stderr when stderr is a terminal.

-o/--output is the output format, as in every other command: with -o json (and --file) a JSON
summary of the pull (digest, size, file, seconds) is printed on stdout once the file is in
place. Before this release -o named the file: -o with anything but a format is refused with a
message that names --file.

With --registry (or $KRAKENCTL_REGISTRY) the blob comes from repository --namespace of a
registry, the proxy, with the distribution API, as docker pulls a layer: the proxy
authenticates the pull. Credentials are --username with the password on stdin
(--password-stdin), else those ` + "`docker login`" + ` stored for the registry in Docker's config.json.`,
		Example: `  krakenctl pull sha256:4a5c...e1 --file layer.tar
  krakenctl pull 4a5c...e1 --agent 10.0.0.7:16000 | tar x
  krakenctl pull 4a5c...e1 --from-origins -O layer.tar -o json
  krakenctl pull 4a5c...e1 --registry registry.example.com --namespace team/app -O layer.tar`,
		Args: exactArgs(1, "pull takes one DIGEST argument"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := cmdutil.ParseDigest(args[0])
			if err != nil {
				return cmdutil.FlagErrorf("invalid DIGEST argument: %w", err)
			}
			opts.Digest = d
			if err := checkPullOutput(opts); err != nil {
				return err
			}
			if err := checkNamespace(opts.Namespace); err != nil {
				return err
			}
			if opts.Agent.Addr != "" && opts.viaOrigins() {
				return cmdutil.FlagErrorf("--agent pulls through an agent; --from-origins, --origins and --endpoints-file pull from the origins: pass one or the other")
			}
			reg, err := opts.Registry.Resolve(opts.Env, opts.IO.In, false)
			if err != nil {
				return err
			}
			if reg != nil && (opts.Agent.Addr != "" || opts.viaOrigins()) {
				return cmdutil.FlagErrorf("%s pulls from a registry; --agent, --from-origins, --origins and --endpoints-file pull from krakenctl's servers: pass one or the other", reg.Source)
			}
			opts.reg = reg
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return pullRun(cmd.Context(), opts)
		},
	}
	endpoints.AddAgentFlags(cmd, &opts.Agent)
	cmd.Flags().BoolVar(&opts.FromOrigins, "from-origins", false, "pull from the origins directly instead of through an agent (implied by --origins and --endpoints-file)")
	endpoints.AddFlags(cmd, &opts.Endpoints)
	cmd.Flags().StringVarP(&opts.OutFile, "file", "O", "", "write the blob to `FILE`, complete or not at all (default, or -: stdout)")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	cmd.Flags().StringVar(&opts.Namespace, "namespace", DefaultNamespace, "namespace of the blob (origins route namespaces to storage backends)")
	cmdutil.AddRegistryFlags(cmd, &opts.Registry, "the blob")
	return cmd
}

// pullSource is where a pull gets the blob: an agent or the origins.
type pullSource struct {
	// pull writes the verified blob to w.
	pull func(ctx context.Context, w io.Writer, progress func(done, total int64)) (int64, error)
	// explain turns a failed pull into the message an operator needs; toFile says whether the
	// bytes went to a file (then left untouched) or to stdout.
	explain func(err error, toFile bool) error
}

func newPullSource(opts *PullOptions) (pullSource, error) {
	if opts.reg != nil {
		return registryPullSource(opts, opts.reg)
	}
	if opts.viaOrigins() {
		origins, err := opts.Endpoints.Resolve(opts.Env)
		if err != nil {
			return pullSource{}, err
		}
		cl := client.NewCluster(origins.Addrs, opts.HTTPClient())
		return pullSource{
			pull: func(ctx context.Context, w io.Writer, progress func(done, total int64)) (int64, error) {
				return cl.Pull(ctx, opts.Namespace, opts.Digest, w, progress)
			},
			explain: func(err error, _ bool) error {
				if errors.Is(err, client.ErrNotFound) {
					return &NotFoundError{Digest: opts.Digest, Namespace: opts.Namespace}
				}
				return origins.Explain(err)
			},
		}, nil
	}
	ag, err := opts.Agent.Resolve(opts.Env)
	if err != nil {
		return pullSource{}, err
	}
	ac := client.NewAgent(ag.Addr, opts.HTTPClient())
	return pullSource{
		pull: func(ctx context.Context, w io.Writer, progress func(done, total int64)) (int64, error) {
			return ac.Pull(ctx, opts.Namespace, opts.Digest, w, progress)
		},
		explain: func(err error, toFile bool) error {
			var dm *client.DigestMismatchError
			switch {
			case errors.Is(err, client.ErrNotFound):
				return &NotFoundError{Digest: opts.Digest, Namespace: opts.Namespace, Agent: ag.Addr}
			case errors.As(err, &dm):
				where := fmt.Sprintf("%s was left as it was", opts.OutFile)
				if !toFile {
					where = "the bytes written to stdout are not the blob"
				}
				return fmt.Errorf("pull through agent %s: %w (%s)", ag.Addr, dm, where)
			}
			return ag.Explain(err)
		},
	}, nil
}

func pullRun(ctx context.Context, opts *PullOptions) error {
	toStdout := opts.OutFile == "" || opts.OutFile == "-"
	if opts.OutFile == "" && opts.IO.IsStdoutTTY() {
		return cmdutil.FlagErrorf("refusing to write a blob to a terminal: pass --file FILE, or --file - to write to stdout anyway")
	}
	if !toStdout {
		if fi, err := os.Stat(opts.OutFile); err == nil && fi.IsDir() {
			return cmdutil.FlagErrorf("--file %s is a directory: name the file to write", opts.OutFile)
		}
	}
	src, err := newPullSource(opts)
	if err != nil {
		return err
	}
	if toStdout {
		bar := &progress{}
		if !opts.IO.IsStdoutTTY() {
			bar = newProgress(opts.IO, -1, "pulling", false)
		}
		_, err := src.pull(ctx, opts.IO.Out, bar.set)
		bar.done(err == nil)
		if err != nil {
			return src.explain(err, false)
		}
		return nil
	}
	start := time.Now()
	size, err := pullToFile(ctx, opts, src)
	if err != nil {
		return err
	}
	if opts.Output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(opts.IO.Out, PullResult{Digest: opts.Digest, Size: size, File: opts.OutFile, Seconds: time.Since(start).Seconds()})
	}
	return nil
}

// PullResult is what `pull --file FILE -o json` prints once FILE is in place.
type PullResult struct {
	Digest  digest.Digest `json:"digest"`
	Size    int64         `json:"size"`
	File    string        `json:"file"`
	Seconds float64       `json:"seconds"`
}

// checkPullOutput validates -o. Until -o meant the format everywhere it named pull's output
// file, so a value that is not a format is most likely a file name from an old script: say
// where the file goes now instead of only "invalid format".
func checkPullOutput(opts *PullOptions) error {
	if err := cmdutil.CheckOutput(opts.Output); err != nil {
		return cmdutil.FlagErrorf("-o/--output is the output format (table or json), not the file: to write the blob to %q use --file %s (-O for short)", opts.Output, opts.Output)
	}
	if opts.Output == cmdutil.OutputJSON && (opts.OutFile == "" || opts.OutFile == "-") {
		return cmdutil.FlagErrorf("-o json prints a summary on stdout, where the blob would go too: write the blob with --file FILE")
	}
	return nil
}

// pullToFile downloads into a temporary file beside opts.OutFile and renames it into place
// once the download is complete and verified; on any failure the temporary file is removed and
// an existing opts.OutFile is left untouched.
func pullToFile(ctx context.Context, opts *PullOptions, src pullSource) (size int64, err error) {
	path := opts.OutFile
	mode := fs.FileMode(0o644)
	if fi, serr := os.Stat(path); serr == nil {
		mode = fi.Mode().Perm() // replacing a file keeps its permissions
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("create file in %s: %w", dir, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()

	bar := newProgress(opts.IO, -1, "pulling", false)
	size, err = src.pull(ctx, tmp, bar.set)
	bar.done(err == nil)
	if err != nil {
		return 0, src.explain(err, true)
	}
	if err := tmp.Chmod(mode); err != nil {
		return 0, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return 0, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return 0, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, fmt.Errorf("write %s: %w", path, err)
	}
	committed = true
	syncDir(dir)
	return size, nil
}

// syncDir makes a rename in dir durable; where directories cannot be synced it does nothing.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close() // a read-only handle, opened to sync
}

// NotFoundError says that no origin has the blob, and no storage backend either.
type NotFoundError struct {
	Digest    digest.Digest
	Namespace string
	// Agent is the agent the pull went through, if any.
	Agent string
	// Registry is the registry the pull asked, if any.
	Registry string
}

func (e *NotFoundError) Error() string {
	if e.Registry != "" {
		return fmt.Sprintf("blob %s not found in repository %s of registry %s", e.Digest, e.Namespace, e.Registry)
	}
	if e.Agent != "" {
		return fmt.Sprintf("blob %s not found (namespace %q): agent %s found it on no tracker or origin", e.Digest, e.Namespace, e.Agent)
	}
	return fmt.Sprintf("blob %s not found on any origin (namespace %q)", e.Digest, e.Namespace)
}

// Unwrap lets errors.Is(err, client.ErrNotFound) see through.
func (e *NotFoundError) Unwrap() error { return client.ErrNotFound }
