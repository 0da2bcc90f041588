// Package webhdfs is a backend.Backend on HDFS through the WebHDFS REST API, spoken by hand on
// net/http (no client library): https://hadoop.apache.org/docs/stable/hadoop-project-dist/hadoop-hdfs/WebHDFS.html
//
// Layout: the object (namespace, name) is the file <root>/<namespace>/_objects/<name>; the
// "_objects" element keeps the object "ubuntu" of namespace "library" apart from the directory
// of the namespace "library/ubuntu" (namespace components never start with "_").
//
// Requests follow the spec's two steps. Upload sends CREATE (overwrite=false, no body) to the
// namenode, which answers 307 with the Location of a datanode; only then are the bytes PUT, to
// that datanode. They go to a temporary file <root>/_tmp/<name>.<random>, whose length is checked
// with GETFILESTATUS before RENAME (renameoptions=OVERWRITE, HDFS's atomic rename2) moves it over
// the object, so readers see the previous object or the whole new one, never a partial one.
// (renameoptions is not on the documentation page; it is the parameter Hadoop's own
// WebHdfsFileSystem.rename(src, dst, OVERWRITE) sends, and NamenodeWebHdfsMethods answers any
// non-empty set with rename2. The plain rename would refuse an existing destination, or move the
// file inside one that is a directory.)
//
// A failed upload deletes its temporary file; one whose delete also fails (the namenode is
// gone) leaves it under <root>/_tmp, where anything older than a day is garbage. Download OPENs
// the file from offset 0, follows the redirect to a datanode, and fails unless exactly the
// length the datanode announced arrives. It sends no length: one from an earlier GETFILESTATUS
// would silently cut short an object replaced in between.
//
// Namenodes are tried in order: one that cannot be reached, or answers StandbyException (an HA
// standby), passes the request to the next, and the first that answers becomes the one asked
// first. The RemoteException JSON of an error answer is mapped: FileNotFoundException to
// backend.ErrNotFound, AccessControlException and SecurityException to ErrAccessDenied,
// RetriableException and HTTP 429 and 503 to *backend.Throttled.
//
// Authentication is Hadoop's "simple" user.name or a delegation token read from a file or an
// environment variable; Kerberos (SPNEGO) is not supported: get a delegation token for the
// backend instead.
//
// This backend is tested against the in-process spec server in webhdfstest, written from the
// WebHDFS documentation (its operations, parameters, redirects and error JSON), not against a
// real HDFS cluster: none can be installed on the machines the tests run on.
package webhdfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/krakenctl/krakenctl/backend"
)

// ErrAccessDenied means HDFS refused the request's user or token (AccessControlException,
// SecurityException, HTTP 401 or 403 without another explanation): a wrong user_name, an
// expired delegation token, or the root directory's permissions.
var ErrAccessDenied = errors.New("webhdfs: permission denied")

// errStandby marks a namenode's StandbyException: the next namenode is asked.
var errStandby = errors.New("webhdfs: namenode is in standby")

const (
	tmpElem = "_tmp"
	// maxErrorBody bounds how much of an error answer is read to find its RemoteException.
	maxErrorBody = 64 << 10
	// maxJSONBody bounds a JSON answer (a LISTSTATUS of a large directory is the big one).
	maxJSONBody = 256 << 20
	// cleanupTimeout bounds deleting a failed upload's temporary file, done even after the
	// caller's context has ended.
	cleanupTimeout = 30 * time.Second
	// cancelGrace is how long an upload whose context has ended waits for the datanode to
	// close the file it was writing, so its cleanup can delete it.
	cancelGrace = 10 * time.Second
)

// Backend stores objects in one HDFS directory. It is safe for concurrent use.
type Backend struct {
	namenodes []*url.URL
	active    atomic.Int32 // index of the namenode asked first
	root      string       // no trailing "/" unless "/"
	user      string
	token     string
	client    *http.Client
}

