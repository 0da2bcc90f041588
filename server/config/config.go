// Package config loads role configuration files: one YAML document per role, decoded strictly
// (unknown keys are errors), then defaulted, then validated. Messages name the offending key
// and, where the decoder knows it, the line.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"
)

// ErrInvalid marks configuration that failed to decode or validate.
var ErrInvalid = errors.New("invalid config")

// Defaulter is implemented by configs that fill in defaults after decoding.
type Defaulter interface{ Defaults() }

// Validator is implemented by configs that check themselves after defaults are applied. Errors
// name the key as it is spelled in YAML, e.g. "ring.replicas: must be at least 1".
type Validator interface{ Validate() error }

// Load reads the file at path into cfg (a pointer to a struct), strictly.
func Load(path string, cfg any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if err := Decode(bytes.NewReader(data), cfg); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// Decode decodes one YAML document from r into cfg strictly, applies defaults and validates.
// An empty document is allowed and yields the defaults.
func Decode(r io.Reader, cfg any) error {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %v", ErrInvalid, cleanYAMLError(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: more than one YAML document", ErrInvalid)
	}
	if d, ok := cfg.(Defaulter); ok {
		d.Defaults()
	}
	if v, ok := cfg.(Validator); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	return nil
}

// cleanYAMLError drops yaml's "yaml: unmarshal errors:\n  " preamble so the message is one line
// per problem, each with its line number and the key.
func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msg := ""
		for i, e := range te.Errors {
			if i > 0 {
				msg += "; "
			}
			msg += e
		}
		return errors.New(msg)
	}
	return err
}
