package origin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// clientAs is an HTTPS client presenting a certificate of group from ctls's CA.
func clientAs(t *testing.T, ctls *cluster.TLS, group string) *http.Client {
	t.Helper()
	cfg, err := ctls.CA.IssueFiles(t.TempDir(), group, pki.Leaf{Name: "test-" + group, Groups: []string{group}})
	require.NoError(t, err)
	p, err := pki.Load(cfg)
	require.NoError(t, err)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: p.ClientConfig()}, Timeout: time.Minute}
}

func status(err error) int {
	if err == nil {
		return http.StatusOK
	}
	var e *errcode.Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// Under TLS only an admin lists and deletes; a proxy (a manifest push) may touch; an agent may
// do neither. Nothing is deleted by a refused request.
func TestGCAPIAuthorization(t *testing.T) {
	ctls := clustertest.TLS(t)
	c := clustertest.Start(t, cluster.Spec{Origins: 1, TLS: ctls, NoBackend: true}, cluster.Deps{})
	addr := "https://" + c.Addr(cluster.Origin, 0)
	admin := client.NewOrigin(addr, c.Client())
	data := []byte("an unreferenced blob")
	d := digest.FromBytes(data)
	require.NoError(t, admin.Upload(t.Context(), "team/app", d, bytes.NewReader(data), int64(len(data))))
	later := time.Now().Add(time.Hour)

	for _, group := range []string{pki.GroupAgent, pki.GroupProxy} {
		o := client.NewOrigin(addr, clientAs(t, ctls, group))
		_, err := o.GCBlobs(t.Context(), "", 10)
		require.Equal(t, http.StatusForbidden, status(err), "%s lists: %v", group, err)
		_, err = o.GCDelete(t.Context(), d, later, false)
		require.Equal(t, http.StatusForbidden, status(err), "%s deletes: %v", group, err)
		_, err = o.GCBackendList(t.Context(), "team/app", "")
		require.Equal(t, http.StatusForbidden, status(err), "%s lists the backend: %v", group, err)
		_, err = o.GCBackendDelete(t.Context(), "team/app", d, later, nil, false)
		require.Equal(t, http.StatusForbidden, status(err), "%s deletes from the backend: %v", group, err)
		_, err = o.GCUse(t.Context(), d, later, false)
		require.Equal(t, http.StatusForbidden, status(err), "%s asks another origin's question: %v", group, err)
		err = o.GCWriteback(t.Context(), "team/app", d)
		require.Equal(t, http.StatusForbidden, status(err), "%s asks for a write-back: %v", group, err)
		err = o.GCTouch(t.Context(), "team/app", d)
		if group == pki.GroupProxy {
			require.NoError(t, err)
		} else {
			require.Equal(t, http.StatusForbidden, status(err), "an agent touches: %v", err)
		}
	}
	_, err := admin.StatLocal(t.Context(), "team/app", d)
	require.NoError(t, err, "nothing refused deleted anything")

	// Another origin (deciding about a backend copy) may ask both.
	peer := client.NewOrigin(addr, clientAs(t, ctls, pki.GroupOrigin))
	u, err := peer.GCUse(t.Context(), d, later, false)
	require.NoError(t, err)
	require.Equal(t, api.GCUse{Used: true, Reason: api.GCKeptLocal}, u)
	require.NoError(t, peer.GCWriteback(t.Context(), "team/app", d))

	p, err := admin.GCBlobs(t.Context(), "", 10)
	require.NoError(t, err)
	require.Len(t, p.Blobs, 1)
	require.Equal(t, d, p.Blobs[0].Digest)
	require.Equal(t, []string{"team/app"}, p.Blobs[0].Namespaces)
	res, err := admin.GCDelete(t.Context(), d, later, false)
	require.NoError(t, err)
	require.True(t, res.Deleted)
	require.Equal(t, int64(len(data)), res.Bytes)
}

// Bad input is refused with a clear status before anything changes; a touch pulls a blob the
// origin lacks back from the backend; the backend copy goes only once no local copy is left.
func TestGCAPIInputAndBackend(t *testing.T) {
	be := memory.New()
	// A touch's write-back (and its hold on the copy) runs soon, and a decision about a backend
	// copy has a second (half the hold) to ask the members.
	c := newCluster(t, 1, 1, be, func(cfg *origin.Config) { cfg.Writeback.TouchHold = gcTestHold })
	o := client.NewOrigin(c.nodes[0].addr, c.hc)
	data := []byte("in the backend only")
	d := digest.FromBytes(data)
	require.NoError(t, be.Upload(t.Context(), "team/app", d.Encoded(), bytes.NewReader(data), int64(len(data))))

	get := func(path string) int {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodDelete, "http://"+c.nodes[0].addr+path, nil)
		require.NoError(t, err)
		resp, err := c.hc.Do(req)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		return resp.StatusCode
	}
	require.Equal(t, http.StatusBadRequest, get(api.GCBlobPath(d)), "no cutoff")
	require.Equal(t, http.StatusBadRequest, get(api.GCBlobPath(d)+"?cutoff=yesterday"))
	require.Equal(t, http.StatusBadRequest, get(api.GCBlobPath(d)+"?cutoff="+time.Now().Format(time.RFC3339)+"&dry_run=maybe"))
	require.Equal(t, http.StatusBadRequest, get(api.GCBlobsPath+"/sha512:"+digest.SHA512.FromBytes(data).Encoded()+"?cutoff="+time.Now().Format(time.RFC3339)))
	require.Equal(t, http.StatusBadRequest, get(api.GCBackendPath+"/Team%2FApp/"+d.String()+"?cutoff="+time.Now().Format(time.RFC3339)))
	now := url.QueryEscape(time.Now().Format(time.RFC3339))
	require.Equal(t, http.StatusBadRequest, get(api.GCBackendBlobPath("team/app", d)+"?cutoff="+now+"&member=nope"), "a member cutoff without its address")
	require.Equal(t, http.StatusBadRequest, get(api.GCBackendBlobPath("team/app", d)+"?cutoff="+now+"&member=127.0.0.1:1@yesterday"))
	_, err := o.GCUse(t.Context(), digest.Digest("sha256:short"), time.Now(), false)
	require.Equal(t, http.StatusBadRequest, status(err))
	require.Equal(t, http.StatusNotFound, status(o.GCWriteback(t.Context(), "team/app", d)), "no local copy to write back")
	_, err = o.GCBlobs(t.Context(), "", 20000)
	require.Equal(t, http.StatusBadRequest, status(err))
	require.Equal(t, http.StatusNotFound, status(o.GCTouch(t.Context(), "team/app", digest.FromString("nowhere"))))

	// Not on the origin: the backend copy is old enough and nothing holds it locally.
	res, err := o.GCBackendDelete(t.Context(), "team/app", d, time.Now().Add(time.Hour), nil, true)
	require.NoError(t, err)
	require.True(t, res.Deleted)
	// A touch pulls it in; the backend copy now stays.
	require.NoError(t, o.GCTouch(t.Context(), "team/app", d))
	_, err = o.StatLocal(t.Context(), "team/app", d)
	require.NoError(t, err)
	res, err = o.GCBackendDelete(t.Context(), "team/app", d, time.Now().Add(time.Hour), nil, false)
	require.NoError(t, err)
	require.Equal(t, api.GCKeptLocal, res.Kept)
	// The touch queued a write-back, which holds the copy until it ran.
	require.Eventually(t, func() bool {
		res, err := o.GCDelete(t.Context(), d, time.Now().Add(-time.Hour), true)
		return err == nil && res.Kept != api.GCKeptInUse
	}, time.Minute, 5*time.Millisecond)
	// The local copy was touched after a cutoff taken before the touch: it stays too.
	res, err = o.GCDelete(t.Context(), d, time.Now().Add(-time.Hour), false)
	require.NoError(t, err)
	require.Equal(t, api.GCKeptRecent, res.Kept)

	names, err := o.GCBackendList(t.Context(), "team/app", d.Encoded()[:1])
	require.NoError(t, err)
	require.Equal(t, []string{d.Encoded()}, names)

	// Once the local copy is gone, the backend's goes; then both are absent.
	res, err = o.GCDelete(t.Context(), d, time.Now().Add(time.Hour), false)
	require.NoError(t, err)
	require.True(t, res.Deleted)
	res, err = o.GCBackendDelete(t.Context(), "team/app", d, time.Now().Add(time.Hour), nil, false)
	require.NoError(t, err)
	require.True(t, res.Deleted)
	_, ok := be.Peek("team/app", d.Encoded())
	require.False(t, ok)
	res, err = o.GCBackendDelete(t.Context(), "team/app", d, time.Now().Add(time.Hour), nil, false)
	require.NoError(t, err)
	require.Equal(t, api.GCKeptAbsent, res.Kept)
	require.Equal(t, http.StatusNotFound, status(o.GCTouch(t.Context(), "team/app", d)), "collected: a push referencing it fails")

	reg := c.nodes[0].c.Registry(cluster.Origin, 0)
	require.Equal(t, 1.0, gcCounter(t, reg, "krakenctl_origin_gc_deleted_blobs_total", "local"))
	require.Equal(t, 1.0, gcCounter(t, reg, "krakenctl_origin_gc_deleted_blobs_total", "backend"))
	require.Equal(t, float64(len(data)), gcCounter(t, reg, "krakenctl_origin_gc_deleted_bytes_total", "backend"))
	require.Equal(t, 1.0, gcCounter(t, reg, "krakenctl_origin_gc_touches_total", ""), "dry runs and refusals count nothing")
}