// New validates cfg (after applying its defaults), reads the delegation token and returns a
// backend. It does not contact the cluster.
func New(cfg Config) (*Backend, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("webhdfs backend: %w", err)
	}
	tok, err := cfg.token()
	if err != nil {
		return nil, fmt.Errorf("webhdfs backend: %w", err)
	}
	b := &Backend{root: cfg.Root, user: cfg.UserName, token: tok}
	for _, nn := range cfg.Namenodes {
		u, _ := url.Parse(nn) // Validate parsed it
		u.Path = strings.TrimSuffix(u.Path, "/")
		b.namenodes = append(b.namenodes, u)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = cfg.Timeout
	b.client = &http.Client{
		Transport: tr,
		// Redirects are followed by hand: a CREATE's body must go to the datanode only, and a
		// redirect's answer is checked before its Location is trusted.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return b, nil
}

// Close ends the backend's idle connections.
func (b *Backend) Close() error {
	b.client.CloseIdleConnections()
	return nil
}

func (b *Backend) dir(namespace string) string {
	return path.Join(b.root, namespace, backend.ObjectsElem)
}

func (b *Backend) file(namespace, name string) string {
	return path.Join(b.root, namespace, backend.ObjectsElem, name)
}

// fileStatus is WebHDFS's FileStatus JSON object (the fields the backend reads).
type fileStatus struct {
	PathSuffix       string `json:"pathSuffix"`
	Type             string `json:"type"`
	Length           int64  `json:"length"`
	ModificationTime int64  `json:"modificationTime"`
}

// Stat implements backend.Backend.
func (b *Backend) Stat(ctx context.Context, namespace, name string) (backend.Info, error) {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return backend.Info{}, fmt.Errorf("webhdfs: stat %s/%s: %w", namespace, name, err)
	}
	st, err := b.status(ctx, b.file(namespace, name))
	if err != nil {
		return backend.Info{}, fmt.Errorf("webhdfs: stat %s/%s: %w", namespace, name, err)
	}
	return backend.Info{Size: st.Length, ModTime: time.UnixMilli(st.ModificationTime)}, nil
}

// status is GETFILESTATUS of a path that must be a file.
func (b *Backend) status(ctx context.Context, p string) (fileStatus, error) {
	var out struct {
		FileStatus *fileStatus `json:"FileStatus"`
	}
	if err := b.callJSON(ctx, http.MethodGet, "GETFILESTATUS", p, nil, &out); err != nil {
		return fileStatus{}, err
	}
	switch {
	case out.FileStatus == nil:
		return fileStatus{}, errors.New("GETFILESTATUS answer has no FileStatus")
	case out.FileStatus.Type != "FILE":
		return fileStatus{}, fmt.Errorf("%s is a %s, not a file", p, out.FileStatus.Type)
	case out.FileStatus.Length < 0:
		return fileStatus{}, fmt.Errorf("GETFILESTATUS of %s: negative length %d", p, out.FileStatus.Length)
	}
	return *out.FileStatus, nil
}

// Download implements backend.Backend. It OPENs the whole file, without a length: a length
// taken from an earlier GETFILESTATUS would silently cut short an object replaced in between.
// The datanode's Content-Length is the length of the file it opened, and exactly that many
// bytes must arrive; a datanode that sends none is held to a GETFILESTATUS instead.
func (b *Backend) Download(ctx context.Context, namespace, name string, w io.Writer) error {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return fmt.Errorf("webhdfs: download %s/%s: %w", namespace, name, err)
	}
	p := b.file(namespace, name)
	resp, err := b.call(ctx, http.MethodGet, "OPEN", p, url.Values{"offset": {"0"}})
	if err != nil {
		return fmt.Errorf("webhdfs: download %s/%s: %w", namespace, name, err)
	}
	if resp.StatusCode == http.StatusTemporaryRedirect {
		resp, err = b.follow(ctx, resp, nil)
		if err != nil {
			return fmt.Errorf("webhdfs: download %s/%s: datanode: %w", namespace, name, err)
		}
	}
	defer func() { _ = resp.Body.Close() }() // read side: nothing to lose
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("webhdfs: download %s/%s: OPEN answered %s", namespace, name, resp.Status)
	}
	want := resp.ContentLength
	if want < 0 {
		st, err := b.status(ctx, p)
		if err != nil {
			return fmt.Errorf("webhdfs: download %s/%s: the datanode sent no Content-Length: %w", namespace, name, err)
		}
		want = st.Length
	}
	body := &backend.ContextReader{Ctx: ctx, R: resp.Body}
	// One byte more than the length shows a datanode sending more than it announced.
	n, err := io.Copy(w, io.LimitReader(body, want+1))
	if err != nil {
		if body.Err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("webhdfs: download %s/%s: read: %w: %w", namespace, name, ctx.Err(), body.Err)
			}
			return fmt.Errorf("webhdfs: download %s/%s: read after %d of %d bytes: %w", namespace, name, n, want, body.Err)
		}
		return fmt.Errorf("webhdfs: download %s/%s: write: %w", namespace, name, err)
	}
	if n != want {
		return fmt.Errorf("webhdfs: download %s/%s: got %d of %d bytes: %w", namespace, name, n, want, io.ErrUnexpectedEOF)
	}
	return nil
}

