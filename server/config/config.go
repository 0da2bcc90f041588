// Package config loads role configuration files. It is the only way a role's YAML file is read,
// so every role gets the same strictness, the same secrets handling and the same messages.
//
// The pipeline runs in two stages, so that command-line flags can override the file before
// defaults fill what is still unset (`serve agent --tracker ...` may supply a key the file
// lacks, and a default derived from listen must follow a --listen flag):
//
//	Read (or Unmarshal)    read the file; expand ${ENV} references in scalar values ($${ is a
//	                       literal ${); read secrets from <key>_file; decode strictly (unknown
//	                       keys, wrong types and duplicate keys are errors)
//	Apply                  set the keys that flags override (Override), held to the file's
//	                       types but not expanded again
//	Check                  Defaults, Validate, then the cross-checks (listen addresses that
//	                       overlap within the config)
//
// Load runs both with optional overrides between them; Decode runs both on a reader.
//
// Every stage reports every problem it finds, not just the first, each naming its key path
// as spelled in YAML ("backends[1].s3.secret_access_key_file: open /x: no such file or
// directory", "ring.replicas must be >= 1, got 0", "store.capacity: line 7: size \"lots\": ...").
// The error is an *Error, which wraps ErrInvalid.
//
// # Secrets
//
// A string field tagged secret:"true" next to its yaml tag,
//
//	Password string `yaml:"password" secret:"true"`
//
// may instead be given as <key>_file ("password_file: /run/secrets/registry"): the file's
// content, less one trailing newline, becomes the value; a relative path starts in the config
// file's directory. Setting both keys is an error, and so
// is a file that cannot be read. A secret may also come from the environment ("password:
// ${REGISTRY_PASSWORD}"). The tag needs no import, so packages below server/ (backends) can
// mark their secrets. The decoder's messages never include a secret's value, and Validate
// methods must not either.
//
// # Environment
//
// "${NAME}" in a scalar value is replaced by the environment variable NAME; an unset variable
// is an error naming the key. "$${" stands for a literal "${". A plain (unquoted) scalar is
// typed after the expansion, so "max_conns: ${MAX_CONNS}" is a number. Inside a flow
// collection ([...] or {...}) quote the reference, "${NAME}": braces end a plain scalar there.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ErrInvalid marks configuration that failed to decode or validate. Every error of Read,
// Unmarshal, Check, Load and Decode about the config's content wraps it.
var ErrInvalid = errors.New("invalid config")

// Defaulter is implemented by configs that fill in defaults after decoding.
type Defaulter interface{ Defaults() }

// Validator is implemented by configs that check themselves after defaults are applied. Errors
// name the key as it is spelled in YAML, e.g. "ring.replicas: must be at least 1"; several
// problems are returned joined (errors.Join), and Check reports each on its own.
type Validator interface{ Validate() error }

// Listener is implemented by configs that bind listeners; Check reports addresses among them
// that would collide.
type Listener interface {
	// ListenAddrs lists every address the config binds, with its key. An empty address means
	// that listener is off.
	ListenAddrs() []ListenAddr
}

// Role is what every role's *Config implements.
type Role interface {
	Defaulter
	Validator
	Listener
}

// Error is a config that cannot be used: every problem found, each naming its key path. It
// wraps ErrInvalid and each problem.
type Error struct {
	// File is the config file's path, or "" when the config did not come from a file.
	File string
	// Problems are one error per problem, in the order found.
	Problems []error

	// fatal says the document could not be decoded at all, so checking it means nothing.
	fatal bool
	// failed are the key paths whose values failed to decode.
	failed []string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	b.WriteString(ErrInvalid.Error())
	if len(e.Problems) == 1 {
		b.WriteString(": ")
		b.WriteString(indent(e.Problems[0].Error()))
		return b.String()
	}
	fmt.Fprintf(&b, " (%d problems):", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(indent(p.Error()))
	}
	return b.String()
}

// indent keeps a multi-line message under its first line.
func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n    ") }

// Is reports that every *Error is ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// Unwrap returns the problems, so errors.Is finds the sentinels they wrap.
func (e *Error) Unwrap() []error { return e.Problems }

// Read reads the file at path into cfg, a pointer to a struct: environment references are
// expanded, secrets read from their files and the document decoded strictly. It applies no
// defaults and does not validate: apply overrides, then call Check.
func Read(path string, cfg any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return &Error{File: path, Problems: []error{err}, fatal: true}
	}
	d, err := newDecoder(cfg)
	if err != nil {
		return err
	}
	d.dir = filepath.Dir(path)
	d.document(data)
	return inFile(path, d.err())
}

