// Package gcs is a backend.Backend on Google Cloud Storage, through Google's Go client
// (cloud.google.com/go/storage) over the JSON API.
//
// Layout: the object (namespace, name) is [<prefix>/]<namespace>/_objects/<name>, as in the s3
// backend, so one bucket copied between the two stores (gsutil rsync, rclone) keeps working and
// the object "ubuntu" of namespace "library" never shares a key with the folder of the namespace
// "library/ubuntu" (a bucket with hierarchical namespace enabled has real folders).
//
// Uploads: an object of known size up to ChunkSize bytes goes in one request; a larger one, or
// one of unknown size, as a resumable upload in ChunkSize pieces, each buffered and retried on
// its own. GCS creates the object only when the last piece (or the single request) arrives, so
// readers see the previous object or the whole new one; an upload that fails (a short or long
// reader, a read error, a cancelled ctx) is abandoned by cancelling the request's context
// before that last piece is sent. The client sends the CRC32C of what it read and GCS refuses
// an object whose bytes do not match it.
//
// Throttling (HTTP 429, or a 503 that says rateLimitExceeded or carries Retry-After) is not
// retried by the client: it is returned at once as a *backend.Throttled so the one retry policy
// for every backend decides how long to wait. Other transient failures (connection resets, 5xx)
// are retried by the client a few times for idempotent calls.
package gcs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/krakenctl/krakenctl/backend"
)

// ErrPermissionDenied means GCS refused the request's credentials or their permissions (HTTP
// 401 or 403), or no credentials could be obtained at all.
var ErrPermissionDenied = errors.New("permission denied")

// Chunk sizes of resumable uploads. GCS wants every chunk but the last to be a multiple of
// 256 KiB; each upload buffers one chunk in memory.
const (
	ChunkAlign       = 256 << 10
	MinChunkSize     = ChunkAlign
	MaxChunkSize     = 1 << 30
	DefaultChunkSize = 16 << 20
)

// maxAttempts bounds the client's own retries of transient failures of idempotent calls, so a
// store that keeps failing is reported instead of retried until ctx ends.
const maxAttempts = 3

// Config configures the GCS backend. Call Defaults before Validate; New does both.
type Config struct {
	// Bucket holds the objects. It must exist.
	Bucket string `yaml:"bucket"`
	// Prefix is prepended, with a "/", to every object name, so several deployments can share
	// a bucket. It must not start or end with "/".
	Prefix string `yaml:"prefix"`
	// Endpoint is the base URL of another server speaking the GCS JSON API (an emulator such
	// as fake-gcs-server, a Private Service Connect endpoint), e.g. "http://127.0.0.1:4443";
	// "/storage/v1/" is appended when the URL has no path. When it is set and CredentialsFile
	// is not, requests carry no credentials. Default: Google's endpoint.
	Endpoint string `yaml:"endpoint"`
	// CredentialsFile is the path of a service-account key (JSON). When empty, application
	// default credentials are used: GOOGLE_APPLICATION_CREDENTIALS, gcloud's user credentials,
	// or the metadata server (GCE, GKE workload identity).
	CredentialsFile string `yaml:"credentials_file"`
	// ChunkSize is the size in bytes of the pieces of resumable uploads, a multiple of 256 KiB
	// up to 1 GiB; default 16 MiB. Objects of known size up to ChunkSize go in one request.
	ChunkSize int `yaml:"chunk_size"`
}

// Defaults fills in the zero-valued optional fields.
func (c *Config) Defaults() {
	if c.ChunkSize == 0 {
		c.ChunkSize = DefaultChunkSize
	}
}

// Validate reports the first configuration error, naming the key as it is spelled in YAML.
func (c Config) Validate() error {
	if err := validBucket(c.Bucket); err != nil {
		return err
	}
	if c.Prefix != "" {
		for _, seg := range strings.Split(c.Prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return fmt.Errorf("prefix: %q has an empty, %q or %q segment", c.Prefix, ".", "..")
			}
		}
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.User != nil {
			return fmt.Errorf("endpoint: %q must be an http or https URL with a host and no query or user", c.Endpoint)
		}
	}
	if strings.TrimSpace(c.CredentialsFile) != c.CredentialsFile {
		return fmt.Errorf("credentials_file: %q has leading or trailing spaces", c.CredentialsFile)
	}
	if c.ChunkSize < MinChunkSize || c.ChunkSize > MaxChunkSize || c.ChunkSize%ChunkAlign != 0 {
		return fmt.Errorf("chunk_size: %d bytes must be a multiple of %d (256 KiB) between %d and %d (1 GiB)",
			c.ChunkSize, ChunkAlign, MinChunkSize, MaxChunkSize)
	}
	return nil
}

