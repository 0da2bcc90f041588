package tagstore

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"
)

// cmdType is the first byte of every log entry the Store writes; the rest is the command's
// JSON payload. Types are never reused. A new command that older nodes may safely skip (one
// whose effect they can do without, such as extra metadata) sets ignoreUnknown; any other new
// command requires every node to be upgraded before it is first written, and an old node that
// meets it panics rather than silently diverge from the other replicas.
type cmdType byte

const (
	cmdPut        cmdType = 1
	cmdDelete     cmdType = 2
	cmdImport     cmdType = 3
	cmdMemberMeta cmdType = 4

	// ignoreUnknown is the forward-compatibility bit: a node that does not know the type (with
	// the bit cleared) skips the entry instead of panicking.
	ignoreUnknown cmdType = 0x80
)

// commandHandler applies one command's payload to the state and returns the result for the
// ApplyFuture and the changes to publish on the change feed. It runs on the FSM goroutine with
// s.mu held for writing.
type commandHandler func(s *Store, l *raft.Log, payload []byte) (*applyResult, []Change)

// commands is the dispatch table, indexed by type with the ignoreUnknown bit cleared.
var commands = map[cmdType]commandHandler{
	cmdPut:        (*Store).applyPut,
	cmdDelete:     (*Store).applyDelete,
	cmdImport:     (*Store).applyImport,
	cmdMemberMeta: (*Store).applyMemberMeta,
}

// putCmd sets a tag. Time is the leader's clock when it accepted the write.
type putCmd struct {
	Repo   string        `json:"repo"`
	Tag    string        `json:"tag"`
	Digest digest.Digest `json:"digest"`
	Time   time.Time     `json:"time"`
}

// deleteCmd removes a tag, if present.
type deleteCmd struct {
	Repo string    `json:"repo"`
	Tag  string    `json:"tag"`
	Time time.Time `json:"time"`
}

// importCmd restores a batch of tags; a tag is skipped when the stored value is at least as
// recent (by Updated).
type importCmd struct {
	Tags []importTag `json:"tags"`
}

type importTag struct {
	Repo    string        `json:"repo"`
	Tag     string        `json:"tag"`
	Digest  digest.Digest `json:"digest"`
	Updated time.Time     `json:"updated"`
}

// memberMetaCmd records (or, with Remove, forgets) a node's API address.
type memberMetaCmd struct {
	ID      string `json:"id"`
	APIAddr string `json:"api_addr,omitempty"`
	Remove  bool   `json:"remove,omitempty"`
}

// applyResult is what a command's handler returns through the ApplyFuture.
type applyResult struct {
	tag      Tag
	found    bool
	imported int
	skipped  int
	err      error
}

// encodeCommand frames a command: type byte, then JSON.
func encodeCommand(t cmdType, v any) ([]byte, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode command %d: %w", t, err)
	}
	buf := make([]byte, 0, 1+len(payload))
	buf = append(buf, byte(t))
	return append(buf, payload...), nil
}

// dispatch applies one log entry through the table, with s.mu held for writing. It panics on
// an empty entry or an unknown type without the ignoreUnknown bit: applying the rest of the
// log without it would leave this replica different from the others.
func (s *Store) dispatch(l *raft.Log) (*applyResult, []Change) {
	if len(l.Data) == 0 {
		panic(fmt.Sprintf("tagstore: empty command at log index %d", l.Index))
	}
	t := cmdType(l.Data[0])
	h, ok := commands[t&^ignoreUnknown]
	switch {
	case ok:
		return h(s, l, l.Data[1:])
	case t&ignoreUnknown != 0:
		s.log.Warn("skipping a command of unknown type marked ignorable; this node is older than the cluster",
			"type", int(t&^ignoreUnknown), "index", l.Index)
		return &applyResult{}, nil
	default:
		panic(fmt.Sprintf("tagstore: unknown command type %d at log index %d; this node is older than "+
			"the cluster's data and must be upgraded", int(t), l.Index))
	}
}

func (s *Store) applyPut(l *raft.Log, payload []byte) (*applyResult, []Change) {
	var c putCmd
	if err := json.Unmarshal(payload, &c); err != nil {
		return &applyResult{err: fmt.Errorf("decode put command at index %d: %w", l.Index, err)}, nil
	}
	t := Tag{Repo: c.Repo, Name: c.Tag, Digest: c.Digest, Index: l.Index, Updated: c.Time}
	s.st.put(t)
	return &applyResult{tag: t, found: true}, []Change{{Index: l.Index, Op: OpPut, Tag: t}}
}

func (s *Store) applyDelete(l *raft.Log, payload []byte) (*applyResult, []Change) {
	var c deleteCmd
	if err := json.Unmarshal(payload, &c); err != nil {
		return &applyResult{err: fmt.Errorf("decode delete command at index %d: %w", l.Index, err)}, nil
	}
	old, ok := s.st.remove(c.Repo, c.Tag)
	if !ok {
		return &applyResult{}, nil
	}
	return &applyResult{tag: old, found: true}, []Change{{Index: l.Index, Op: OpDelete, Tag: Tag{
		Repo: old.Repo, Name: old.Name, Digest: old.Digest, Index: l.Index, Updated: c.Time,
	}}}
}

func (s *Store) applyImport(l *raft.Log, payload []byte) (*applyResult, []Change) {
	var c importCmd
	if err := json.Unmarshal(payload, &c); err != nil {
		return &applyResult{err: fmt.Errorf("decode import command at index %d: %w", l.Index, err)}, nil
	}
	res := &applyResult{}
	changes := make([]Change, 0, len(c.Tags))
	for _, it := range c.Tags {
		if cur, ok := s.st.get(it.Repo, it.Tag); ok && !it.Updated.After(cur.Updated) {
			res.skipped++
			continue
		}
		t := Tag{Repo: it.Repo, Name: it.Tag, Digest: it.Digest, Index: l.Index, Updated: it.Updated}
		s.st.put(t)
		changes = append(changes, Change{Index: l.Index, Op: OpPut, Tag: t})
		res.imported++
	}
	return res, changes
}

func (s *Store) applyMemberMeta(l *raft.Log, payload []byte) (*applyResult, []Change) {
	var c memberMetaCmd
	if err := json.Unmarshal(payload, &c); err != nil {
		return &applyResult{err: fmt.Errorf("decode member command at index %d: %w", l.Index, err)}, nil
	}
	if c.Remove {
		delete(s.st.members, c.ID)
	} else {
		s.st.members[c.ID] = c.APIAddr
	}
	return &applyResult{}, nil
}
