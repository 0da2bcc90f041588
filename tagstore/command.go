package tagstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"
)

// cmdType is the first byte of every log entry the Store writes; the rest is the command's
// JSON payload. Types are never reused. A new command that older nodes may safely skip (one
// whose effect they can do without, such as extra metadata) sets ignoreUnknown; any other new
// command requires every node to be upgraded before it is first written. A node that meets an
// unknown type without the bit refuses the entry when it arrives from the network (see
// guardTransport), and never panics on it: at apply time it logs an error and skips it.
type cmdType byte

const (
	cmdPut        cmdType = 1
	cmdDelete     cmdType = 2
	cmdImport     cmdType = 3
	cmdMemberMeta cmdType = 4

	// ignoreUnknown is the forward-compatibility bit: a node that does not know the type (with
	// the bit cleared) skips the entry.
	ignoreUnknown cmdType = 0x80
)

// ErrUnknownCommand marks a log entry that is not a command this node knows: empty, of an
// unknown type without the ignore-unknown bit, or with a payload that does not decode.
var ErrUnknownCommand = errors.New("unknown command")

// command is one entry of the dispatch table: how to decode a payload, and how to apply it to
// the state. apply runs on the FSM goroutine with s.mu held for writing and returns the result
// for the ApplyFuture and the changes to publish on the change feed.
type command struct {
	name   string
	decode func(payload []byte) (any, error)
	apply  func(s *Store, l *raft.Log, payload any) (*applyResult, []Change)
}

// typed builds a table entry whose payload is a *T decoded from JSON.
func typed[T any](name string, apply func(s *Store, l *raft.Log, c *T) (*applyResult, []Change)) command {
	return command{
		name: name,
		decode: func(payload []byte) (any, error) {
			c := new(T)
			if err := json.Unmarshal(payload, c); err != nil {
				return nil, err
			}
			return c, nil
		},
		apply: func(s *Store, l *raft.Log, c any) (*applyResult, []Change) { return apply(s, l, c.(*T)) },
	}
}

// commands is the dispatch table, indexed by type with the ignoreUnknown bit cleared.
var commands = map[cmdType]command{
	cmdPut:        typed("put", (*Store).applyPut),
	cmdDelete:     typed("delete", (*Store).applyDelete),
	cmdImport:     typed("import", (*Store).applyImport),
	cmdMemberMeta: typed("member", (*Store).applyMemberMeta),
}

// decodeCommand decodes a log entry's data. It returns the table entry and the decoded
// payload; both are zero for an unknown type marked ignorable, which is to be skipped. Any
// other entry that is not a known command with a payload that decodes wraps
// ErrUnknownCommand. It never panics, whatever data holds.
func decodeCommand(data []byte) (*command, any, error) {
	if len(data) == 0 {
		return nil, nil, fmt.Errorf("%w: empty entry", ErrUnknownCommand)
	}
	t := cmdType(data[0])
	c, ok := commands[t&^ignoreUnknown]
	switch {
	case ok:
		payload, err := c.decode(data[1:])
		if err != nil {
			return nil, nil, fmt.Errorf("%w: decode %s command: %w", ErrUnknownCommand, c.name, err)
		}
		return &c, payload, nil
	case t&ignoreUnknown != 0:
		return nil, nil, nil
	default:
		return nil, nil, fmt.Errorf("%w: type %d", ErrUnknownCommand, int(t))
	}
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

// dispatch applies one log entry through the table, with s.mu held for writing. An entry it
// cannot decode (which the network guard keeps out of the log, so it can only come from a
// newer node's data on disk or from corruption) is skipped with an error result and logged:
// this replica may then differ from the others, which an operator must resolve, but the node
// keeps serving instead of crashing on every restart.
func (s *Store) dispatch(l *raft.Log) (*applyResult, []Change) {
	c, payload, err := decodeCommand(l.Data)
	switch {
	case err != nil:
		s.m.applyErrors.Inc()
		s.log.Error("skipping a log entry that is not a known command; this replica may now differ from the others "+
			"(an entry written by a newer version, or a damaged log)", "index", l.Index, "term", l.Term, "err", err)
		return &applyResult{err: fmt.Errorf("apply entry at index %d: %w", l.Index, err)}, nil
	case c == nil:
		s.log.Warn("skipping a command of unknown type marked ignorable; this node is older than the cluster",
			"type", int(l.Data[0]&^byte(ignoreUnknown)), "index", l.Index)
		return &applyResult{}, nil
	default:
		return c.apply(s, l, payload)
	}
}

func (s *Store) applyPut(l *raft.Log, c *putCmd) (*applyResult, []Change) {
	t := Tag{Repo: c.Repo, Name: c.Tag, Digest: c.Digest, Index: l.Index, Updated: c.Time}
	s.st.put(t)
	return &applyResult{tag: t, found: true}, []Change{{Index: l.Index, Op: OpPut, Tag: t}}
}

func (s *Store) applyDelete(l *raft.Log, c *deleteCmd) (*applyResult, []Change) {
	old, ok := s.st.remove(c.Repo, c.Tag)
	if !ok {
		return &applyResult{}, nil
	}
	return &applyResult{tag: old, found: true}, []Change{{Index: l.Index, Op: OpDelete, Tag: Tag{
		Repo: old.Repo, Name: old.Name, Digest: old.Digest, Index: l.Index, Updated: c.Time,
	}}}
}

func (s *Store) applyImport(l *raft.Log, c *importCmd) (*applyResult, []Change) {
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

func (s *Store) applyMemberMeta(l *raft.Log, c *memberMetaCmd) (*applyResult, []Change) {
	if c.Remove {
		delete(s.st.members, c.ID)
	} else {
		s.st.members[c.ID] = c.APIAddr
	}
	return &applyResult{}, nil
}