// validBucket applies GCS's bucket naming rules that matter here: 3 to 63 characters (up to
// 222 with dots), lower-case letters, digits, "-", "_" and ".", starting and ending with a
// letter or digit.
func validBucket(b string) error {
	if b == "" {
		return errors.New("bucket: must be set")
	}
	limit := 63
	if strings.Contains(b, ".") {
		limit = 222
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	if len(b) < 3 || len(b) > limit || !alnum(b[0]) || !alnum(b[len(b)-1]) {
		return fmt.Errorf("bucket: %q is not a GCS bucket name (3-63 characters, starting and ending with a letter or digit)", b)
	}
	for i := 0; i < len(b); i++ {
		if c := b[i]; !alnum(c) && c != '-' && c != '_' && c != '.' {
			return fmt.Errorf("bucket: %q is not a GCS bucket name (byte %q; only a-z, 0-9, '-', '_', '.')", b, c)
		}
	}
	return nil
}

// endpointURL is the JSON API base URL the client wants for cfg.Endpoint.
func endpointURL(ep string) string {
	u, _ := url.Parse(ep) // Validate has parsed it
	if u.Path == "" || u.Path == "/" {
		u.Path = "/storage/v1/"
	} else if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	return u.String()
}

// maxKeyFile bounds what is read of credentials_file; a service-account key is about 2 KiB.
const maxKeyFile = 64 << 10

// readServiceAccount reads a service-account key and checks that it is one. The client's own
// typed option does not stop another kind of file from being followed, and an external-account
// file can name a program to run or a URL to fetch: only a key is taken from the config.
func readServiceAccount(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read-only
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("%s: larger than %d bytes: not a service-account key", path, maxKeyFile)
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("%s: not a service-account key (JSON): %w", path, err)
	}
	if head.Type != "service_account" {
		return nil, fmt.Errorf("%s: type %q is not a service-account key (\"service_account\"); other kinds of credentials go in GOOGLE_APPLICATION_CREDENTIALS", path, head.Type)
	}
	return data, nil
}

// Backend stores objects in one bucket. It is safe for concurrent use.
type Backend struct {
	bucket    string
	prefix    string // "" or ending in "/"
	chunkSize int
	client    *storage.Client
	h         *storage.BucketHandle

	// bucketSeen is when the bucket was last found to exist (Unix nanoseconds; 0: never). A
	// read of a missing bucket's object answers 404 like a missing object; notFound asks about
	// the bucket before it reports "not found", at most every bucketRecheck.
	bucketSeen atomic.Int64
}

// bucketRecheck is how long a bucket seen to exist is trusted when an object is not found.
const bucketRecheck = time.Minute

// notFound is mapErr for a read's error: an object that does not exist is backend.ErrNotFound
// only in a bucket that does. A missing or misspelled bucket is a configuration error, which
// would otherwise answer every pull "blob unknown" (and fill the origin's negative cache).
func (b *Backend) notFound(ctx context.Context, err error) error {
	if !errors.Is(err, storage.ErrObjectNotExist) || ctx.Err() != nil {
		return b.mapErr(ctx, err)
	}
	if seen := b.bucketSeen.Load(); seen != 0 && time.Since(time.Unix(0, seen)) < bucketRecheck {
		return b.mapErr(ctx, err)
	}
	if _, berr := b.h.Attrs(ctx); errors.Is(berr, storage.ErrBucketNotExist) {
		return fmt.Errorf("bucket %s does not exist: %w", b.bucket, berr)
	} else if berr == nil {
		b.bucketSeen.Store(time.Now().UnixNano())
	}
	return b.mapErr(ctx, err)
}