// gcCounter reads a counter of reg, by its "where" label when where is set.
func gcCounter(t *testing.T, reg prometheus.Gatherer, name, where string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if where == "" || l.GetName() == "where" && l.GetValue() == where {
					return m.GetCounter().GetValue()
				}
			}
			if where == "" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// A touch that spends long pulling its blob from the backend holds up no touch or delete of
// another digest, even one that shared its lock stripe when the locks were striped (64 stripes
// by the first hex byte).
func TestGCTouchPullDoesNotBlockOtherDigests(t *testing.T) {
	be := memory.New()
	c := newCluster(t, 1, 1, be, nil)
	o := client.NewOrigin(c.nodes[0].addr, c.hc)
	slow, sd := randomBlob(t, 4096)
	require.NoError(t, be.Upload(t.Context(), "team/app", sd.Encoded(), bytes.NewReader(slow), int64(len(slow))))
	var other []byte
	var od digest.Digest
	for other == nil || od.Encoded()[:2] != sd.Encoded()[:2] {
		other, od = randomBlob(t, 64) // same first byte: the same stripe as sd under the old lock
	}
	require.NoError(t, o.Upload(t.Context(), "team/app", od, bytes.NewReader(other), int64(len(other))))

	started, release := make(chan struct{}), make(chan struct{})
	be.SetFault(func(op memory.Op, _, name string) error {
		if op == memory.OpDownload && name == sd.Encoded() {
			close(started)
			<-release
		}
		return nil
	})
	touched := make(chan error, 1)
	go func() { touched <- o.GCTouch(t.Context(), "team/app", sd) }()
	<-started

	done := make(chan error, 1)
	go func() {
		_, err := o.GCDelete(t.Context(), od, time.Now().Add(-time.Hour), true)
		if err == nil {
			err = o.GCTouch(t.Context(), "team/app", od)
		}
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		close(release)
		t.Fatal("a delete and a touch of another digest waited for a slow pull")
	}
	require.NoError(t, err)
	close(release)
	require.NoError(t, <-touched)
}

