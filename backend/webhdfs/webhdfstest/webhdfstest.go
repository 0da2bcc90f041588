// Package webhdfstest is an in-process WebHDFS server for tests and benchmarks: one or more
// namenodes and a datanode, each on its own loopback listener, over an in-memory file tree.
//
// It follows the WebHDFS REST API documentation
// (https://hadoop.apache.org/docs/stable/hadoop-project-dist/hadoop-hdfs/WebHDFS.html) for
// what the backend uses: the URL form /webhdfs/v1/<path>?op=..., the operations CREATE, OPEN,
// GETFILESTATUS, LISTSTATUS, MKDIRS, RENAME (with and without renameoptions=OVERWRITE, which
// selects HDFS's rename2) and DELETE with their parameters; the namenode's 307 redirect of
// CREATE and OPEN to the datanode, which alone takes and serves file bytes; the
// {"RemoteException":{...}} error JSON and the HTTP statuses Hadoop's ExceptionHandler gives
// each exception; user.name and delegation authentication checked against a table of users;
// and HA standby namenodes answering StandbyException.
//
// It is a spec server, not HDFS: no blocks, replication, leases or quotas. A client that breaks
// the protocol in a way HDFS would not forgive silently (a body sent to a namenode, a datanode
// write that did not come through a namenode's redirect) is reported to Options.OnViolation,
// which Start wires to the test's Errorf.
//
// Faults can be injected: standby namenodes (SetStandby), throttling answers (Throttle,
// ThrottleRetriable), a datanode that drops the connection in the middle of an upload
// (DropUploadAfter) or sends a truncated file (TruncateNextOpen).
package webhdfstest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Access is what a user may do.
type Access int

// The access levels.
const (
	// Read allows OPEN, GETFILESTATUS and LISTSTATUS.
	Read Access = iota + 1
	// ReadWrite also allows CREATE, MKDIRS, RENAME and DELETE.
	ReadWrite
)

// AnonymousUser is the user of a request with neither user.name nor delegation, as in Hadoop's
// default hadoop.http.staticuser.user.
const AnonymousUser = "dr.who"

// Options configures a Server.
type Options struct {
	// Namenodes is how many namenodes share the file tree (HA); default 1. All start active.
	Namenodes int
	// Users maps user names to their access. Nil lets every user do everything.
	Users map[string]Access
	// Tokens maps delegation tokens to the user each authenticates; a token not in it is
	// refused with InvalidToken.
	Tokens map[string]string
	// OnViolation is called with a description when a client breaks the protocol. Nil ignores.
	OnViolation func(msg string)
}

// Server is a running spec server. Its methods are safe for concurrent use.
type Server struct {
	opts Options
	nns  []*namenode
	dn   *httptest.Server

	mu       sync.Mutex
	nodes    map[string]*node // clean absolute path -> node; "/" always present
	counts   map[string]int
	throttle struct {
		n          int
		status     int
		retryAfter time.Duration
		retriable  bool
	}
	dropUploadAfter int64 // -1: off
	truncateOpen    int64 // -1: off
}

type namenode struct {
	srv *httptest.Server

	mu      sync.Mutex
	standby bool
}

type node struct {
	dir   bool
	data  []byte
	mtime time.Time
}

// New starts a server on loopback. Close stops it.
func New(opts Options) *Server {
	if opts.Namenodes <= 0 {
		opts.Namenodes = 1
	}
	s := &Server{
		opts:            opts,
		nodes:           map[string]*node{"/": {dir: true, mtime: time.Now()}},
		counts:          make(map[string]int),
		dropUploadAfter: -1,
		truncateOpen:    -1,
	}
	s.dn = httptest.NewServer(http.HandlerFunc(s.serveDatanode))
	for range opts.Namenodes {
		nn := &namenode{}
		nn.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveNamenode(nn, w, r) }))
		s.nns = append(s.nns, nn)
	}
	return s
}

// Start is New for a test: it stops the server when tb ends and reports violations with
// tb.Errorf unless opts.OnViolation is set.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.OnViolation == nil {
		opts.OnViolation = func(msg string) { tb.Errorf("webhdfstest: protocol violation: %s", msg) }
	}
	s := New(opts)
	tb.Cleanup(s.Close)
	return s
}

// Close stops the listeners.
func (s *Server) Close() {
	for _, nn := range s.nns {
		nn.srv.Close()
	}
	s.dn.Close()
}