var errTooLong = errors.New("reader has more bytes than declared")

// Upload implements backend.Backend.
func (b *Backend) Upload(ctx context.Context, namespace, name string, r io.Reader, size int64) error {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return fmt.Errorf("webhdfs: upload %s/%s: %w", namespace, name, err)
	}
	// The name helps whoever finds a leftover; a long one is cut so the temporary name stays
	// within HDFS's 255-byte path component (dfs.namenode.fs-limits.max-component-length).
	tmp := path.Join(b.root, tmpElem, name[:min(len(name), 200)]+"."+randomHex())
	if err := b.upload(ctx, tmp, r, size); err != nil {
		if cerr := b.cleanup(ctx, tmp); cerr != nil {
			err = fmt.Errorf("%w (and deleting the temporary file %s failed: %w)", err, tmp, cerr)
		}
		return fmt.Errorf("webhdfs: upload %s/%s: %w", namespace, name, err)
	}
	dst := b.file(namespace, name)
	err := b.rename(ctx, tmp, dst)
	if errors.Is(err, backend.ErrNotFound) {
		// rename2 needs the destination's directory: the namespace's first object.
		if err = b.mkdirs(ctx, b.dir(namespace)); err == nil {
			err = b.rename(ctx, tmp, dst)
		}
	}
	if err != nil {
		if cerr := b.cleanup(ctx, tmp); cerr != nil {
			err = fmt.Errorf("%w (and deleting the temporary file %s failed: %w)", err, tmp, cerr)
		}
		return fmt.Errorf("webhdfs: upload %s/%s: rename into place: %w", namespace, name, err)
	}
	return nil
}

// upload writes r to the new file tmp through the namenode's redirect and checks its length.
//
// The bytes go chunked, and a reader that fails, ends early or runs past size, or a ctx that
// ends, ends the body cleanly (the error is kept): the datanode then closes the file and
// answers, and only then does the caller's cleanup DELETE it. Cutting the connection instead
// lets the DELETE reach the namenode before the datanode has even created the file, which it
// then leaves behind. So the datanode request outlives ctx, by at most cancelGrace.
func (b *Backend) upload(ctx context.Context, tmp string, r io.Reader, size int64) error {
	body := &uploadBody{ctx: ctx, r: r, size: size}
	if size == 0 {
		// Nothing is to be sent; make sure the reader agrees before creating anything.
		var one [1]byte
		for {
			if k, err := body.Read(one[:]); k == 0 && err != nil {
				break
			}
		}
		if _, err := body.result(); err != nil {
			return err
		}
	}
	resp, err := b.call(ctx, http.MethodPut, "CREATE", tmp, url.Values{"overwrite": {"false"}})
	if err != nil {
		return fmt.Errorf("CREATE: %w", err)
	}
	if resp.StatusCode != http.StatusTemporaryRedirect {
		drain(resp)
		return fmt.Errorf("CREATE: the namenode answered %s, not a redirect to a datanode", resp.Status)
	}
	var send io.Reader = body
	if size == 0 {
		send = http.NoBody
	}
	reqCtx, cancelReq := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelReq()
	stop := context.AfterFunc(ctx, func() {
		select {
		case <-reqCtx.Done():
		case <-time.After(cancelGrace):
			cancelReq() // a datanode that does not answer once the body has ended
		}
	})
	defer stop()
	dresp, err := b.follow(reqCtx, resp, send)
	n, readErr := body.result()
	switch {
	case readErr != nil:
		if dresp != nil {
			drain(dresp)
		}
		return readErr
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("datanode: %w: %w", ctx.Err(), err)
	case err != nil:
		return fmt.Errorf("datanode: %w", err)
	}
	drain(dresp)
	if dresp.StatusCode != http.StatusCreated && dresp.StatusCode != http.StatusOK {
		return fmt.Errorf("datanode: CREATE answered %s", dresp.Status)
	}
	// The datanode's 201 says the file is closed; its length says every byte arrived.
	st, err := b.status(ctx, tmp)
	if err != nil {
		return fmt.Errorf("check the written file: %w", err)
	}
	if st.Length != n {
		return fmt.Errorf("sent %d bytes, the written file has %d: %w", n, st.Length, io.ErrUnexpectedEOF)
	}
	return nil
}

