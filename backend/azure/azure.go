// Package azure is a backend.Backend on Azure Blob Storage (or Azurite, its emulator), through
// the Azure SDK for Go (azblob), authenticated by the account's shared key, a SAS token or the
// host's managed identity.
//
// Layout: the object (namespace, name) is the block blob [<prefix>/]<namespace>/_objects/<name>
// of the container, the same key layout as the s3 backend, for the same reason: the "_objects"
// element keeps the object "ubuntu" of namespace "library" apart from the blobs of namespace
// "library/ubuntu", and List asks for one level of the "/" hierarchy so nested namespaces are
// not listed.
//
// Uploads of up to block_size bytes are one Put Blob request, atomic on the service. Larger or
// unknown-size uploads stage blocks (Put Block) and commit them with Put Block List once every
// byte has been read and counted; uncommitted blocks are invisible, so readers see the previous
// blob or the whole new one, and a failed upload leaves the previous blob as it was (its
// staged blocks are discarded by the service at the blob's next commit, or after a week).
// Azure keeps one set of uncommitted blocks per blob name: when two uploads of the same large
// blob overlap, the first commit discards the other's blocks and the second commit fails
// (InvalidBlockList); the caller retries it.
//
// Throttling: the service's 429 and 503 ServerBusy answers come back as *backend.Throttled with
// the service's Retry-After, not retried inside the SDK, so one retry policy above the backends
// paces every store alike. The one exception is Put Block: a staged block is in memory, and
// retrying it alone is far cheaper than restarting the whole upload.
package azure

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/krakenctl/krakenctl/backend"
)

// Backend stores objects in one container. It is safe for concurrent use.
type Backend struct {
	account     string
	container   string
	prefix      string // "" or ending in "/"
	client      *container.Client
	transport   *http.Transport
	blockSize   int64
	concurrency int
}

// retryOptions retries what a retry can fix inside one call (a dropped connection, a 500, a
// gateway timeout) but not the service's "slow down" (429, 503): those reach the caller as
// *backend.Throttled. blockRetryOptions, for Put Block only, retries those too.
var (
	retryOptions = policy.RetryOptions{
		MaxRetries: 3,
		StatusCodes: []int{
			http.StatusRequestTimeout,
			http.StatusInternalServerError,
			http.StatusBadGateway,
			http.StatusGatewayTimeout,
		},
	}
	blockRetryOptions = policy.RetryOptions{
		MaxRetries: 5,
		StatusCodes: []int{
			http.StatusRequestTimeout,
			http.StatusTooManyRequests,
			http.StatusInternalServerError,
			http.StatusBadGateway,
			http.StatusServiceUnavailable,
			http.StatusGatewayTimeout,
		},
	}
)

// New validates cfg (after applying its defaults), reads the credential it names and returns
// a backend. It does not contact the service; see Check.
func New(cfg Config) (*Backend, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("azure backend: %w", err)
	}
	// A transport of our own, sized for the upload concurrency, so Close can end its
	// connections.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2 * cfg.Concurrency
	opts := &container.ClientOptions{ClientOptions: azcore.ClientOptions{
		Retry:     retryOptions,
		Transport: &http.Client{Transport: tr},
	}}
	containerURL := cfg.serviceURL() + "/" + cfg.Container
	var (
		client *container.Client
		err    error
	)
	switch {
	case cfg.AccountKeyFile != "" || cfg.AccountKeyEnv != "":
		key, kerr := secret("account_key_file", cfg.AccountKeyFile, "account_key_env", cfg.AccountKeyEnv)
		if kerr != nil {
			return nil, fmt.Errorf("azure backend: %w", kerr)
		}
		cred, kerr := container.NewSharedKeyCredential(cfg.Account, key)
		if kerr != nil {
			// The SDK's message would not name the key; its error is only "illegal base64".
			return nil, fmt.Errorf("azure backend: %s: the account key is not valid base64", keyOf(cfg.AccountKeyFile != "", "account_key_file", "account_key_env"))
		}
		client, err = container.NewClientWithSharedKeyCredential(containerURL, cred, opts)
	case cfg.SASTokenFile != "" || cfg.SASTokenEnv != "":
		token, serr := secret("sas_token_file", cfg.SASTokenFile, "sas_token_env", cfg.SASTokenEnv)
		if serr != nil {
			return nil, fmt.Errorf("azure backend: %w", serr)
		}
		if token, serr = parseSAS(token); serr != nil {
			return nil, fmt.Errorf("azure backend: %s: the token %w", keyOf(cfg.SASTokenFile != "", "sas_token_file", "sas_token_env"), serr)
		}
		client, err = container.NewClientWithNoCredential(containerURL+"?"+token, opts)
	default: // managed identity; Validate made sure
		var id azidentity.ManagedIDKind
		if cfg.ClientID != "" {
			id = azidentity.ClientID(cfg.ClientID)
		}
		cred, cerr := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: id})
		if cerr != nil {
			return nil, fmt.Errorf("azure backend: managed_identity: %w", cerr)
		}
		client, err = container.NewClient(containerURL, cred, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("azure backend: container %s of account %s: %w", cfg.Container, cfg.Account, &redacted{err: err})
	}
	prefix := ""
	if cfg.Prefix != "" {
		prefix = cfg.Prefix + "/"
	}
	return &Backend{
		account:     cfg.Account,
		container:   cfg.Container,
		prefix:      prefix,
		client:      client,
		transport:   tr,
		blockSize:   cfg.BlockSize,
		concurrency: cfg.Concurrency,
	}, nil
}