// New validates cfg (after applying its defaults) and returns a backend. It reads the
// credentials (the file, or the application default credentials) but does not contact the
// bucket; see Check.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gcs backend: %w", err)
	}
	// JSON reads: one API for every call, so errors and throttling answers look the same
	// everywhere, and an emulator at Endpoint serves downloads too.
	opts := []option.ClientOption{storage.WithJSONReads(), storage.WithDisabledClientMetrics()}
	if cfg.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(endpointURL(cfg.Endpoint)))
	}
	switch {
	case cfg.CredentialsFile != "":
		key, err := readServiceAccount(cfg.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("gcs backend: bucket %s: credentials_file: %w", cfg.Bucket, err)
		}
		opts = append(opts, option.WithAuthCredentialsJSON(option.ServiceAccount, key))
	case cfg.Endpoint != "":
		opts = append(opts, option.WithoutAuthentication())
	}
	client, err := storage.NewClient(ctx, opts...)
	if err != nil {
		var hint string
		switch {
		case cfg.CredentialsFile != "":
			hint = fmt.Sprintf("credentials_file %s", cfg.CredentialsFile)
		default:
			hint = "application default credentials (set credentials_file, GOOGLE_APPLICATION_CREDENTIALS, or run on GCP with a service account)"
		}
		return nil, fmt.Errorf("gcs backend: bucket %s: credentials: %s: %w", cfg.Bucket, hint, err)
	}
	client.SetRetry(
		storage.WithMaxAttempts(maxAttempts),
		storage.WithErrorFunc(func(err error) bool {
			// Throttling goes back to the caller at once, with its Retry-After.
			return !isThrottle(err) && storage.ShouldRetry(err)
		}),
	)
	prefix := ""
	if cfg.Prefix != "" {
		prefix = cfg.Prefix + "/"
	}
	return &Backend{
		bucket:    cfg.Bucket,
		prefix:    prefix,
		chunkSize: cfg.ChunkSize,
		client:    client,
		h:         client.Bucket(cfg.Bucket),
	}, nil
}

// Close releases the client. Later calls fail.
func (b *Backend) Close() error {
	return b.client.Close()
}

// Check verifies that the bucket exists and the credentials may read it, for readiness checks
// and for telling a missing bucket apart from a missing object: GCS answers a read of an
// object in a missing bucket with a plain 404.
func (b *Backend) Check(ctx context.Context) error {
	if _, err := b.h.Attrs(ctx); err != nil {
		if errors.Is(err, storage.ErrBucketNotExist) {
			return fmt.Errorf("gcs: bucket %s: does not exist: %w", b.bucket, err)
		}
		return fmt.Errorf("gcs: check bucket: %w", b.mapErr(ctx, err))
	}
	return nil
}

func (b *Backend) dir(namespace string) string {
	return b.prefix + namespace + "/" + backend.ObjectsElem + "/"
}

func (b *Backend) object(namespace, name string) *storage.ObjectHandle {
	return b.h.Object(b.dir(namespace) + name)
}

// Stat implements backend.Backend.
func (b *Backend) Stat(ctx context.Context, namespace, name string) (backend.Info, error) {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return backend.Info{}, fmt.Errorf("gcs: stat %s/%s: %w", namespace, name, err)
	}
	attrs, err := b.object(namespace, name).Attrs(ctx)
	if err != nil {
		return backend.Info{}, fmt.Errorf("gcs: stat %s/%s: %w", namespace, name, b.notFound(ctx, err))
	}
	return backend.Info{Size: attrs.Size, ModTime: attrs.Updated}, nil
}

// Download implements backend.Backend. It fails unless it wrote exactly the object's length,
// and the client checks the whole body against the object's CRC32C.
func (b *Backend) Download(ctx context.Context, namespace, name string, w io.Writer) error {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return fmt.Errorf("gcs: download %s/%s: %w", namespace, name, err)
	}
	// Objects written here have no Content-Encoding, so GCS never transcodes them; one that
	// does (written by another tool with gzip) fails the length check below rather than
	// returning other bytes than it stores.
	r, err := b.object(namespace, name).NewReader(ctx)
	if err != nil {
		return fmt.Errorf("gcs: download %s/%s: %w", namespace, name, b.notFound(ctx, err))
	}
	defer func() { _ = r.Close() }() // read side: nothing to lose
	body := &backend.ContextReader{Ctx: ctx, R: r}
	n, err := io.Copy(w, body)
	if err != nil {
		if body.Err != nil {
			return fmt.Errorf("gcs: download %s/%s: read: %w", namespace, name, b.mapErr(ctx, body.Err))
		}
		return fmt.Errorf("gcs: download %s/%s: write: %w", namespace, name, err)
	}
	if want := r.Attrs.Size; n != want {
		return fmt.Errorf("gcs: download %s/%s: got %d of %d bytes: %w", namespace, name, n, want, io.ErrUnexpectedEOF)
	}
	return nil
}