// uploadBody is an upload's request body: it enforces the declared size (-1: unknown), stops
// at the first read after ctx has ended, and ends cleanly (io.EOF) on any of these, keeping the
// error for result. The transport reads it on its own goroutine, hence the lock.
type uploadBody struct {
	ctx  context.Context
	r    io.Reader
	size int64

	mu  sync.Mutex
	n   int64
	err error
}

func (u *uploadBody) Read(p []byte) (int, error) {
	u.mu.Lock()
	n, failed := u.n, u.err != nil
	u.mu.Unlock()
	if failed {
		return 0, io.EOF
	}
	if err := u.ctx.Err(); err != nil {
		u.fail(err)
		return 0, io.EOF
	}
	if u.size >= 0 && int64(len(p)) > u.size-n+1 {
		p = p[:u.size-n+1] // one byte past size reveals a reader that is too long
	}
	// Not under the lock: result must not wait for a reader that blocks.
	k, err := u.r.Read(p)
	var bad error
	switch {
	case u.size >= 0 && n+int64(k) > u.size:
		bad = fmt.Errorf("%w (%d)", errTooLong, u.size)
		k = int(u.size - n)
	case err == io.EOF && u.size >= 0 && n+int64(k) < u.size:
		bad = fmt.Errorf("read %d bytes, declared %d: %w", n+int64(k), u.size, io.ErrUnexpectedEOF)
	case err != nil && err != io.EOF:
		bad = fmt.Errorf("read: %w", err)
	}
	u.mu.Lock()
	u.n += int64(k)
	u.mu.Unlock()
	if bad != nil {
		u.fail(bad)
		return k, io.EOF
	}
	return k, err
}

func (u *uploadBody) fail(err error) {
	u.mu.Lock()
	if u.err == nil {
		u.err = err
	}
	u.mu.Unlock()
}

// result is how many bytes were sent and the error that ended the body early, if any.
func (u *uploadBody) result() (int64, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.n, u.err
}

// rename moves src over dst (renameoptions=OVERWRITE: rename2, which replaces a file in one
// namenode operation and never moves src into a directory named dst).
func (b *Backend) rename(ctx context.Context, src, dst string) error {
	resp, err := b.call(ctx, http.MethodPut, "RENAME", src, url.Values{"destination": {dst}, "renameoptions": {"OVERWRITE"}})
	if err != nil {
		return err
	}
	drain(resp)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("RENAME answered %s", resp.Status)
	}
	return nil
}

func (b *Backend) mkdirs(ctx context.Context, dir string) error {
	var out struct {
		Boolean bool `json:"boolean"`
	}
	if err := b.callJSON(ctx, http.MethodPut, "MKDIRS", dir, nil, &out); err != nil {
		return fmt.Errorf("MKDIRS %s: %w", dir, err)
	}
	if !out.Boolean {
		return fmt.Errorf("MKDIRS %s answered false", dir)
	}
	return nil
}

// cleanup deletes a failed upload's temporary file, also when ctx has ended.
func (b *Backend) cleanup(ctx context.Context, tmp string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	_, err := b.delete(ctx, tmp)
	return err
}