// gcFixture is two origins (R=1) over a memory backend, for the backend delete's questions.
type gcFixture struct {
	t              *testing.T
	c              *testCluster
	be             *memory.Backend
	decider, other *client.Origin
	otherAddr      string
}

// gcTestHold is the writeback.touch_hold of tests whose touches must let go of their copies
// soon: a decision about a backend copy then has a second (half of it) to ask the members,
// ample on one host.
const gcTestHold = 2 * time.Second

func newGCFixture(t *testing.T, touchHold time.Duration) *gcFixture {
	be := memory.New()
	return newGCFixtureOn(t, be, be, touchHold)
}

// newGCFixtureOn is newGCFixture over store, whose objects are mem's.
func newGCFixtureOn(t *testing.T, store backend.Backend, mem *memory.Backend, touchHold time.Duration) *gcFixture {
	c := newCluster(t, 2, 1, store, func(cfg *origin.Config) { cfg.Writeback.TouchHold = touchHold })
	return &gcFixture{t: t, c: c, be: mem, decider: c.origin(c.nodes[0].addr), other: c.origin(c.nodes[1].addr), otherAddr: c.nodes[1].addr}
}

// put stores a new blob in the backend only.
func (f *gcFixture) put() digest.Digest {
	data, d := randomBlob(f.t, 2048)
	require.NoError(f.t, f.be.Upload(f.t.Context(), "team/app", d.Encoded(), bytes.NewReader(data), int64(len(data))))
	return d
}