func keyOf(first bool, a, b string) string {
	if first {
		return a
	}
	return b
}

// Close ends the backend's idle network connections. It exists for tests and shutdown; the
// backend stays usable and opens new connections when called again.
func (b *Backend) Close() error {
	b.transport.CloseIdleConnections()
	return nil
}

// Check verifies that the container exists and the credentials may use it, for readiness
// checks: a missing container or a refused credential is named as such rather than showing up
// as the first failed download.
func (b *Backend) Check(ctx context.Context) error {
	if _, err := b.client.GetProperties(ctx, nil); err != nil {
		return b.fail(ctx, "check", "container "+b.container, err)
	}
	return nil
}

func (b *Backend) blobName(namespace, name string) string {
	return b.dir(namespace) + name
}

func (b *Backend) dir(namespace string) string {
	return b.prefix + namespace + "/" + backend.ObjectsElem + "/"
}

// Stat implements backend.Backend.
func (b *Backend) Stat(ctx context.Context, namespace, name string) (backend.Info, error) {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return backend.Info{}, fmt.Errorf("azure: stat %s/%s: %w", namespace, name, err)
	}
	props, err := b.client.NewBlobClient(b.blobName(namespace, name)).GetProperties(ctx, nil)
	if err != nil {
		return backend.Info{}, b.fail(ctx, "stat", namespace+"/"+name, err)
	}
	if props.ContentLength == nil {
		return backend.Info{}, fmt.Errorf("azure: stat %s/%s: the service sent no Content-Length", namespace, name)
	}
	info := backend.Info{Size: *props.ContentLength}
	if props.LastModified != nil {
		info.ModTime = *props.LastModified
	}
	return info, nil
}

// Download implements backend.Backend. It reads the blob in one GET, so a blob replaced while
// it is read is seen whole, as it was when the GET began; the bytes are counted against the
// Content-Length, so a connection dropped mid-body is an error, never a short success.
func (b *Backend) Download(ctx context.Context, namespace, name string, w io.Writer) error {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return fmt.Errorf("azure: download %s/%s: %w", namespace, name, err)
	}
	object := namespace + "/" + name
	resp, err := b.client.NewBlobClient(b.blobName(namespace, name)).DownloadStream(ctx, nil)
	if err != nil {
		return b.fail(ctx, "download", object, err)
	}
	defer func() { _ = resp.Body.Close() }() // read side: nothing to lose
	if resp.ContentLength == nil {
		return fmt.Errorf("azure: download %s: the service sent no Content-Length", object)
	}
	body := &backend.ContextReader{Ctx: ctx, R: resp.Body}
	n, err := io.Copy(w, body)
	if err != nil {
		if body.Err != nil {
			return b.fail(ctx, "download", object, fmt.Errorf("read: %w", body.Err))
		}
		return fmt.Errorf("azure: download %s: write: %w", object, err)
	}
	if want := *resp.ContentLength; n != want {
		return fmt.Errorf("azure: download %s: got %d of %d bytes: %w", object, n, want, io.ErrUnexpectedEOF)
	}
	return nil
}

// List implements backend.Backend.
func (b *Backend) List(ctx context.Context, namespace, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("azure: list %s: %w", namespace, err)
	}
	if err := backend.CheckNamespace(namespace); err != nil {
		return nil, fmt.Errorf("azure: list %s: %w", namespace, err)
	}
	if strings.Contains(prefix, "/") {
		return nil, nil // no name contains "/"
	}
	dir := b.dir(namespace)
	// One level of the "/" hierarchy: blobs of nested namespaces come back as BlobPrefixes,
	// which are skipped, not as blobs.
	pager := b.client.NewListBlobsHierarchyPager("/", &container.ListBlobsHierarchyOptions{
		Prefix: new(dir + prefix),
	})
	var names []string
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, b.fail(ctx, "list", namespace, err)
		}
		if page.Segment == nil {
			continue
		}
		for _, item := range page.Segment.BlobItems {
			if item == nil || item.Name == nil {
				continue
			}
			name, ok := strings.CutPrefix(*item.Name, dir)
			if ok && backend.CheckName(name) == nil {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// Delete implements backend.Deleter. Azure answers a delete of a missing blob with 404
// BlobNotFound, which is ErrNotFound; the blob's snapshots, if any, go with it.
func (b *Backend) Delete(ctx context.Context, namespace, name string) error {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return fmt.Errorf("azure: delete %s/%s: %w", namespace, name, err)
	}
	_, err := b.client.NewBlobClient(b.blobName(namespace, name)).Delete(ctx, &blob.DeleteOptions{
		DeleteSnapshots: new(blob.DeleteSnapshotsOptionTypeInclude),
	})
	if err != nil {
		return b.fail(ctx, "delete", namespace+"/"+name, err)
	}
	return nil
}

// Interface guards
var (
	_ backend.Backend = (*Backend)(nil)
	_ backend.Deleter = (*Backend)(nil)
)