// delete removes a file; false means it did not exist.
func (b *Backend) delete(ctx context.Context, p string) (bool, error) {
	var out struct {
		Boolean *bool `json:"boolean"`
	}
	if err := b.callJSON(ctx, http.MethodDelete, "DELETE", p, url.Values{"recursive": {"false"}}, &out); err != nil {
		return false, err
	}
	if out.Boolean == nil {
		return false, errors.New(`DELETE answer has no "boolean"`)
	}
	return *out.Boolean, nil
}

// Delete implements backend.Deleter. HDFS answers the delete of a missing file with false,
// which is reported as ErrNotFound.
func (b *Backend) Delete(ctx context.Context, namespace, name string) error {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return fmt.Errorf("webhdfs: delete %s/%s: %w", namespace, name, err)
	}
	ok, err := b.delete(ctx, b.file(namespace, name))
	if err != nil {
		return fmt.Errorf("webhdfs: delete %s/%s: %w", namespace, name, err)
	}
	if !ok {
		return fmt.Errorf("webhdfs: delete %s/%s: %w", namespace, name, backend.ErrNotFound)
	}
	return nil
}

// List implements backend.Backend with LISTSTATUS of the namespace's _objects directory, so
// nested namespaces (other directories) are never listed.
func (b *Backend) List(ctx context.Context, namespace, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("webhdfs: list %s: %w", namespace, err)
	}
	if err := backend.CheckNamespace(namespace); err != nil {
		return nil, fmt.Errorf("webhdfs: list %s: %w", namespace, err)
	}
	if strings.Contains(prefix, "/") {
		return nil, nil // no name contains "/"
	}
	var out struct {
		FileStatuses struct {
			FileStatus []fileStatus `json:"FileStatus"`
		} `json:"FileStatuses"`
	}
	if err := b.callJSON(ctx, http.MethodGet, "LISTSTATUS", b.dir(namespace), nil, &out); err != nil {
		if errors.Is(err, backend.ErrNotFound) {
			return nil, nil // nothing stored in the namespace yet
		}
		return nil, fmt.Errorf("webhdfs: list %s: %w", namespace, err)
	}
	var names []string
	for _, st := range out.FileStatuses.FileStatus {
		if st.Type == "FILE" && strings.HasPrefix(st.PathSuffix, prefix) && backend.CheckName(st.PathSuffix) == nil {
			names = append(names, st.PathSuffix)
		}
	}
	slices.Sort(names)
	return names, nil
}

// callJSON is call for operations whose answer is a JSON document, decoded into out.
func (b *Backend) callJSON(ctx context.Context, method, op, p string, params url.Values, out any) error {
	resp, err := b.call(ctx, method, op, p, params)
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", op, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONBody)).Decode(out); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: read the answer: %w: %w", op, ctx.Err(), err)
		}
		return fmt.Errorf("%s: read the answer: %w", op, err)
	}
	return nil
}

// call sends op on the HDFS path p to the namenodes, starting with the one that answered last,
// and moving on when one cannot be reached or is a standby. It returns a 2xx or 307 answer;
// any other is turned into an error (mapped to the backend's sentinels).
func (b *Backend) call(ctx context.Context, method, op, p string, params url.Values) (*http.Response, error) {
	q := url.Values{"op": {op}}
	for k, v := range params {
		q[k] = v
	}
	if b.user != "" {
		q.Set("user.name", b.user)
	}
	if b.token != "" {
		q.Set("delegation", b.token)
	}
	start := int(b.active.Load())
	var errs []error
	for i := range b.namenodes {
		idx := (start + i) % len(b.namenodes)
		nn := b.namenodes[idx]
		u := *nn
		u.Path = nn.Path + "/webhdfs/v1" + p
		u.RawPath = ""
		u.RawQuery = q.Encode()
		req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
		if err != nil {
			return nil, err
		}
		resp, err := b.client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s %s: %w", op, p, ctx.Err())
			}
			err = fmt.Errorf("namenode %s: %w", nn.Host, unwrapURLError(err))
			// A namenode that was never reached did nothing: the next one may. One that took
			// the request and dropped it may have done it; only reads are sent again.
			if isDialError(err) || method == http.MethodGet {
				errs = append(errs, err)
				continue
			}
			return nil, fmt.Errorf("%s %s: %w", op, p, err)
		}
		if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusTemporaryRedirect {
			b.active.Store(int32(idx))
			return resp, nil
		}
		err = remoteError(resp)
		if errors.Is(err, errStandby) {
			errs = append(errs, fmt.Errorf("namenode %s: %w", nn.Host, err))
			continue
		}
		b.active.Store(int32(idx))
		return nil, fmt.Errorf("%s %s: %w", op, p, err)
	}
	return nil, fmt.Errorf("%s %s: no namenode answered as active: %w", op, p, errors.Join(errs...))
}