// cutoff is a cutoff after every object stored so far.
func (f *gcFixture) cutoff() time.Time {
	time.Sleep(2 * time.Millisecond)
	return time.Now()
}

func (f *gcFixture) backendDelete(d digest.Digest, cutoff time.Time, members map[string]time.Time, dry bool) api.GCDeleteResult {
	f.t.Helper()
	res, err := f.decider.GCBackendDelete(f.t.Context(), "team/app", d, cutoff, members, dry)
	require.NoError(f.t, err)
	return res
}

// The origin deciding about a backend copy asks every other ring member first, each with its
// own cutoff: one that touched the blob since (even if its copy is gone since: the touch is
// journaled), one missing from the run's cutoffs and one that does not answer each keep the
// object, in a dry run as in a run.
func TestGCBackendDeleteAsksEveryMember(t *testing.T) {
	f := newGCFixture(t, gcTestHold) // a touch's write-back runs, and lets go, soon

	touched := f.put()
	cutoff := f.cutoff()
	members := map[string]time.Time{f.otherAddr: cutoff}
	require.NoError(t, f.other.GCTouch(t.Context(), "team/app", touched))
	for _, dry := range []bool{true, false} {
		require.Equal(t, api.GCKeptLocal, f.backendDelete(touched, cutoff, members, dry).Kept, "dry run %v", dry)
	}
	// The touched copy is evicted (deleted here, as eviction would): the journal remembers.
	require.Eventually(t, func() bool {
		res, err := f.other.GCDelete(t.Context(), touched, time.Now().Add(time.Hour), false)
		return err == nil && res.Deleted
	}, time.Minute, 5*time.Millisecond)
	for _, dry := range []bool{true, false} {
		require.Equal(t, api.GCKeptTouched, f.backendDelete(touched, cutoff, members, dry).Kept, "dry run %v", dry)
	}
	// A later run, whose cutoff is after the touch, deletes it.
	later := f.cutoff()
	require.True(t, f.backendDelete(touched, later, map[string]time.Time{f.otherAddr: later}, false).Deleted)

	untouched := f.put()
	cutoff = f.cutoff()
	require.Equal(t, api.GCKeptUnasked, f.backendDelete(untouched, cutoff, nil, false).Kept, "the other member is not in the run")
	f.c.nodes[1].stop()
	require.Equal(t, api.GCKeptUnasked, f.backendDelete(untouched, cutoff, map[string]time.Time{f.otherAddr: cutoff}, false).Kept, "the other member does not answer")
	f.c.nodes[1].start()
	require.True(t, f.backendDelete(untouched, cutoff, map[string]time.Time{f.otherAddr: cutoff}, true).Deleted)
	require.True(t, f.backendDelete(untouched, cutoff, map[string]time.Time{f.otherAddr: cutoff}, false).Deleted)
	_, ok := f.be.Peek("team/app", untouched.Encoded())
	require.False(t, ok)
}

// A touch that lands on another member between the deciding origin's question and its delete
// (it pulls the blob from the backend just before the object goes) is caught by the question
// asked again after the delete: that member writes its copy back, and the object is there
// again although the touch's own write-back is not due for half an hour.
func TestGCBackendDeleteRacingTouchWritesBack(t *testing.T) {
	f := newGCFixture(t, 30*time.Minute)
	d := f.put()
	cutoff := f.cutoff()
	var once sync.Once
	touched := errors.New("no touch")
	f.be.SetFault(func(op memory.Op, _, name string) error {
		if op == memory.OpDelete && name == d.Encoded() {
			once.Do(func() { touched = f.other.GCTouch(t.Context(), "team/app", d) })
		}
		return nil
	})
	res := f.backendDelete(d, cutoff, map[string]time.Time{f.otherAddr: cutoff}, false)
	require.NoError(t, touched, "the touch between the question and the delete")
	require.True(t, res.Deleted, "%+v", res)
	require.Empty(t, res.Error)
	require.Eventually(t, func() bool { _, ok := f.be.Peek("team/app", d.Encoded()); return ok },
		time.Minute, 5*time.Millisecond, "the member that touched it wrote it back")
}

