package config

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Set overrides one key of a decoded config, as a command-line flag overrides the file: key is
// the dotted YAML path ("listen", "peer.listen") and value its value as a YAML scalar. The
// value goes through the same decoder as the file, so a flag is held to the same types and
// messages, and an unknown key is an error. Call it between Read and Check, so that defaults
// derived from the key (an advertise address from listen) follow the flag.
func Set(cfg any, key, value string) error { return set(cfg, key, scalar(value)) }

// SetList is Set for a list key: values replace the file's list.
func SetList(cfg any, key string, values []string) error {
	seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	for _, v := range values {
		seq.Content = append(seq.Content, scalar(v))
	}
	return set(cfg, key, seq)
}

func set(cfg any, key string, value *yaml.Node) error {
	if key == "" || strings.Contains(key, "..") || strings.HasPrefix(key, ".") || strings.HasSuffix(key, ".") {
		return fmt.Errorf("%w: bad key %q", ErrInvalid, key)
	}
	parts := strings.Split(key, ".")
	for i := len(parts) - 1; i >= 0; i-- {
		value = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{scalar(parts[i]), value}}
	}
	data, err := yaml.Marshal(value)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, key, err)
	}
	return Unmarshal(data, cfg)
}

// scalar is a plain YAML scalar, typed by the field it is decoded into.
func scalar(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: s} }
