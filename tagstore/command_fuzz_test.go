package tagstore

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/hashicorp/raft"
)

// FuzzDecodeCommand: log entries come from the network (another node's AppendEntries) and
// from disk. Whatever the bytes, decoding never panics and applying never panics; an entry
// that is refused changes nothing; an accepted known command encodes back to a command that
// decodes to the same payload.
func FuzzDecodeCommand(f *testing.F) {
	for _, l := range testLog(f) {
		f.Add(l.Data)
	}
	for _, b := range [][]byte{nil, {0}, {5, '{', '}'}, {byte(cmdPut), 'n', 'u', 'l', 'l'}, {byte(cmdImport), '{', '"', 't', 'a', 'g', 's', '"', ':', '1', '}'},
		{byte(cmdPut), '[', ']'}, {0xff}, {byte(cmdDelete) | byte(ignoreUnknown), '{', '}'}} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, payload, err := decodeCommand(data)
		if err != nil {
			if !errors.Is(err, ErrUnknownCommand) {
				t.Fatalf("%q: error %v does not wrap ErrUnknownCommand", data, err)
			}
			if guardErr := checkEntries([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: data}}); guardErr == nil {
				t.Fatalf("%q: refused by the decoder but let through by the network guard", data)
			}
		}

		// Applying it to a state holding data never panics, and a refused entry leaves the
		// state as it was.
		s := bareStore(t)
		applyAll(t, s, testLog(t))
		before := snapshotBytes(t, s)
		res := fsm{s}.Apply(&raft.Log{Index: 100, Term: 1, Type: raft.LogCommand, Data: data}).(*applyResult)
		if err != nil {
			if res.err == nil {
				t.Fatalf("%q: refused by the decoder but applied without error", data)
			}
			s.applied.Store(uint64(len(testLog(t))))
			if after := snapshotBytes(t, s); !bytes.Equal(before, after) {
				t.Fatalf("%q: a refused entry changed the state", data)
			}
			return
		}
		if c == nil {
			return // an ignorable command of a type this node does not know
		}
		again, err := encodeCommand(cmdType(data[0]), payload)
		if err != nil {
			t.Fatalf("%q: re-encode: %v", data, err)
		}
		c2, payload2, err := decodeCommand(again)
		if err != nil || c2.name != c.name {
			t.Fatalf("%q: re-encoded as %q, which decodes to %v, %v", data, again, c2, err)
		}
		b1, _ := encodeCommand(cmdType(data[0]), payload2)
		if !bytes.Equal(again, b1) {
			t.Fatalf("%q: round trip changed the payload: %q then %q", data, again, b1)
		}
	})
}

// FuzzReadSnapshot: a snapshot arrives from the leader (InstallSnapshot) or from disk. Whatever
// the bytes, reading never panics; an accepted snapshot holds the count it announced, in
// order, and writes back to the same bytes it reads from.
func FuzzReadSnapshot(f *testing.F) {
	s := bareStore(f)
	applyAll(f, s, testLog(f))
	f.Add(snapshotBytes(f, s))
	f.Add([]byte(`{"format":1,"index":3,"tags":0}` + "\n"))
	f.Add([]byte(`{"format":1,"index":3,"tags":1}` + "\n" + `{"r":"a","t":"b","d":"sha256:x","i":1,"u":"2026-01-01T00:00:00Z"}` + "\n"))
	f.Add([]byte(`{"format":1,"tags":-1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, index, err := readSnapshot(bytes.NewReader(data))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := writeSnapshot(&buf, st, index); err != nil {
			t.Fatalf("write back: %v", err)
		}
		st2, index2, err := readSnapshot(&buf)
		if err != nil {
			t.Fatalf("a snapshot written from an accepted one does not read: %v", err)
		}
		if index2 != index || !slices.Equal(st.all(), st2.all()) {
			t.Fatalf("round trip changed the state")
		}
	})
}