// follow sends the request a 307 answer redirects to (a datanode), with body when not nil, and
// returns its answer, or an error for a non-2xx one. It closes redirect.
func (b *Backend) follow(ctx context.Context, redirect *http.Response, body io.Reader) (*http.Response, error) {
	drain(redirect)
	loc, err := redirect.Location()
	if err != nil {
		// Not %w of the *url.Error: its message quotes the whole Location, which carries the
		// delegation token.
		return nil, fmt.Errorf("redirect without a usable Location: %w", unwrapURLError(err))
	}
	if loc.Scheme != "http" && loc.Scheme != "https" {
		return nil, fmt.Errorf("redirect to a %q URL", loc.Scheme)
	}
	method := redirect.Request.Method
	req, err := http.NewRequestWithContext(ctx, method, loc.String(), body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		if body != http.NoBody {
			req.ContentLength = -1 // chunked: see upload
		}
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", loc.Host, unwrapURLError(err))
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s: %w", loc.Host, remoteError(resp))
	}
	return resp, nil
}

// RemoteError is an error answer of a namenode or datanode: its HTTP status and the
// RemoteException JSON it carried, when it had one.
type RemoteError struct {
	Status        int
	Exception     string
	JavaClassName string
	Message       string
}

func (e *RemoteError) Error() string {
	if e.Exception == "" {
		return fmt.Sprintf("HTTP %d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("HTTP %d: %s: %s", e.Status, e.Exception, e.Message)
}

// remoteError reads an error answer (and closes it) into a *RemoteError wrapped in the
// sentinel its exception or status maps to.
func remoteError(resp *http.Response) error {
	defer drain(resp)
	re := &RemoteError{Status: resp.StatusCode}
	var doc struct {
		RemoteException struct {
			Exception     string `json:"exception"`
			JavaClassName string `json:"javaClassName"`
			Message       string `json:"message"`
		} `json:"RemoteException"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody)) // a short read leaves the status alone to go by
	if json.Unmarshal(data, &doc) == nil {
		re.Exception = doc.RemoteException.Exception
		re.JavaClassName = doc.RemoteException.JavaClassName
		re.Message = doc.RemoteException.Message
	}
	switch re.Exception {
	case "FileNotFoundException":
		return fmt.Errorf("%w: %w", backend.ErrNotFound, re)
	case "AccessControlException", "SecurityException", "AuthorizationException", "InvalidToken":
		return fmt.Errorf("%w (check user_name or the delegation token, and the permissions of the root): %w", ErrAccessDenied, re)
	case "StandbyException":
		return fmt.Errorf("%w: %w", errStandby, re)
	case "RetriableException":
		return &backend.Throttled{RetryAfter: retryAfter(resp.Header), Err: re}
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return &backend.Throttled{RetryAfter: retryAfter(resp.Header), Err: re}
	case http.StatusUnauthorized, http.StatusForbidden:
		if re.Exception == "" {
			return fmt.Errorf("%w (check user_name or the delegation token): %w", ErrAccessDenied, re)
		}
	}
	return re
}

// retryAfter reads a Retry-After header: seconds or an HTTP date, capped as
// backend.ParseRetryAfter caps it; 0 when absent or unreadable.
func retryAfter(h http.Header) time.Duration {
	return backend.ParseRetryAfter(h.Get("Retry-After"), time.Now())
}

// unwrapURLError drops the *url.Error around a transport error: its message repeats the
// whole URL, delegation token included.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// drain reads what is left of a small answer so its connection can be reused, and closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody)) // best effort: reuse only
	_ = resp.Body.Close()                                               // read side: nothing to lose
}

func randomHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// Interface guards
var (
	_ backend.Backend = (*Backend)(nil)
	_ backend.Deleter = (*Backend)(nil)
)
