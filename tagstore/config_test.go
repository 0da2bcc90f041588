package tagstore_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/krakenctl/krakenctl/tagstore"
)

func TestConfigYAML(t *testing.T) {
	t.Parallel()
	const doc = `
node_id: bi-1
dir: /var/lib/krakenctl/raft
advertise: 10.0.0.1:7000
api_addr: 10.0.0.1:8080
bootstrap: true
snapshot_threshold: 1000
snapshot_interval: 30s
trailing_logs: 500
snapshot_retain: 3
heartbeat_timeout: 500ms
election_timeout: 1s
leader_lease_timeout: 250ms
commit_timeout: 20ms
max_append_entries: 128
apply_timeout: 5s
join_timeout: 20s
change_feed_retain: 1000
`
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	var cfg tagstore.Config
	require.NoError(t, dec.Decode(&cfg))
	cfg.Defaults()
	require.NoError(t, cfg.Validate())
	require.Equal(t, tagstore.Config{
		NodeID: "bi-1", Dir: "/var/lib/krakenctl/raft", Advertise: "10.0.0.1:7000", APIAddr: "10.0.0.1:8080",
		Bootstrap: true, SnapshotThreshold: 1000, SnapshotInterval: 30 * time.Second, TrailingLogs: 500,
		SnapshotRetain: 3, HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: time.Second,
		LeaderLeaseTimeout: 250 * time.Millisecond, CommitTimeout: 20 * time.Millisecond, MaxAppendEntries: 128,
		ApplyTimeout: 5 * time.Second, JoinTimeout: 20 * time.Second, ChangeFeedRetain: 1000,
	}, cfg)

	dec = yaml.NewDecoder(strings.NewReader("node_id: a\nnode-id: b\n"))
	dec.KnownFields(true)
	require.Error(t, dec.Decode(&tagstore.Config{}), "unknown keys are errors")
}
