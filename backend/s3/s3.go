// Package s3 is a backend.Backend on Amazon S3 or an S3-compatible server (SeaweedFS, MinIO,
// Ceph RGW), through aws-sdk-go-v2.
//
// Layout: the object (namespace, name) is the key [<prefix>/]<namespace>/_objects/<name>. The
// "_objects" element keeps the object "ubuntu" of namespace "library" from sharing a key with
// the directory-like prefix of the namespace "library/ubuntu", which S3-compatible servers
// built on a file tree cannot store side by side; namespace components never start with "_".
//
// Uploads go through the SDK's upload manager: objects up to PartSize bytes in one PutObject,
// larger or unknown-size objects as a multipart upload that S3 makes visible only when it
// completes, so readers see the previous object or the whole new one. A failed or cancelled
// multipart upload is aborted, but when the abort itself cannot be sent (the context is already
// cancelled, the server is unreachable) its parts stay in the bucket: configure the bucket's
// lifecycle rule AbortIncompleteMultipartUpload to reclaim them.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/krakenctl/krakenctl/backend"
)

// ErrAccessDenied means the server refused the request's credentials or their permissions
// (HTTP 401 or 403): a wrong key or secret, an expired session token, or a bucket policy.
var ErrAccessDenied = errors.New("s3: access denied")

// Part sizes accepted by S3 multipart uploads, and the defaults.
const (
	MinPartSize        = 5 << 20
	MaxPartSize        = 5 << 30
	DefaultPartSize    = 64 << 20
	DefaultConcurrency = 4
	maxConcurrency     = 64
)

// Config configures the S3 backend. Call Defaults before Validate; New does both.
type Config struct {
	// Bucket holds the objects. It must exist.
	Bucket string `yaml:"bucket"`
	// Region is the bucket's region. When empty, the standard AWS sources (AWS_REGION, the
	// shared config file) provide it.
	Region string `yaml:"region"`
	// Endpoint is the base URL of an S3-compatible server, e.g. "http://127.0.0.1:9000". When
	// empty, the AWS endpoint for Region is used.
	Endpoint string `yaml:"endpoint"`
	// PathStyle addresses the bucket in the URL path instead of the host name; most
	// S3-compatible servers need it.
	PathStyle bool `yaml:"path_style"`
	// AccessKeyID, SecretAccessKey and SessionToken are static credentials. When AccessKeyID
	// is empty, the standard AWS credential chain is used (AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY, the shared credentials file, web identity, ECS or EC2 roles).
	// The secrets are tagged secret:"true": a role's config may give them as
	// secret_access_key_file and session_token_file, paths of files holding them.
	AccessKeyID     string `yaml:"access_key_id"`
	SecretAccessKey string `yaml:"secret_access_key" secret:"true"`
	SessionToken    string `yaml:"session_token" secret:"true"`
	// Prefix is prepended, with a "/", to every key, so several deployments can share a
	// bucket. It must not start or end with "/".
	Prefix string `yaml:"prefix"`
	// PartSize is the size in bytes of the parts of multipart uploads, between 5 MiB and
	// 5 GiB; default 64 MiB. An upload of unknown size buffers up to (Concurrency+1) parts.
	PartSize int64 `yaml:"part_size"`
	// Concurrency is how many parts of one upload are sent at once, 1 to 64; default 4.
	Concurrency int `yaml:"concurrency"`
}

// Defaults fills in the zero-valued optional fields.
func (c *Config) Defaults() {
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
}

// Validate reports the first configuration error, naming the key as it is spelled in YAML.
func (c Config) Validate() error {
	switch {
	case c.Bucket == "":
		return errors.New("bucket: must be set")
	case strings.ContainsAny(c.Bucket, "/\\ \t\n"):
		return fmt.Errorf("bucket: %q is not a bucket name", c.Bucket)
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("endpoint: %q must be an http or https URL with a host", c.Endpoint)
		}
	}
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		return errors.New("secret_access_key: access_key_id and secret_access_key must be set together")
	}
	if c.SessionToken != "" && c.AccessKeyID == "" {
		return errors.New("session_token: needs access_key_id and secret_access_key")
	}
	if c.Prefix != "" {
		for _, seg := range strings.Split(c.Prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return fmt.Errorf("prefix: %q has an empty, %q or %q segment", c.Prefix, ".", "..")
			}
		}
	}
	if c.PartSize < MinPartSize || c.PartSize > MaxPartSize {
		return fmt.Errorf("part_size: %d bytes is outside [%d, %d] (5 MiB to 5 GiB)", c.PartSize, MinPartSize, MaxPartSize)
	}
	if c.Concurrency < 1 || c.Concurrency > maxConcurrency {
		return fmt.Errorf("concurrency: %d is outside [1, %d]", c.Concurrency, maxConcurrency)
	}
	return nil
}