// NamenodeURLs are the namenodes' base URLs, in order (append /webhdfs/v1).
func (s *Server) NamenodeURLs() []string {
	var urls []string
	for _, nn := range s.nns {
		urls = append(urls, nn.srv.URL)
	}
	return urls
}

// DatanodeURL is the datanode's base URL.
func (s *Server) DatanodeURL() string { return s.dn.URL }

// SetStandby puts namenode i (0-based) into standby (it answers every operation with
// StandbyException) or makes it active again.
func (s *Server) SetStandby(i int, standby bool) {
	s.nns[i].mu.Lock()
	s.nns[i].standby = standby
	s.nns[i].mu.Unlock()
}

// Throttle answers the next n namenode requests with status (429 or 503) and, when retryAfter
// is positive, a Retry-After header in whole seconds.
func (s *Server) Throttle(n, status int, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle.n, s.throttle.status, s.throttle.retryAfter, s.throttle.retriable = n, status, retryAfter, false
}

// ThrottleRetriable answers the next n namenode requests with a RetriableException, as a
// namenode does while it is starting or busy.
func (s *Server) ThrottleRetriable(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle.n, s.throttle.status, s.throttle.retryAfter, s.throttle.retriable = n, http.StatusForbidden, 0, true
}

// DropUploadAfter makes the datanode close the connection of the next CREATE once it has
// stored n bytes; the partial file stays, as HDFS keeps what reached it.
func (s *Server) DropUploadAfter(n int64) {
	s.mu.Lock()
	s.dropUploadAfter = n
	s.mu.Unlock()
}

// TruncateNextOpen makes the datanode's next OPEN announce the full length but send only n
// bytes before closing the connection.
func (s *Server) TruncateNextOpen(n int64) {
	s.mu.Lock()
	s.truncateOpen = n
	s.mu.Unlock()
}

// Count is how many requests for op ("CREATE", "OPEN", ...) the namenodes (role "namenode")
// or the datanode (role "datanode") have answered.
func (s *Server) Count(role, op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[role+" "+op]
}

// Files returns the paths of the files under dir (recursively), sorted.
func (s *Server) Files(dir string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for p, n := range s.nodes {
		if !n.dir && under(p, dir) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// Put stores a file directly (creating its parents), bypassing the protocol.
func (s *Server) Put(p string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mkdirsLocked(path.Dir(p))
	s.nodes[p] = &node{data: slices.Clone(data), mtime: time.Now()}
}

// ReadFile returns a file's content, or false.
func (s *Server) ReadFile(p string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nodes[p]
	if !ok || n.dir {
		return nil, false
	}
	return slices.Clone(n.data), true
}

func under(p, dir string) bool {
	return dir == "/" || p == dir || strings.HasPrefix(p, dir+"/")
}

func (s *Server) violation(format string, args ...any) {
	if s.opts.OnViolation != nil {
		s.opts.OnViolation(fmt.Sprintf(format, args...))
	}
}

// remoteException writes the error JSON of the WebHDFS spec, with the status Hadoop's
// ExceptionHandler gives the exception.
func remoteException(w http.ResponseWriter, status int, exception, javaClass, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"RemoteException": map[string]string{
		"exception": exception, "javaClassName": javaClass, "message": msg,
	}})
}

func notFound(w http.ResponseWriter, msg string) {
	remoteException(w, http.StatusNotFound, "FileNotFoundException", "java.io.FileNotFoundException", msg)
}

func ioException(w http.ResponseWriter, exception, javaClass, msg string) {
	remoteException(w, http.StatusForbidden, exception, javaClass, msg)
}