var errTooLong = errors.New("reader has more bytes than declared")

// Upload implements backend.Backend.
func (b *Backend) Upload(ctx context.Context, namespace, name string, r io.Reader, size int64) error {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return fmt.Errorf("gcs: upload %s/%s: %w", namespace, name, err)
	}
	err := b.upload(ctx, namespace, name, r, size)
	if err != nil {
		return fmt.Errorf("gcs: upload %s/%s: %w", namespace, name, err)
	}
	return nil
}

func (b *Backend) upload(ctx context.Context, namespace, name string, r io.Reader, size int64) error {
	// The writer's requests run under wctx: cancelling it before Close abandons the upload
	// (GCS never sees its last piece), which is how every failure below leaves the previous
	// object in place.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := b.object(namespace, name).NewWriter(wctx)
	w.ContentType = "application/octet-stream"
	if size >= 0 && size <= int64(b.chunkSize) {
		// One request streamed from r: no chunk buffer for the many small blobs.
		w.ChunkSize = 0
	} else {
		w.ChunkSize = b.chunkSize
	}
	src := io.Reader(r)
	if size >= 0 {
		src = io.LimitReader(r, size+1) // one byte past size reveals a reader that is too long
	}
	if w.ChunkSize == 0 {
		// A one-request upload is read whole before a byte is sent, so a reader of the wrong
		// length is caught with nothing sent: its request body is a pipe the server reads as
		// it streams, and fake-gcs-server committed a body cut short by an abandoned request
		// (the conformance suite's size mismatch, now and then). At most chunk_size bytes.
		buf, err := io.ReadAll(&backend.ContextReader{Ctx: ctx, R: src})
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			return fmt.Errorf("read: %w", err)
		case int64(len(buf)) > size:
			return fmt.Errorf("%w (%d)", errTooLong, size)
		case int64(len(buf)) < size:
			return fmt.Errorf("read %d bytes, declared %d: %w", len(buf), size, io.ErrUnexpectedEOF)
		}
		src = bytes.NewReader(buf)
		// Sent with the request, the checksum lets GCS refuse a body damaged on the way before
		// it commits it; the client's own check of a one-request upload runs only after the
		// server answered, when the damaged object has already replaced the good one.
		w.CRC32C = crc32.Checksum(buf, crc32.MakeTable(crc32.Castagnoli))
		w.SendCRC32C = true
	}
	body := &backend.ContextReader{Ctx: ctx, R: src}
	n, err := io.Copy(w, body)
	abandon := func(cause error) error {
		// The writer reads what it sends from a pipe that Close ends with EOF, which sends a
		// resumable upload's last piece and finalizes the object: after a mere cancel, Close
		// could do that before the transport saw the cancel. CloseWithError ends the pipe with
		// an error first, which no later Close can turn into EOF.
		_ = w.CloseWithError(cause) //nolint:staticcheck // SA1019: the cancel it recommends instead races with Close, above
		cancel()
		_ = w.Close() // fails, with the error above: the upload is abandoned; waits for its goroutine
		return cause
	}
	switch {
	case body.Err != nil && ctx.Err() != nil:
		return abandon(ctx.Err())
	case body.Err != nil:
		return abandon(fmt.Errorf("read: %w", body.Err))
	case err != nil:
		// The writer failed: its request got an error answer.
		return abandon(b.mapUploadErr(ctx, err))
	case size >= 0 && n > size:
		return abandon(fmt.Errorf("%w (%d)", errTooLong, size))
	case size >= 0 && n < size:
		return abandon(fmt.Errorf("read %d bytes, declared %d: %w", n, size, io.ErrUnexpectedEOF))
	}
	if err := ctx.Err(); err != nil {
		return abandon(err)
	}
	if err := w.Close(); err != nil {
		return b.mapUploadErr(ctx, err)
	}
	return nil
}

// mapUploadErr is mapErr for uploads, where a 404 is no object's absence but a missing bucket
// (or an expired resumable session): not ErrNotFound, which callers take to mean "no such
// object".
func (b *Backend) mapUploadErr(ctx context.Context, err error) error {
	var ge *googleapi.Error
	if ctx.Err() == nil && errors.As(err, &ge) && ge.Code == http.StatusNotFound {
		return fmt.Errorf("bucket %s does not exist (or the upload session expired): %w", b.bucket, err)
	}
	return b.mapErr(ctx, err)
}

