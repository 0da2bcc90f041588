package blob

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/client"
)

// pushRetries is how many times a failed chunk is resumed before an origin is given up.
const pushRetries = 3

// PushOptions are the inputs of `krakenctl push`.
type PushOptions struct {
	deps
	Endpoints endpoints.Flags
	// Path is the file to push, or "-" for stdin.
	Path      string
	Namespace string
	ChunkSize int64
	Output    string
	// Registry, when it names one, pushes into repository Namespace of that registry (a
	// proxy) with the distribution API instead of to the origins.
	Registry cmdutil.RegistryFlags

	reg *cmdutil.Registry
}

// NewCmdPush returns `krakenctl push`. runF replaces the run function in tests.
func NewCmdPush(f *cmdutil.Factory, runF func(context.Context, *PushOptions) error) *cobra.Command {
	opts := &PushOptions{deps: depsOf(f)}
	chunk := sizeFlag(client.DefaultChunkSize)
	cmd := &cobra.Command{
		Use:   "push FILE|-",
		Short: "Upload a blob to the origins and print its digest",
		Long: `Upload a file (or stdin, with -) to the origin cluster and print its digest.

The file is read once to compute its sha256 digest, then uploaded in chunks to the first origin
that owns the digest on the hash ring; that origin copies it to the other owners and writes it
back to storage. A chunk that fails is resumed, not restarted. Only the digest is printed on
stdout, so the output can be captured; a progress bar is drawn on stderr when it is a terminal.

Origins come from --origins, else --endpoints-file, else $KRAKENCTL_ORIGINS, else the endpoints
file written by ` + "`krakenctl dev up`" + `.

With --registry (or $KRAKENCTL_REGISTRY) the blob goes through a registry, the proxy, into
repository --namespace with the distribution API, as docker pushes a layer: the proxy
authenticates the push. Credentials are --username with the password on stdin
(--password-stdin), else those ` + "`docker login`" + ` stored for the registry in Docker's config.json
(credential helpers included).`,
		Example: `  # push a file and keep its digest
  d=$(krakenctl push layer.tar)

  # push from a pipe into another namespace, print JSON
  tar c dir | krakenctl push - --namespace team/builds -o json

  # push through the proxy, as a user who logged in with docker login
  krakenctl push layer.tar --registry registry.example.com --namespace team/app

  # push through the proxy with a password from a file
  krakenctl push layer.tar --registry 10.0.0.9:15400 --namespace team/app --username ci --password-stdin < pw`,
		Args: exactArgs(1, "push takes one FILE argument (or - for stdin)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Path = args[0]
			opts.ChunkSize = int64(chunk)
			if err := checkNamespace(opts.Namespace); err != nil {
				return err
			}
			if opts.ChunkSize <= 0 {
				return cmdutil.FlagErrorf("invalid --chunk-size %s: must be more than 0 bytes", chunk.String())
			}
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			reg, err := opts.Registry.Resolve(opts.Env, opts.IO.In, opts.Path == "-")
			if err != nil {
				return err
			}
			if reg != nil && (len(opts.Endpoints.Origins) > 0 || opts.Endpoints.File != "") {
				return cmdutil.FlagErrorf("%s pushes through a registry; --origins and --endpoints-file push to the origins: pass one or the other", reg.Source)
			}
			opts.reg = reg
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return pushRun(cmd.Context(), opts)
		},
	}
	endpoints.AddFlags(cmd, &opts.Endpoints)
	cmdutil.AddRegistryFlags(cmd, &opts.Registry, "the blob")
	cmd.Flags().StringVar(&opts.Namespace, "namespace", DefaultNamespace, "namespace of the blob (origins route namespaces to storage backends)")
	cmd.Flags().Var(&chunk, "chunk-size", "size of each upload request, such as 8MiB or 1GiB")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func pushRun(ctx context.Context, opts *PushOptions) error {
	if opts.reg != nil {
		return pushRegistryRun(ctx, opts)
	}
	origins, err := opts.Endpoints.Resolve(opts.Env)
	if err != nil {
		return err
	}
	src, err := openSource(opts)
	if err != nil {
		return err
	}
	defer src.close()

	bar := newProgress(opts.IO, src.size, "pushing", false)
	res, err := client.NewCluster(origins.Addrs, opts.HTTPClient()).Push(ctx, opts.Namespace, src.digest, src.f, src.size,
		client.UploadOptions{
			ChunkSize: opts.ChunkSize,
			Retries:   pushRetries,
			Progress:  func(done int64) { bar.set(done, src.size) },
		})
	bar.done(err == nil)
	if err != nil {
		return origins.Explain(err)
	}
	if opts.Output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(opts.IO.Out, res)
	}
	_, err = fmt.Fprintln(opts.IO.Out, res.Digest)
	return err
}

