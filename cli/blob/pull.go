package blob

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/client"
)

// PullOptions are the inputs of `krakenctl pull`.
type PullOptions struct {
	deps
	Endpoints endpoints.Flags
	Digest    digest.Digest
	// OutFile is the file to write; "" writes to stdout unless it is a terminal, "-" always
	// writes to stdout.
	OutFile   string
	Namespace string
}

// NewCmdPull returns `krakenctl pull`. runF replaces the run function in tests.
func NewCmdPull(f *cmdutil.Factory, runF func(context.Context, *PullOptions) error) *cobra.Command {
	opts := &PullOptions{deps: depsOf(f)}
	cmd := &cobra.Command{
		Use:   "pull DIGEST [-o FILE]",
		Short: "Download a blob from the origins",
		Long: `Download the blob with the given digest (sha256:<hex> or the hex alone) from the origin
cluster, verifying every byte against the digest.

With -o FILE the blob is written to a temporary file next to FILE and renamed into place only
once it is complete and verified, so FILE is never left partial. Without -o it is written to
stdout, unless stdout is a terminal (use -o - to force it). If an origin fails mid-download the
next owner resumes where it stopped.

Origins come from --origins, else --endpoints-file, else $KRAKENCTL_ORIGINS, else the endpoints
file written by ` + "`krakenctl dev up`" + `.`,
		Example: `  krakenctl pull sha256:4a5c...e1 -o layer.tar
  krakenctl pull 4a5c...e1 | tar x`,
		Args: exactArgs(1, "pull takes one DIGEST argument"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := ParseDigest(args[0])
			if err != nil {
				return cmdutil.FlagErrorf("invalid DIGEST argument: %w", err)
			}
			opts.Digest = d
			if err := checkNamespace(opts.Namespace); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return pullRun(cmd.Context(), opts)
		},
	}
	endpoints.AddFlags(cmd, &opts.Endpoints)
	cmd.Flags().StringVarP(&opts.OutFile, "output", "o", "", "write the blob to `FILE`, complete or not at all (default, or -: stdout)")
	cmd.Flags().StringVar(&opts.Namespace, "namespace", DefaultNamespace, "namespace of the blob (origins route namespaces to storage backends)")
	return cmd
}

func pullRun(ctx context.Context, opts *PullOptions) error {
	toStdout := opts.OutFile == "" || opts.OutFile == "-"
	if opts.OutFile == "" && opts.IO.IsStdoutTTY() {
		return cmdutil.FlagErrorf("refusing to write a blob to a terminal: pass -o FILE, or -o - to write to stdout anyway")
	}
	if !toStdout {
		if fi, err := os.Stat(opts.OutFile); err == nil && fi.IsDir() {
			return cmdutil.FlagErrorf("-o %s is a directory: name the file to write", opts.OutFile)
		}
	}
	origins, err := opts.Endpoints.Resolve(opts.Env)
	if err != nil {
		return err
	}
	cl := client.NewCluster(origins.Addrs, opts.HTTPClient())
	if toStdout {
		bar := &progress{}
		if !opts.IO.IsStdoutTTY() {
			bar = newProgress(opts.IO, -1, "pulling", false)
		}
		_, err := cl.Pull(ctx, opts.Namespace, opts.Digest, opts.IO.Out, bar.set)
		bar.done(err == nil)
		return pullError(opts, origins, err)
	}
	return pullToFile(ctx, opts, origins, cl)
}

// pullToFile downloads into a temporary file beside opts.OutFile and renames it into place
// once the download is complete and verified; on any failure the temporary file is removed and
// an existing opts.OutFile is left untouched.
func pullToFile(ctx context.Context, opts *PullOptions, origins endpoints.Origins, cl *client.Cluster) (err error) {
	path := opts.OutFile
	mode := fs.FileMode(0o644)
	if fi, serr := os.Stat(path); serr == nil {
		mode = fi.Mode().Perm() // replacing a file keeps its permissions
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create file in %s: %w", dir, err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	bar := newProgress(opts.IO, -1, "pulling", false)
	_, err = cl.Pull(ctx, opts.Namespace, opts.Digest, tmp, bar.set)
	bar.done(err == nil)
	if err != nil {
		return pullError(opts, origins, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	committed = true
	syncDir(dir)
	return nil
}

// syncDir makes a rename in dir durable; where directories cannot be synced it does nothing.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	d.Close()
}

// pullError turns a failed pull into the message an operator needs.
func pullError(opts *PullOptions, origins endpoints.Origins, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, client.ErrNotFound):
		return &NotFoundError{Digest: opts.Digest, Namespace: opts.Namespace}
	default:
		return origins.Explain(err)
	}
}

// NotFoundError says that no origin has the blob, and no storage backend either.
type NotFoundError struct {
	Digest    digest.Digest
	Namespace string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("blob %s not found on any origin (namespace %q)", e.Digest, e.Namespace)
}

// Unwrap lets errors.Is(err, client.ErrNotFound) see through.
func (e *NotFoundError) Unwrap() error { return client.ErrNotFound }