// Unmarshal is Read on a document held in memory; relative secret file paths start in the
// working directory.
func Unmarshal(data []byte, cfg any) error {
	d, err := newDecoder(cfg)
	if err != nil {
		return err
	}
	d.document(data)
	return d.err()
}

// Check completes a decoded config: it applies Defaults, runs Validate and the cross-checks
// (overlapping listen addresses, from ListenAddrs), and reports every problem at once.
func Check(cfg any) error {
	if d, ok := cfg.(Defaulter); ok {
		d.Defaults()
	}
	var problems []error
	if v, ok := cfg.(Validator); ok {
		problems = append(problems, Problems(v.Validate())...)
	}
	if l, ok := cfg.(Listener); ok {
		problems = append(problems, CheckListenAddrs(l.ListenAddrs())...)
	}
	if len(problems) > 0 {
		return &Error{Problems: problems}
	}
	return nil
}

// Load reads the file at path into cfg (Read), applies the overrides in order (Apply), and
// completes the config (Check). Unless the file could not be read or parsed at all, every
// stage runs and their problems are reported together: an override's problems name its flag,
// and so do Check's problems about a key a flag set; a Check problem about a key whose value
// failed to decode (in the file or in a flag) is left out, as it only repeats that failure.
func Load(path string, cfg any, overrides ...Override) error {
	return inFile(path, complete(Read(path, cfg), cfg, overrides))
}

// Decode reads one YAML document from r into cfg (Unmarshal) and completes it (Check), as Load
// does. An empty document is allowed and yields the defaults.
func Decode(r io.Reader, cfg any) error {
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	return complete(Unmarshal(buf.Bytes(), cfg), cfg, nil)
}

// complete applies the overrides and runs Check after the decoding stage, which returned
// readErr.
func complete(readErr error, cfg any, overrides []Override) error {
	var ce *Error
	if readErr != nil && !errors.As(readErr, &ce) {
		return readErr // not a config problem: cfg is not a pointer to a struct
	}
	if ce == nil {
		ce = &Error{}
	}
	if ce.fatal {
		return ce
	}
	ae, set, err := apply(cfg, overrides)
	if err != nil {
		return err
	}
	// A key a flag set is no longer one whose value failed to decode from the file: what Check
	// says of it is about the flag's value.
	ce.failed = slices.DeleteFunc(ce.failed, func(path string) bool {
		return slices.ContainsFunc(set, func(key string) bool { return about(path, key) })
	})
	ce.Problems = append(ce.Problems, ae.Problems...)
	ce.failed = append(ce.failed, ae.failed...)
	var checked *Error
	if errors.As(Check(cfg), &checked) {
		for _, p := range checked.Problems {
			if !ce.repeats(p) {
				ce.Problems = append(ce.Problems, blameFlag(p, overrides))
			}
		}
	}
	if len(ce.Problems) > 0 {
		return ce
	}
	return nil
}

// inFile names path in err when err is an *Error.
func inFile(path string, err error) error {
	var ce *Error
	if errors.As(err, &ce) && ce.File == "" {
		ce.File = path
	}
	return err
}

// Problems splits joined errors (errors.Join, possibly nested) into one error per problem, so
// a Validate that joins its problems can prefix each (a section's key) and Check can list each;
// an *Error is split into its Problems. Other errors, including fmt.Errorf with several %w,
// stay whole: their message is more than the join of what they wrap.
func Problems(err error) []error {
	if err == nil {
		return nil
	}
	if ce, ok := err.(*Error); ok { //nolint:errorlint // only an *Error as it is: one wrapped in context says more than its problems
		return slices.Clone(ce.Problems)
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	errs := j.Unwrap()
	msgs := make([]string, 0, len(errs))
	for _, e := range errs {
		if e != nil {
			msgs = append(msgs, e.Error())
		}
	}
	if strings.Join(msgs, "\n") != err.Error() {
		return []error{err}
	}
	var out []error
	for _, e := range errs {
		out = append(out, Problems(e)...)
	}
	return out
}

// repeats reports whether p, a problem found by Check, is about a key whose value failed to
// decode (and so was left unset): "trackers: required" after "trackers: line 3: cannot
// unmarshal ...".
func (e *Error) repeats(p error) bool {
	for _, path := range e.failed {
		if about(p.Error(), path) {
			return true
		}
	}
	return false
}