func badRequest(w http.ResponseWriter, msg string) {
	remoteException(w, http.StatusBadRequest, "IllegalArgumentException", "java.lang.IllegalArgumentException", msg)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// hdfsPath extracts the HDFS path from a /webhdfs/v1/<path> URL.
func hdfsPath(r *http.Request) (string, bool) {
	p, ok := strings.CutPrefix(r.URL.Path, "/webhdfs/v1")
	if !ok || (p != "" && !strings.HasPrefix(p, "/")) {
		return "", false
	}
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	if p == "" {
		p = "/"
	}
	if path.Clean(p) != p {
		return "", false // "..", "." and empty segments
	}
	return p, true
}

var methods = map[string]string{
	"OPEN": http.MethodGet, "GETFILESTATUS": http.MethodGet, "LISTSTATUS": http.MethodGet,
	"CREATE": http.MethodPut, "MKDIRS": http.MethodPut, "RENAME": http.MethodPut,
	"DELETE": http.MethodDelete,
}

// user authenticates a request: the delegation token's user, else user.name, else
// AnonymousUser. ok is false when the answer has been written.
func (s *Server) user(w http.ResponseWriter, q url.Values) (string, bool) {
	if tok := q.Get("delegation"); tok != "" {
		u, ok := s.opts.Tokens[tok]
		if !ok {
			remoteException(w, http.StatusForbidden, "InvalidToken", "org.apache.hadoop.security.token.SecretManager$InvalidToken", "token is expired or doesn't exist")
			return "", false
		}
		return u, true
	}
	if u := q.Get("user.name"); u != "" {
		return u, true
	}
	return AnonymousUser, true
}

func (s *Server) allowed(w http.ResponseWriter, user, op, p string) bool {
	if s.opts.Users == nil {
		return true
	}
	need, access := Read, "READ"
	if methods[op] != http.MethodGet {
		need, access = ReadWrite, "WRITE"
	}
	if s.opts.Users[user] >= need {
		return true
	}
	ioException(w, "AccessControlException", "org.apache.hadoop.security.AccessControlException",
		fmt.Sprintf("Permission denied: user=%s, access=%s, inode=%q", user, access, p))
	return false
}

func (s *Server) serveNamenode(nn *namenode, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	op := strings.ToUpper(q.Get("op"))
	s.mu.Lock()
	s.counts["namenode "+op]++
	s.mu.Unlock()
	// A namenode never takes file bytes: they go to the datanode it redirects to.
	if n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20)); n > 0 || r.ContentLength > 0 {
		s.violation("namenode got a %d-byte body with %s %s", max(n, r.ContentLength), r.Method, r.URL.Path)
		badRequest(w, "the namenode takes no request body; send the data to the datanode the redirect names")
		return
	}
	p, ok := hdfsPath(r)
	if !ok {
		badRequest(w, fmt.Sprintf("not a WebHDFS path: %q", r.URL.Path))
		return
	}
	want, known := methods[op]
	if !known || want != r.Method {
		badRequest(w, fmt.Sprintf("Invalid value for webhdfs parameter \"op\": No enum constant for %s %q", r.Method, q.Get("op")))
		return
	}
	nn.mu.Lock()
	standby := nn.standby
	nn.mu.Unlock()
	if standby {
		ioException(w, "StandbyException", "org.apache.hadoop.ipc.StandbyException", "Operation category READ is not supported in state standby")
		return
	}
	if s.throttled(w) {
		return
	}
	user, ok := s.user(w, q)
	if !ok || !s.allowed(w, user, op, p) {
		return
	}
	switch op {
	case "GETFILESTATUS":
		s.getFileStatus(w, p)
	case "LISTSTATUS":
		s.listStatus(w, p)
	case "OPEN":
		s.redirect(w, r, nn, p, q, "OPEN")
	case "CREATE":
		s.create(w, r, nn, p, q)
	case "MKDIRS":
		s.mkdirs(w, p)
	case "RENAME":
		s.rename(w, p, q)
	case "DELETE":
		s.delete(w, p, q)
	}
}

func (s *Server) throttled(w http.ResponseWriter) bool {
	s.mu.Lock()
	t := s.throttle
	if t.n > 0 {
		s.throttle.n--
	}
	s.mu.Unlock()
	switch {
	case t.n <= 0:
		return false
	case t.retriable:
		ioException(w, "RetriableException", "org.apache.hadoop.ipc.RetriableException", "NameNode still not started")
	default:
		if t.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(t.retryAfter/time.Second)))
		}
		http.Error(w, http.StatusText(t.status), t.status)
	}
	return true
}

func status(p string, n *node, suffix string) map[string]any {
	typ := "FILE"
	if n.dir {
		typ = "DIRECTORY"
	}
	perm := "644"
	if n.dir {
		perm = "755"
	}
	return map[string]any{
		"accessTime": n.mtime.UnixMilli(), "blockSize": 134217728, "group": "supergroup",
		"length": len(n.data), "modificationTime": n.mtime.UnixMilli(), "owner": "hdfs",
		"pathSuffix": suffix, "permission": perm, "replication": 3, "type": typ,
	}
}