// pushRegistryRun is pushRun through a registry.
func pushRegistryRun(ctx context.Context, opts *PushOptions) error {
	src, err := openSource(opts)
	if err != nil {
		return err
	}
	defer src.close()
	res, err := pushToRegistry(ctx, opts, opts.reg, src)
	if err != nil {
		return err
	}
	if opts.Output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(opts.IO.Out, res)
	}
	_, err = fmt.Fprintln(opts.IO.Out, res.Digest)
	return err
}

// source is the file being pushed, already hashed.
type source struct {
	f      *os.File
	digest digest.Digest
	size   int64
	spool  string // temporary copy of stdin or a pipe, removed by close
}

func (s *source) close() {
	_ = s.f.Close() // read-only
	if s.spool != "" {
		_ = os.Remove(s.spool)
	}
}

// openSource opens opts.Path and hashes it. Stdin, pipes and other files that cannot be read
// twice are spooled to a temporary file in os.TempDir while they are hashed.
func openSource(opts *PushOptions) (*source, error) {
	if opts.Path == "-" {
		return spool(opts, opts.IO.In, "stdin")
	}
	f, err := os.Open(opts.Path)
	if err != nil {
		return nil, err // *PathError names the file: "open x.tar: no such file or directory"
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("stat %s: %w", opts.Path, err)
	}
	switch {
	case fi.IsDir():
		_ = f.Close()
		return nil, fmt.Errorf("push %s: is a directory (push one file, or a tar of the directory through -)", opts.Path)
	case !fi.Mode().IsRegular():
		defer func() { _ = f.Close() }()
		return spool(opts, f, opts.Path)
	}
	src := &source{f: f}
	bar := newProgress(opts.IO, fi.Size(), "hashing", true)
	h := sha256.New()
	n, err := io.Copy(h, &readCounter{r: f, fn: func(n int64) { bar.set(n, fi.Size()) }})
	bar.clear()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("read %s: %w", opts.Path, err)
	}
	src.digest, src.size = digest.NewDigest(digest.SHA256, h), n
	return src, nil
}

// spool copies r to a temporary file while hashing it. name labels errors.
func spool(opts *PushOptions, r io.Reader, name string) (*source, error) {
	f, err := os.CreateTemp("", "krakenctl-push-*")
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", name, err)
	}
	src := &source{f: f, spool: f.Name()}
	bar := newProgress(opts.IO, -1, "reading "+name, true)
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), &readCounter{r: r, fn: func(n int64) { bar.set(n, -1) }})
	bar.clear()
	if err != nil {
		src.close()
		var pe *os.PathError
		if errors.As(err, &pe) && pe.Path == f.Name() {
			return nil, fmt.Errorf("spool %s to %s: %w", name, os.TempDir(), err)
		}
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	src.digest, src.size = digest.NewDigest(digest.SHA256, h), n
	return src, nil
}

// readCounter reports the running byte count of a reader.
type readCounter struct {
	r  io.Reader
	n  int64
	fn func(n int64)
}

func (c *readCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.fn(c.n)
	return n, err
}