// slowDeleteStore is a memory backend whose Delete first runs slow (given the call's context)
// and then, like a real store's request, fails with the context's error if it ended meanwhile.
type slowDeleteStore struct {
	*memory.Backend
	slow atomic.Pointer[func(ctx context.Context, name string)]
}

func (b *slowDeleteStore) Delete(ctx context.Context, ns, name string) error {
	if slow := b.slow.Load(); slow != nil {
		(*slow)(ctx, name)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("slow delete %s/%s: %w", ns, name, err)
	}
	return b.Backend.Delete(ctx, ns, name)
}

// racingTouch is what the reviewer of issue 17 reproduced: once the deciding origin has its
// members' answers and is about to delete the backend object, a push's touch fails over to the
// other member, which pulls the blob from the backend; the decision takes longer still (until
// that member's queue is empty, or settle); then the member stops, so the question asked
// again after the delete cannot reach it. It returns the touch's error once the hook ran.
func (f *gcFixture) racingTouch(d digest.Digest, settle func(ctx context.Context) <-chan struct{}) (ctxHook func(ctx context.Context, name string), touchErr func() error) {
	var once sync.Once
	var touched, stopped error
	done := make(chan struct{})
	hook := func(ctx context.Context, name string) {
		if name != d.Encoded() {
			return
		}
		once.Do(func() {
			defer close(done)
			touched = f.other.GCTouch(context.Background(), "team/app", d)
			wait := settle(ctx)
			for {
				n, err := f.c.nodes[1].srv().QueueLen()
				if err == nil && n == 0 {
					break
				}
				select {
				case <-wait:
				case <-time.After(5 * time.Millisecond):
					continue
				}
				break
			}
			stopped = f.c.nodes[1].c.Stop(cluster.Origin, 1)
		})
	}
	return hook, func() error { <-done; return errors.Join(touched, stopped) }
}

// evictOther deletes the other member's copy as its cleanup would, once nothing holds it.
func (f *gcFixture) evictOther(d digest.Digest) {
	f.t.Helper()
	require.Eventually(f.t, func() bool {
		res, err := f.other.GCDelete(f.t.Context(), d, time.Now().Add(time.Hour), false)
		return err == nil && res.Deleted
	}, time.Minute, 5*time.Millisecond, "the member's copy is let go")
}

// requireInBackend checks that d's object is in the backend with d's bytes.
func (f *gcFixture) requireInBackend(d digest.Digest) {
	f.t.Helper()
	b, ok := f.be.Peek("team/app", d.Encoded())
	require.True(f.t, ok, "the backend object of %s, once the only other copy is gone", d)
	require.Equal(f.t, d, digest.FromBytes(b))
}

// The reviewer's sequence: a touch fails over to a member after it answered "not used", the
// deciding origin's delete is slower than that member's write-back, and the member cannot be
// asked again after the delete. The delete's deadline (half of touch_hold after the question)
// ends before the member's touch is checked, so the object is not deleted; the member's copy,
// evicted afterwards, was not the only one. Before the deadline the delete went through and
// the blob a linked manifest references was stored nowhere once that copy was evicted.
func TestGCBackendDeleteSlowerThanRacingTouchKeepsObject(t *testing.T) {
	store := &slowDeleteStore{Backend: memory.New()}
	f := newGCFixtureOn(t, store, store.Backend, gcTestHold)
	d := f.put()
	cutoff := f.cutoff()
	hook, touched := f.racingTouch(d, func(ctx context.Context) <-chan struct{} { return ctx.Done() })
	store.slow.Store(&hook)
	res := f.backendDelete(d, cutoff, map[string]time.Time{f.otherAddr: cutoff}, false)
	require.NoError(t, touched(), "the touch between the question and the delete, then the member's stop")
	f.c.nodes[1].start()
	f.evictOther(d)
	f.requireInBackend(d)
	require.Equal(t, api.GCKeptSlow, res.Kept, "%+v", res)
}