func (s *Server) getFileStatus(w http.ResponseWriter, p string) {
	s.mu.Lock()
	n, ok := s.nodes[p]
	var st map[string]any
	if ok {
		st = status(p, n, "")
	}
	s.mu.Unlock()
	if !ok {
		notFound(w, "File does not exist: "+p)
		return
	}
	writeJSON(w, map[string]any{"FileStatus": st})
}

func (s *Server) listStatus(w http.ResponseWriter, p string) {
	s.mu.Lock()
	n, ok := s.nodes[p]
	entries := []map[string]any{}
	switch {
	case ok && !n.dir:
		entries = append(entries, status(p, n, ""))
	case ok:
		var names []string
		for cp := range s.nodes {
			if cp != p && path.Dir(cp) == p {
				names = append(names, path.Base(cp))
			}
		}
		slices.Sort(names)
		for _, name := range names {
			entries = append(entries, status(path.Join(p, name), s.nodes[path.Join(p, name)], name))
		}
	}
	s.mu.Unlock()
	if !ok {
		notFound(w, "File "+p+" does not exist.")
		return
	}
	writeJSON(w, map[string]any{"FileStatuses": map[string]any{"FileStatus": entries}})
}

// redirect answers 307 to the datanode, passing the operation's parameters on as the
// namenode does (with namenoderpcaddress, which the datanode requires).
func (s *Server) redirect(w http.ResponseWriter, r *http.Request, nn *namenode, p string, q url.Values, op string) {
	if op == "OPEN" {
		s.mu.Lock()
		n, ok := s.nodes[p]
		size := int64(0)
		if ok {
			size = int64(len(n.data))
		}
		s.mu.Unlock()
		switch {
		case !ok:
			notFound(w, "File does not exist: "+p)
			return
		case n.dir:
			ioException(w, "FileNotFoundException", "java.io.FileNotFoundException", "Path is not a file: "+p)
			return
		}
		off, err := param(q, "offset", 0)
		if err != nil {
			badRequest(w, err.Error())
			return
		}
		if off > size {
			ioException(w, "IOException", "java.io.IOException", fmt.Sprintf("Offset=%d out of the range [0, %d); OPEN, path=%s", off, size, p))
			return
		}
	}
	dq := url.Values{}
	for k, v := range q {
		dq[k] = v
	}
	dq.Set("op", op)
	dq.Set("namenoderpcaddress", nn.srv.Listener.Addr().String())
	loc := s.dn.URL + "/webhdfs/v1" + (&url.URL{Path: p}).EscapedPath() + "?" + dq.Encode()
	w.Header().Set("Location", loc)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusTemporaryRedirect)
}

func param(q url.Values, key string, def int64) (int64, error) {
	v := q.Get(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid value for webhdfs parameter %q: %q", key, v)
	}
	return n, nil
}

func boolParam(q url.Values, key string, def bool) (bool, error) {
	switch strings.ToLower(q.Get(key)) {
	case "":
		return def, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("invalid value for webhdfs parameter %q: %q", key, q.Get(key))
}

// createCheck is what both the namenode and the datanode check before a CREATE: the spec's
// overwrite (default false) and that no parent is a file.
func (s *Server) createCheckLocked(w http.ResponseWriter, p string, overwrite bool) bool {
	if n, ok := s.nodes[p]; ok {
		if n.dir {
			ioException(w, "FileAlreadyExistsException", "org.apache.hadoop.fs.FileAlreadyExistsException", p+" already exists as a directory")
			return false
		}
		if !overwrite {
			ioException(w, "FileAlreadyExistsException", "org.apache.hadoop.fs.FileAlreadyExistsException", p+" for client 127.0.0.1 already exists")
			return false
		}
	}
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		if n, ok := s.nodes[d]; ok && !n.dir {
			ioException(w, "ParentNotDirectoryException", "org.apache.hadoop.fs.ParentNotDirectoryException", d+" (is not a directory)")
			return false
		}
	}
	return true
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, nn *namenode, p string, q url.Values) {
	overwrite, err := boolParam(q, "overwrite", false)
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	s.mu.Lock()
	ok := s.createCheckLocked(w, p, overwrite)
	s.mu.Unlock()
	if ok {
		s.redirect(w, r, nn, p, q, "CREATE")
	}
}

func (s *Server) mkdirsLocked(p string) bool {
	for d := p; ; d = path.Dir(d) {
		if n, ok := s.nodes[d]; ok && !n.dir {
			return false
		}
		if d == "/" {
			break
		}
	}
	for d := p; d != "/"; d = path.Dir(d) {
		if _, ok := s.nodes[d]; !ok {
			s.nodes[d] = &node{dir: true, mtime: time.Now()}
		}
	}
	return true
}

