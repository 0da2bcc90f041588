package buildindex

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/tagstore"
	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"
)

// With TLS, joins and removals need an admin's certificate (attacks X5 and X6 needed
// nothing). A build-index node may ask to add itself, and a request forwarded by a node is
// taken on that node's word (it checked the request first).
func TestMembershipNeedsAnAdminOverTLS(t *testing.T) {
	t.Parallel()
	ca := tagstoretest.NewCA(t, "cluster CA")
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srvCfg := ca.ServerConfig(ca.Issue("n1", groupBuildIndex))
	srvCfg.ClientAuth = tls.VerifyClientCertIfGiven // so that a client without one gets an answer
	store := newFakeStore("n1")
	var deps Deps
	deps.Listener = tls.NewListener(raw, srvCfg)
	n := startFake(t, store, deps, nil)
	base := "https://" + n.addr

	as := func(name string, groups ...string) *tls.Config { return ca.ClientConfig(ca.Issue(name, groups...)) }
	anonymous := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS13}
	foreign := tagstoretest.NewCA(t, "another CA")
	stranger := foreign.ClientConfig(foreign.Issue("root", groupAdmin))
	stranger.RootCAs = ca.Pool()
	join := func(id string) api.Member {
		return api.Member{ID: id, RaftAddr: "127.0.0.1:" + id[1:], APIAddr: "127.0.0.1:1" + id[1:]}
	}
	members := func() int { return len(store.Status().Members) }

	for name, cfg := range map[string]*tls.Config{
		"no certificate":             anonymous,
		"an agent":                   as("agent-1", "agent"),
		"a proxy":                    as("proxy-1", "proxy"),
		"a build-index node for n3":  as("n3", groupBuildIndex),
		"admin name, no admin group": as("admin", "agent"),
		// Its certificate is not one the server asks for (another CA), so the client sends
		// none; had it sent it, the handshake would have failed.
		"admin of another CA": stranger,
	} {
		e := do(t, cfg, http.MethodPost, base+api.ClusterMembersPath, join("n2"), nil)
		require.NotNil(t, e, name)
		require.Equal(t, http.StatusForbidden, e.Status, name)
		require.Equal(t, errcode.CodeDenied, e.Code, name)
		require.Contains(t, e.Message, `"admin"`, name)
		require.Equal(t, 1, members(), name)
	}
	require.Nil(t, do(t, as("ops", groupAdmin), http.MethodPost, base+api.ClusterMembersPath, join("n2"), nil))
	require.Equal(t, 2, members())

	// A node joins itself, but nobody else.
	require.Nil(t, do(t, as("n3", groupBuildIndex), http.MethodPost, base+api.ClusterMembersPath, join("n3"), nil))
	require.Equal(t, 3, members())
	e := do(t, as("n3", groupBuildIndex), http.MethodPost, base+api.ClusterMembersPath, join("n4"), nil)
	require.Equal(t, http.StatusForbidden, e.Status)
	require.Equal(t, `n3 (groups [build-index]) may not add member n4: that needs a certificate of group "admin"`, e.Message)

	// Removals: a node cannot remove anyone on its own authority; forwarded by that node, the
	// request is its checked one. An admin removes.
	e = do(t, as("n3", groupBuildIndex), http.MethodDelete, base+api.ClusterMemberPath("n2"), nil, nil)
	require.Equal(t, http.StatusForbidden, e.Status)
	e = do(t, as("n3", groupBuildIndex), http.MethodDelete, base+api.ClusterMemberPath("n2"), nil,
		http.Header{HeaderForwardedBy: {"n1"}})
	require.Equal(t, http.StatusForbidden, e.Status, "the forwarding header names another node than the certificate")
	require.Equal(t, 3, members())
	require.Nil(t, do(t, as("n3", groupBuildIndex), http.MethodDelete, base+api.ClusterMemberPath("n2"), nil,
		http.Header{HeaderForwardedBy: {"n3"}}))
	require.Nil(t, do(t, as("ops", groupAdmin), http.MethodDelete, base+api.ClusterMemberPath("n3"), nil, nil))
	require.Equal(t, 1, members())
	e = do(t, anonymous, http.MethodDelete, base+api.ClusterMemberPath("n1"), nil, nil)
	require.Equal(t, http.StatusForbidden, e.Status)
	require.Equal(t, 1, members())
}

// Without TLS the membership API is open, as before TLS existed: the network is trusted by
// construction.
func TestMembershipWithoutTLS(t *testing.T) {
	t.Parallel()
	store := newFakeStore("n1")
	n := startFake(t, store, Deps{}, nil)
	_, err := n.cli.Join(t.Context(), api.Member{ID: "n2", RaftAddr: "127.0.0.1:2", APIAddr: "127.0.0.1:12"})
	require.NoError(t, err)
	_, err = n.cli.Remove(t.Context(), "n2", false)
	require.NoError(t, err)
}

// A removal that would leave no quorum is refused with 409 QUORUM_AT_RISK naming why, unless
// forced.
func TestRemoveQuorumAtRisk(t *testing.T) {
	t.Parallel()
	store := newFakeStore("n1")
	store.members = append(store.members, tagstoreMember("n2"), tagstoreMember("n3"))
	store.quorumAtRisk = true
	n := startFake(t, store, Deps{}, nil)
	ctx := t.Context()

	_, err := n.cli.Remove(ctx, "n2", false)
	re := apiErr(t, err, http.StatusConflict, errcode.CodeQuorumAtRisk)
	require.Equal(t, "refused to remove n2: would leave no quorum: the 2 voters left (a, b) need 2 live for a quorum, "+
		"but only 1 answer (b do not) (force=true removes it anyway)", re.Message)
	require.Len(t, store.Status().Members, 3)

	st, err := n.cli.Remove(ctx, "n2", true)
	require.NoError(t, err)
	require.Len(t, st.Members, 2)

	resp := do(t, nil, http.MethodDelete, "http://"+n.addr+api.ClusterMemberPath("n3")+"?force=maybe", nil, nil)
	require.Equal(t, http.StatusBadRequest, resp.Status)
	require.Equal(t, `invalid force="maybe": want true or false`, resp.Message)
	require.Len(t, store.Status().Members, 2)
}

func tagstoreMember(id string) tagstore.Member {
	return tagstore.Member{ID: id, RaftAddr: "127.0.0.1:" + id[1:], Suffrage: tagstore.SuffrageVoter}
}

// do sends a request as the holder of cfg's certificate (plain HTTP when cfg is nil) and
// returns the API error, or nil for 200.
func do(t *testing.T, cfg *tls.Config, method, url string, body any, header http.Header) *errcode.Error {
	t.Helper()
	var b []byte
	if body != nil {
		var err error
		b, err = json.Marshal(body)
		require.NoError(t, err)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(b))
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var eb errcode.Body
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
	require.Len(t, eb.Errors, 1)
	return &errcode.Error{Status: resp.StatusCode, Code: eb.Errors[0].Code, Message: eb.Errors[0].Message}
}