// A touch fails over to a member after it answered "not used"; the delete goes through in
// time, but the question asked again after it cannot reach the member (stopped). The member
// held its copy: its check, touch_hold after the touch (so after the delete), finds the object
// gone and puts it back from that copy, which is then evicted. Before the hold, the member's
// write-back ran touch_delay after the touch whatever the decision took: a decision slower
// than that (settle here) found it done and its copy unheld.
func TestGCBackendDeleteRacingTouchRePutsWhenNotAskedAgain(t *testing.T) {
	f := newGCFixture(t, gcTestHold)
	d := f.put()
	cutoff := f.cutoff()
	hook, touched := f.racingTouch(d, func(context.Context) <-chan struct{} {
		c := make(chan struct{})
		time.AfterFunc(200*time.Millisecond, func() { close(c) })
		return c
	})
	f.be.SetFault(func(op memory.Op, _, name string) error {
		if op == memory.OpDelete {
			hook(context.Background(), name)
		}
		return nil
	})
	res := f.backendDelete(d, cutoff, map[string]time.Time{f.otherAddr: cutoff}, false)
	require.NoError(t, touched(), "the touch between the question and the delete, then the member's stop")
	require.True(t, res.Deleted, "%+v", res)
	require.NotEmpty(t, res.Error, "the member could not be asked again")
	f.c.nodes[1].start()
	f.evictOther(d)
	f.requireInBackend(d)
}

// An origin the run names that is no longer a ring member (it left between a push's touch and
// the decision) is asked too: its "touched" keeps the object, and so does its silence; its
// "not used" lets the delete go on.
func TestGCBackendDeleteAsksRunMembersOutsideTheRing(t *testing.T) {
	f := newGCFixture(t, gcTestHold)
	var answer atomic.Pointer[api.GCUse]
	answer.Store(&api.GCUse{Used: true, Reason: api.GCKeptTouched})
	left := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/use") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(answer.Load())
	}))
	defer left.Close()
	leftAddr := strings.TrimPrefix(left.URL, "http://")

	d := f.put()
	cutoff := f.cutoff()
	members := map[string]time.Time{f.otherAddr: cutoff, leftAddr: cutoff}
	require.Equal(t, api.GCKeptTouched, f.backendDelete(d, cutoff, members, false).Kept, "it touched the blob")
	answer.Store(&api.GCUse{})
	require.True(t, f.backendDelete(d, cutoff, members, true).Deleted, "it does not need the blob")
	left.Close()
	require.Equal(t, api.GCKeptUnasked, f.backendDelete(d, cutoff, members, false).Kept, "it does not answer")
	_, ok := f.be.Peek("team/app", d.Encoded())
	require.True(t, ok)
}

// A member whose answer comes later than half of touch_hold after the deciding origin began to
// ask (here it waits for the lock of a touch whose pull from the backend takes touch_hold, then
// fails) leaves the object in place, "not used" though the answer is: a touch it took after
// answering might be checked before the delete.
func TestGCBackendDeleteAnswerTooLateKeepsObject(t *testing.T) {
	f := newGCFixture(t, gcTestHold)
	d := f.put()
	cutoff := f.cutoff()
	pulling := make(chan struct{})
	var once sync.Once
	f.be.SetFault(func(op memory.Op, _, name string) error {
		if op != memory.OpDownload || name != d.Encoded() {
			return nil
		}
		once.Do(func() { close(pulling) })
		time.Sleep(gcTestHold)
		return errors.New("a slow backend, then a failure")
	})
	touched := make(chan error, 1)
	go func() { touched <- f.other.GCTouch(context.Background(), "team/app", d) }()
	<-pulling // the member's touch holds d's lock from here
	res := f.backendDelete(d, cutoff, map[string]time.Time{f.otherAddr: cutoff}, false)
	require.Error(t, <-touched, "the touch failed, and recorded nothing")
	require.Equal(t, api.GCKeptSlow, res.Kept, "%+v", res)
	_, ok := f.be.Peek("team/app", d.Encoded())
	require.True(t, ok)
}