// api is the part of the S3 client the backend calls directly.
type api interface {
	HeadBucket(ctx context.Context, in *s3.HeadBucketInput, opts ...func(*s3.Options)) (*s3.HeadBucketOutput, error)
	HeadObject(ctx context.Context, in *s3.HeadObjectInput, opts ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	s3.ListObjectsV2APIClient
}

// uploader is the part of the upload manager the backend calls.
type uploader interface {
	Upload(ctx context.Context, in *s3.PutObjectInput, opts ...func(*manager.Uploader)) (*manager.UploadOutput, error)
}

// Backend stores objects in one bucket. It is safe for concurrent use.
type Backend struct {
	bucket string
	prefix string // "" or ending in "/"
	api    api
	up     uploader
	conns  *connSet
}

// New validates cfg (after applying its defaults) and returns a backend. It reads the standard
// AWS configuration sources for whatever cfg leaves out but does not contact the server; see
// Check.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("s3 backend: %w", err)
	}
	var opts []func(*awsconfig.LoadOptions) error
	if cfg.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	}
	if cfg.AccessKeyID != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken)))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3 backend: load AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		return nil, errors.New("s3 backend: region: must be set here or by AWS_REGION")
	}
	// Keep the SDK's client (it carries AWS_CA_BUNDLE and its redirect policy), sized for the
	// upload concurrency, with its connections tracked so Close can end them.
	conns := &connSet{set: make(map[*trackedConn]struct{})}
	if bc, ok := awsCfg.HTTPClient.(*awshttp.BuildableClient); ok {
		awsCfg.HTTPClient = bc.WithTransportOptions(func(tr *http.Transport) {
			tr.MaxIdleConnsPerHost = 2 * cfg.Concurrency
			tr.DialContext = conns.dialer(tr.DialContext)
		})
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		if v2, ok := o.Retryer.(aws.RetryerV2); ok {
			o.Retryer = noThrottleRetry{v2}
		}
	})
	up := manager.NewUploader(client, func(u *manager.Uploader) {
		u.PartSize = cfg.PartSize
		u.Concurrency = cfg.Concurrency
	})
	prefix := ""
	if cfg.Prefix != "" {
		prefix = cfg.Prefix + "/"
	}
	return &Backend{bucket: cfg.Bucket, prefix: prefix, api: client, up: up, conns: conns}, nil
}

// Close ends the backend's network connections. Calls in progress fail, and so do later
// calls.
func (b *Backend) Close() error {
	b.conns.closeAll()
	return nil
}

// Check verifies that the bucket exists and the credentials may use it, for readiness checks
// and for telling a missing bucket apart from a missing object: S3 answers a HEAD of an
// object in a missing bucket with a bare 404.
func (b *Backend) Check(ctx context.Context) error {
	if _, err := b.api.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(b.bucket)}); err != nil {
		if isStatus(err, http.StatusNotFound) {
			return fmt.Errorf("check bucket %s: does not exist: %w", b.bucket, err)
		}
		return fmt.Errorf("check bucket %s: %w", b.bucket, b.mapErr(ctx, err))
	}
	return nil
}

func (b *Backend) dir(namespace string) string {
	return b.prefix + namespace + "/" + backend.ObjectsElem + "/"
}

// Stat implements backend.Backend.
func (b *Backend) Stat(ctx context.Context, namespace, name string) (backend.Info, error) {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return backend.Info{}, fmt.Errorf("stat %s/%s: %w", namespace, name, err)
	}
	out, err := b.api.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: aws.String(b.bucket),
		Key:    aws.String(b.dir(namespace) + name),
	})
	if err != nil {
		return backend.Info{}, fmt.Errorf("stat %s/%s: %w", namespace, name, b.mapErr(ctx, err))
	}
	return backend.Info{Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified)}, nil
}