func (s *Server) mkdirs(w http.ResponseWriter, p string) {
	s.mu.Lock()
	ok := s.mkdirsLocked(p)
	s.mu.Unlock()
	if !ok {
		ioException(w, "ParentNotDirectoryException", "org.apache.hadoop.fs.ParentNotDirectoryException", p+" (a parent is not a directory)")
		return
	}
	writeJSON(w, map[string]bool{"boolean": true})
}

// moveLocked moves src (and, for a directory, everything under it) to dst.
func (s *Server) moveLocked(src, dst string) {
	for p, n := range s.nodes {
		if under(p, src) && src != "/" {
			delete(s.nodes, p)
			s.nodes[dst+strings.TrimPrefix(p, src)] = n
		}
	}
}

func (s *Server) rename(w http.ResponseWriter, src string, q url.Values) {
	dst := q.Get("destination")
	if !strings.HasPrefix(dst, "/") || path.Clean(dst) != dst {
		badRequest(w, fmt.Sprintf("Invalid value for webhdfs parameter \"destination\": %q is not an absolute path", dst))
		return
	}
	// renameoptions is a comma-separated set of NONE and OVERWRITE; any set, even {NONE},
	// selects rename2 (Hadoop's NamenodeWebHdfsMethods), the empty default FileSystem.rename.
	raw := q.Get("renameoptions")
	rename2, overwrite := raw != "", false
	if rename2 {
		for _, o := range strings.Split(raw, ",") {
			switch strings.ToUpper(o) {
			case "NONE":
			case "OVERWRITE":
				overwrite = true
			default:
				badRequest(w, fmt.Sprintf("Invalid value for webhdfs parameter \"renameoptions\": %q", raw))
				return
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sn, srcOK := s.nodes[src]
	dn, dstOK := s.nodes[dst]
	parent, parentOK := s.nodes[path.Dir(dst)]
	if !rename2 {
		// FileSystem.rename: false on any refusal; a directory destination takes src inside.
		ok := srcOK && src != "/" && !under(dst, src)
		if ok && dstOK && dn.dir {
			dst = path.Join(dst, path.Base(src))
			_, exists := s.nodes[dst]
			ok = !exists
		} else if ok {
			ok = !dstOK && parentOK && parent.dir
		}
		if ok {
			s.moveLocked(src, dst)
		}
		writeJSON(w, map[string]bool{"boolean": ok})
		return
	}
	// rename2: errors are exceptions; the destination is always exactly dst.
	switch {
	case !srcOK:
		notFound(w, "rename source "+src+" is not found.")
	case !parentOK:
		notFound(w, "rename destination parent "+path.Dir(dst)+" not found.")
	case !parent.dir:
		ioException(w, "ParentNotDirectoryException", "org.apache.hadoop.fs.ParentNotDirectoryException", "rename destination parent "+path.Dir(dst)+" is a file.")
	case src == dst:
		ioException(w, "FileAlreadyExistsException", "org.apache.hadoop.fs.FileAlreadyExistsException", "The source "+src+" and destination "+dst+" are the same")
	case under(dst, src):
		ioException(w, "IOException", "java.io.IOException", "Rename destination "+dst+" is a directory or file under source "+src)
	case dstOK && !overwrite:
		ioException(w, "FileAlreadyExistsException", "org.apache.hadoop.fs.FileAlreadyExistsException", "rename destination "+dst+" already exists.")
	case dstOK && dn.dir != sn.dir:
		ioException(w, "IOException", "java.io.IOException", "Source "+src+" and destination "+dst+" must both be directories or both files")
	case dstOK && dn.dir && s.hasChildrenLocked(dst):
		ioException(w, "IOException", "java.io.IOException", "rename destination directory is not empty: "+dst)
	default:
		if dstOK {
			delete(s.nodes, dst)
		}
		s.moveLocked(src, dst)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
	}
}

func (s *Server) hasChildrenLocked(dir string) bool {
	for p := range s.nodes {
		if p != dir && under(p, dir) {
			return true
		}
	}
	return false
}

func (s *Server) delete(w http.ResponseWriter, p string, q url.Values) {
	recursive, err := boolParam(q, "recursive", false)
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nodes[p]
	switch {
	case !ok:
		writeJSON(w, map[string]bool{"boolean": false})
		return
	case p == "/":
		writeJSON(w, map[string]bool{"boolean": false})
		return
	case n.dir && !recursive && s.hasChildrenLocked(p):
		ioException(w, "PathIsNotEmptyDirectoryException", "org.apache.hadoop.fs.PathIsNotEmptyDirectoryException", "`"+p+" is non empty': Directory is not empty")
		return
	}
	for cp := range s.nodes {
		if under(cp, p) {
			delete(s.nodes, cp)
		}
	}
	writeJSON(w, map[string]bool{"boolean": true})
}

func (s *Server) serveDatanode(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	op := strings.ToUpper(q.Get("op"))
	s.mu.Lock()
	s.counts["datanode "+op]++
	s.mu.Unlock()
	p, ok := hdfsPath(r)
	if !ok {
		badRequest(w, fmt.Sprintf("not a WebHDFS path: %q", r.URL.Path))
		return
	}
	if q.Get("namenoderpcaddress") == "" {
		s.violation("datanode got %s %s without namenoderpcaddress: not sent through a namenode's redirect", r.Method, r.URL.Path)
		badRequest(w, "Required param namenoderpcaddress for op: "+op+" is null or empty")
		return
	}
	switch {
	case op == "CREATE" && r.Method == http.MethodPut:
		s.datanodeCreate(w, r, p, q)
	case op == "OPEN" && r.Method == http.MethodGet:
		s.datanodeOpen(w, r, p, q)
	default:
		badRequest(w, fmt.Sprintf("Invalid value for webhdfs parameter \"op\": %s %q on a datanode", r.Method, q.Get("op")))
	}
}

func (s *Server) datanodeCreate(w http.ResponseWriter, r *http.Request, p string, q url.Values) {
	overwrite, err := boolParam(q, "overwrite", false)
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	s.mu.Lock()
	if !s.createCheckLocked(w, p, overwrite) {
		s.mu.Unlock()
		return
	}
	if !s.mkdirsLocked(path.Dir(p)) {
		s.mu.Unlock()
		ioException(w, "ParentNotDirectoryException", "org.apache.hadoop.fs.ParentNotDirectoryException", path.Dir(p)+" (is not a directory)")
		return
	}
	// The file exists, growing, from the start of the write, as in HDFS.
	f := &node{mtime: time.Now()}
	s.nodes[p] = f
	drop := s.dropUploadAfter
	s.dropUploadAfter = -1
	s.mu.Unlock()

	buf := make([]byte, 32<<10)
	var n int64
	for {
		chunk := buf
		if drop >= 0 && int64(len(chunk)) > drop-n {
			chunk = chunk[:drop-n]
		}
		k, err := r.Body.Read(chunk)
		s.mu.Lock()
		f.data = append(f.data, chunk[:k]...)
		f.mtime = time.Now()
		s.mu.Unlock()
		n += int64(k)
		if drop >= 0 && n >= drop {
			hangUp(w)
			return
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return // the client went away; what arrived stays, as in HDFS
		}
	}
	w.Header().Set("Location", "webhdfs://"+r.Host+p)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

func (s *Server) datanodeOpen(w http.ResponseWriter, r *http.Request, p string, q url.Values) {
	off, err := param(q, "offset", 0)
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	s.mu.Lock()
	n, ok := s.nodes[p]
	var data []byte
	if ok && !n.dir {
		data = n.data // never modified in place: appends copy or share a prefix
	}
	trunc := s.truncateOpen
	s.truncateOpen = -1
	s.mu.Unlock()
	if !ok || n.dir {
		notFound(w, "File does not exist: "+p)
		return
	}
	if off > int64(len(data)) {
		ioException(w, "IOException", "java.io.IOException", fmt.Sprintf("Offset=%d out of the range [0, %d)", off, len(data)))
		return
	}
	data = data[off:]
	length, err := param(q, "length", int64(len(data)))
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	data = data[:min(length, int64(len(data)))]
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	if trunc >= 0 && trunc < int64(len(data)) {
		_, _ = w.Write(data[:trunc])
		_ = http.NewResponseController(w).Flush()
		hangUp(w)
		return
	}
	_, _ = w.Write(data)
}

// hangUp closes the request's connection without an answer.
func hangUp(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // the server closes the connection
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // a reset, as a crashed datanode gives
	}
	_ = conn.Close()
}
