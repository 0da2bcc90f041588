package config

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Override replaces one key of a decoded config, as a command-line flag replaces the file's
// value. Overrides are applied by Apply, or by Load between reading the file and checking it.
type Override struct {
	// Flag is the flag the value came from, without dashes. Problems with the value, and
	// Check's problems about Key, are prefixed "--Flag: ". Empty for a value from elsewhere.
	Flag string
	// Key is the key's dotted YAML path: "listen", "peer.listen".
	Key string
	// Values is the value: one YAML scalar for a scalar key; for a List key, the elements of
	// the list, which replaces the file's.
	Values []string
	List   bool
}

// Apply sets each override's key in cfg, a pointer to a struct, in order. A value goes
// through the decoder that reads files, so a flag is held to the same types and messages and
// an unknown key is an error; but it is taken as given, without ${ENV} expansion (the shell
// has already expanded what it meant to). Call it between Read and Check, so that defaults
// derived from a key (an advertise address from listen) follow the flag; Load does. The error
// is an *Error, each problem naming the flag and the key ("--store-dir: store_dir: ...").
func Apply(cfg any, overrides []Override) error {
	ae, _, err := apply(cfg, overrides)
	if err != nil {
		return err
	}
	if len(ae.Problems) == 0 {
		return nil
	}
	return ae
}

// apply is Apply, which also returns the keys that overrides set: Load no longer counts a
// key whose value failed to decode from the file as unset once a flag has set it.
func apply(cfg any, overrides []Override) (*Error, []string, error) {
	ae := &Error{}
	var set []string
	for _, o := range overrides {
		d, err := newDecoder(cfg)
		if err != nil {
			return nil, nil, err
		}
		d.noExpand = true
		d.override(o)
		for _, p := range d.problems {
			ae.Problems = append(ae.Problems, o.blame(p))
		}
		ae.failed = append(ae.failed, d.failed...)
		if len(d.problems) == 0 {
			set = append(set, o.Key)
		}
	}
	return ae, set, nil
}

// override decodes o's value into the root struct, as the document "key: value" would be,
// nested by the key's dots. The nodes carry no line, so problems have none either.
func (d *decoder) override(o Override) {
	if o.Key == "" || strings.Contains(o.Key, "..") || strings.HasPrefix(o.Key, ".") || strings.HasSuffix(o.Key, ".") {
		d.problem("", 0, fmt.Sprintf("bad key %q", o.Key))
		return
	}
	var value *yaml.Node
	switch {
	case o.List:
		value = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, v := range o.Values {
			value.Content = append(value.Content, scalar(v))
		}
	case len(o.Values) != 1:
		d.fail(o.Key, 0, fmt.Sprintf("want one value, got %d", len(o.Values)))
		return
	default:
		value = scalar(o.Values[0])
	}
	parts := strings.Split(o.Key, ".")
	for i := len(parts) - 1; i >= 0; i-- {
		// The key is a string even when it reads "<<" (a merge key) or "null".
		key := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: parts[i]}
		value = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{key, value}}
	}
	d.value(value, d.root, "")
}

// blame prefixes p with the flag that gave the value, if any.
func (o Override) blame(p error) error {
	if o.Flag == "" {
		return p
	}
	return fmt.Errorf("--%s: %w", o.Flag, p)
}

// blameFlag prefixes p, a problem Check found, with the flag that set the key it is about: the
// key's value came from the flag, not the file. The last override of a key is the one in effect.
func blameFlag(p error, overrides []Override) error {
	for i := len(overrides) - 1; i >= 0; i-- {
		if o := overrides[i]; o.Flag != "" && about(p.Error(), o.Key) {
			return o.blame(p)
		}
	}
	return p
}

// about reports whether msg, a problem, is about the key at path or one below it: it starts
// with the path, spelled with dots or with ": " between sections as Validate messages may.
func about(msg, path string) bool {
	for _, prefix := range []string{path, strings.ReplaceAll(path, ".", ": ")} {
		if rest, ok := strings.CutPrefix(msg, prefix); ok && (rest == "" || strings.ContainsRune(":[. ", rune(rest[0]))) {
			return true
		}
	}
	return false
}

// scalar is a plain YAML scalar, typed by the field it is decoded into.
func scalar(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: s} }