// Download implements backend.Backend.
func (b *Backend) Download(ctx context.Context, namespace, name string, w io.Writer) error {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return fmt.Errorf("download %s/%s: %w", namespace, name, err)
	}
	out, err := b.api.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(b.bucket),
		Key:    aws.String(b.dir(namespace) + name),
	})
	if err != nil {
		return fmt.Errorf("download %s/%s: %w", namespace, name, b.mapErr(ctx, err))
	}
	defer func() { _ = out.Body.Close() }() // read side: nothing to lose
	body := &backend.ContextReader{Ctx: ctx, R: out.Body}
	n, err := io.Copy(w, body)
	if err != nil {
		if body.Err != nil {
			return fmt.Errorf("download %s/%s: read: %w", namespace, name, b.mapErr(ctx, body.Err))
		}
		return fmt.Errorf("download %s/%s: write: %w", namespace, name, err)
	}
	if want := aws.ToInt64(out.ContentLength); out.ContentLength != nil && n != want {
		return fmt.Errorf("download %s/%s: got %d of %d bytes: %w", namespace, name, n, want, io.ErrUnexpectedEOF)
	}
	return nil
}

var errTooLong = errors.New("reader has more bytes than declared")

// Upload implements backend.Backend.
func (b *Backend) Upload(ctx context.Context, namespace, name string, r io.Reader, size int64) error {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return fmt.Errorf("upload %s/%s: %w", namespace, name, err)
	}
	// The body hides everything but Read, so the manager never seeks; it enforces size, stops
	// at the first read after ctx is done, and keeps the reader's own error.
	var (
		n       int64
		readErr error
	)
	body := readerFunc(func(p []byte) (int, error) {
		if readErr != nil {
			return 0, readErr
		}
		if err := ctx.Err(); err != nil {
			readErr = err
			return 0, err
		}
		if size >= 0 && int64(len(p)) > size-n+1 {
			p = p[:size-n+1] // one byte past size reveals a reader that is too long
		}
		k, err := r.Read(p)
		n += int64(k)
		switch {
		case size >= 0 && n > size:
			readErr = fmt.Errorf("%w (%d)", errTooLong, size)
			return k, readErr
		case err == io.EOF && size >= 0 && n < size:
			readErr = fmt.Errorf("read %d bytes, declared %d: %w", n, size, io.ErrUnexpectedEOF)
			return k, readErr
		case err != nil && err != io.EOF:
			readErr = fmt.Errorf("read: %w", err)
		}
		return k, err
	})
	in := &s3.PutObjectInput{
		Bucket: aws.String(b.bucket),
		Key:    aws.String(b.dir(namespace) + name),
		Body:   body,
	}
	_, err := b.up.Upload(ctx, in)
	if err == nil {
		return nil
	}
	switch {
	case readErr != nil:
		err = readErr
	case ctx.Err() != nil:
		err = ctx.Err()
	default:
		err = b.mapErr(ctx, err)
	}
	return fmt.Errorf("upload %s/%s: %w", namespace, name, err)
}