// List implements backend.Backend. The "/" delimiter keeps the objects of nested namespaces
// ("library/ubuntu" under "library") out of the listing: they come back as prefixes, which
// are skipped.
func (b *Backend) List(ctx context.Context, namespace, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("gcs: list %s: %w", namespace, err)
	}
	if err := backend.CheckNamespace(namespace); err != nil {
		return nil, fmt.Errorf("gcs: list %s: %w", namespace, err)
	}
	if strings.Contains(prefix, "/") {
		return nil, nil // no name contains "/"
	}
	dir := b.dir(namespace)
	q := &storage.Query{Prefix: dir + prefix, Delimiter: "/"}
	if err := q.SetAttrSelection([]string{"Name"}); err != nil {
		return nil, fmt.Errorf("gcs: list %s: %w", namespace, err)
	}
	it := b.h.Objects(ctx, q)
	var names []string
	for {
		attrs, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("gcs: list %s: %w", namespace, b.mapErr(ctx, err))
		}
		if attrs.Prefix != "" {
			continue // a "directory": a nested namespace
		}
		name, ok := strings.CutPrefix(attrs.Name, dir)
		if ok && backend.CheckName(name) == nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// Delete implements backend.Deleter. GCS answers a delete of a missing object with 404, so no
// lookup is needed first.
func (b *Backend) Delete(ctx context.Context, namespace, name string) error {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return fmt.Errorf("gcs: delete %s/%s: %w", namespace, name, err)
	}
	if err := b.object(namespace, name).Delete(ctx); err != nil {
		return fmt.Errorf("gcs: delete %s/%s: %w", namespace, name, b.mapErr(ctx, err))
	}
	return nil
}

// mapErr turns client errors into the backend's sentinels where one applies.
func (b *Backend) mapErr(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("%w: %w", ctxErr, err)
	}
	if errors.Is(err, storage.ErrObjectNotExist) {
		return fmt.Errorf("%w: %w", backend.ErrNotFound, err)
	}
	if errors.Is(err, storage.ErrBucketNotExist) {
		return fmt.Errorf("bucket %s does not exist: %w", b.bucket, err)
	}
	var authErr *auth.Error
	if errors.As(err, &authErr) {
		return fmt.Errorf("bucket %s: %w: credentials could not be used (check credentials_file or the application default credentials): %w",
			b.bucket, ErrPermissionDenied, err)
	}
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		return err
	}
	switch {
	case ge.Code == http.StatusNotFound:
		return fmt.Errorf("%w: %w", backend.ErrNotFound, err)
	case ge.Code == http.StatusUnauthorized || ge.Code == http.StatusForbidden:
		return fmt.Errorf("bucket %s: %w (check the credentials and the bucket's IAM roles): %w", b.bucket, ErrPermissionDenied, err)
	case isThrottle(err):
		return &backend.Throttled{
			RetryAfter: retryAfter(ge.Header.Get("Retry-After"), time.Now()),
			Err:        fmt.Errorf("bucket %s: %w", b.bucket, err),
		}
	}
	return err
}

// isThrottle reports whether err is GCS asking the caller to slow down: a 429, or a 503 whose
// reason is rateLimitExceeded or that carries Retry-After (a plain 503 is an outage, which the
// client retries a few times like other transient failures).
func isThrottle(err error) bool {
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		return false
	}
	switch ge.Code {
	case http.StatusTooManyRequests:
		return true
	case http.StatusServiceUnavailable:
		if ge.Header.Get("Retry-After") != "" {
			return true
		}
		for _, item := range ge.Errors {
			if item.Reason == "rateLimitExceeded" || item.Reason == "userRateLimitExceeded" {
				return true
			}
		}
	}
	return false
}

// retryAfter parses a Retry-After header: delay seconds or an HTTP date. It returns 0 for an
// absent, malformed or past value.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		const maxSecs = int64(24 * time.Hour / time.Second) // a sane cap on a hostile value
		return time.Duration(min(secs, maxSecs)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), 24*time.Hour)
	}
	return 0
}

// Interface guards
var (
	_ backend.Backend = (*Backend)(nil)
	_ backend.Deleter = (*Backend)(nil)
)