// List implements backend.Backend.
func (b *Backend) List(ctx context.Context, namespace, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", namespace, err)
	}
	if err := backend.CheckNamespace(namespace); err != nil {
		return nil, fmt.Errorf("list %s: %w", namespace, err)
	}
	if strings.Contains(prefix, "/") {
		return nil, nil // no name contains "/"
	}
	dir := b.dir(namespace)
	p := s3.NewListObjectsV2Paginator(b.api, &s3.ListObjectsV2Input{
		Bucket:    aws.String(b.bucket),
		Prefix:    aws.String(dir + prefix),
		Delimiter: aws.String("/"),
	})
	var names []string
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", namespace, b.mapErr(ctx, err))
		}
		for _, obj := range page.Contents {
			name, ok := strings.CutPrefix(aws.ToString(obj.Key), dir)
			if ok && backend.CheckName(name) == nil {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// mapErr turns SDK errors into the backend's sentinels where one applies.
func (b *Backend) mapErr(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("%w: %w", ctxErr, err)
	}
	if throttled(err) {
		var after time.Duration
		var re *awshttp.ResponseError
		if errors.As(err, &re) && re.Response != nil {
			after = backend.ParseRetryAfter(re.Response.Header.Get("Retry-After"), time.Now())
		}
		return &backend.Throttled{RetryAfter: after, Err: fmt.Errorf("bucket %s: %w", b.bucket, err)}
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() == "NoSuchBucket" {
		return fmt.Errorf("bucket %s does not exist: %w", b.bucket, err)
	}
	var noKey *types.NoSuchKey
	var notFound *types.NotFound
	if errors.As(err, &noKey) || errors.As(err, &notFound) || isStatus(err, http.StatusNotFound) {
		return fmt.Errorf("%w: %w", backend.ErrNotFound, err)
	}
	if isStatus(err, http.StatusUnauthorized) || isStatus(err, http.StatusForbidden) {
		return fmt.Errorf("%w to bucket %s (check the credentials and the bucket policy): %w", ErrAccessDenied, b.bucket, err)
	}
	return err
}

// throttleCodes are the error codes of S3 and S3-compatible servers that ask the caller to
// slow down; the SDK's retry package knows them as throttling too.
var throttleCodes = map[string]bool{
	"SlowDown": true, "Throttling": true, "ThrottlingException": true, "RequestLimitExceeded": true,
	"RequestThrottled": true, "RequestThrottledException": true, "TooManyRequestsException": true,
	"BandwidthLimitExceeded": true, "ServiceUnavailable": true,
}

// throttled reports whether err is the server asking to slow down: a throttling error code,
// or an HTTP 429 or 503 (S3 answers SlowDown with 503).
func throttled(err error) bool {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && throttleCodes[apiErr.ErrorCode()] {
		return true
	}
	var re *awshttp.ResponseError
	return errors.As(err, &re) && backend.ThrottledStatus(re.HTTPStatusCode())
}

// noThrottleRetry is the SDK's retryer (3 attempts by default, AWS_MAX_ATTEMPTS and
// AWS_RETRY_MODE honoured) except that it never retries a throttling answer: those come back
// at once as *backend.Throttled, for the route's limits (backend/limit) or the write-back
// queue to retry with their own backoff. With both retrying, a SlowDown would be sent up to
// 3 × (1 + retries) times, the SDK's waits hidden inside one of the wrapper's attempts, and
// the SDK's retry quota would turn a throttling storm into "retry quota exceeded" errors.
// Failures the wrapper does not retry (500, 502, 504, RequestTimeout, a connection reset
// mid-part) are still retried by the SDK, which can rewind a part's body; a reset before any
// byte moved is retried by both, the one multiplication left.
type noThrottleRetry struct{ aws.RetryerV2 }

func (r noThrottleRetry) IsErrorRetryable(err error) bool {
	return !throttled(err) && r.RetryerV2.IsErrorRetryable(err)
}

func isStatus(err error, status int) bool {
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == status
}

// connSet tracks the connections of one backend's HTTP transport.
type connSet struct {
	mu     sync.Mutex
	closed bool
	set    map[*trackedConn]struct{}
}

var errClosed = errors.New("s3 backend closed")

// dialer wraps dial (nil means a plain net.Dialer) so that its connections are tracked.
func (s *connSet) dialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		t := &trackedConn{Conn: c, owner: s}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			_ = c.Close() // never used: the backend closed while it was dialling
			return nil, errClosed
		}
		s.set[t] = struct{}{}
		return t, nil
	}
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := make([]*trackedConn, 0, len(s.set))
	for c := range s.set {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close() // cutting off requests in flight at shutdown; their callers see the error
	}
}

type trackedConn struct {
	net.Conn
	owner *connSet
}

func (t *trackedConn) Close() error {
	t.owner.mu.Lock()
	delete(t.owner.set, t)
	t.owner.mu.Unlock()
	return t.Conn.Close()
}

// readerFunc adapts a function to io.Reader.
type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// Interface guards
var (
	_ backend.Backend = (*Backend)(nil)
	_ api             = (*s3.Client)(nil)
	_ uploader        = (*manager.Uploader)(nil)
)
