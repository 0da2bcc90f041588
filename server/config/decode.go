package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxSecretFile bounds a secret file: it holds one password or token, and a path that names a
// device or a log by mistake must not be read whole.
const maxSecretFile = 64 << 10

// decoder decodes a YAML document into a struct by walking the node tree alongside the
// struct's type: structs, pointers to them, and lists and maps of them are walked here, so
// every key is known by its path; everything else (strings, numbers, durations, sizes, lists
// of strings) is a leaf, decoded by yaml after its ${ENV} references are expanded. Walking
// the tree here rather than in yaml is what lets every message name its key path, and what
// lets a secret's key be spelled <key>_file.
type decoder struct {
	root reflect.Value
	// dir is where relative secret file paths start: the config file's directory.
	dir       string
	lookupEnv func(string) (string, bool)
	// noExpand leaves ${...} alone: flag values, which the shell has already expanded.
	noExpand bool
	problems []error
	failed   []string
	fatal    bool
}

func newDecoder(cfg any) (*decoder, error) {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("config: decode into %T: want a non-nil pointer to a struct", cfg)
	}
	return &decoder{root: v.Elem(), lookupEnv: os.LookupEnv}, nil
}

func (d *decoder) err() error {
	if len(d.problems) == 0 {
		return nil
	}
	return &Error{Problems: d.problems, fatal: d.fatal, failed: d.failed}
}

// problem records a problem at path ("" for the document) on line (0 when it has none).
func (d *decoder) problem(path string, line int, msg string) {
	var b strings.Builder
	if path != "" {
		b.WriteString(path)
		b.WriteString(": ")
	}
	if line > 0 {
		fmt.Fprintf(&b, "line %d: ", line)
	}
	b.WriteString(msg)
	d.problems = append(d.problems, errors.New(b.String()))
}

// fail records a problem with the value at path, which stays unset.
func (d *decoder) fail(path string, line int, msg string) {
	d.problem(path, line, msg)
	d.failed = append(d.failed, path)
}

// document decodes data, one YAML document, into the root struct.
func (d *decoder) document(data []byte) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) {
			d.syntax(data, err)
		}
		return
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		d.fatal = true
		line := 0
		if len(extra.Content) > 0 {
			line = extra.Content[0].Line
		}
		d.problem("", line, "more than one YAML document: a config file holds one")
		return
	}
	if len(doc.Content) > 0 {
		d.value(doc.Content[0], d.root, "")
	}
}

// syntaxError matches yaml's parser errors, which carry a line but no key.
var syntaxError = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// syntax records a document that does not parse, naming the key it is in when the text shows
// one (the parser knows only the line).
func (d *decoder) syntax(data []byte, err error) {
	d.fatal = true
	m := syntaxError.FindStringSubmatch(err.Error())
	if m == nil {
		d.problem("", 0, err.Error())
		return
	}
	line, _ := strconv.Atoi(m[1])
	if parserProblems[m[2]] {
		// yaml reports its parser's (not its scanner's) errors with a 0-based line, and
		// leaves out line 0.
		line++
	}
	if line == 0 {
		d.problem("", 0, m[2])
		return
	}
	d.problem(keyPathAt(data, line), line, m[2])
}

// parserProblems are the messages of yaml's parser errors, told apart from its scanner's by
// their text alone.
var parserProblems = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected '-' indicator":    true,
	"did not find expected <document start>": true,
	"did not find expected <stream-start>":   true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"found duplicate %TAG directive":         true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found undefined tag handle":             true,
}

// shape is how the decoder treats a type.
type shape int

const (
	leafShape   shape = iota // decoded by yaml
	structShape              // a mapping of known keys
	ptrShape                 // a pointer to a walked shape, allocated when its key is present
	sliceShape               // a list of a walked shape
	mapShape                 // a mapping of names to a walked shape
)

var (
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	timeType        = reflect.TypeFor[time.Time]()
)

func shapeOf(t reflect.Type) shape {
	if t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType) {
		return leafShape
	}
	switch t.Kind() {
	case reflect.Struct:
		if t != timeType {
			return structShape
		}
	case reflect.Pointer:
		if shapeOf(t.Elem()) != leafShape {
			return ptrShape
		}
	case reflect.Slice:
		if shapeOf(t.Elem()) != leafShape {
			return sliceShape
		}
	case reflect.Map:
		if t.Key().Kind() == reflect.String && shapeOf(t.Elem()) != leafShape {
			return mapShape
		}
	}
	return leafShape
}

// value decodes n into v, which is addressable.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	n = unalias(n)
	switch shapeOf(v.Type()) {
	case structShape:
		d.structure(n, v, path)
	case ptrShape:
		if isNull(n) {
			v.SetZero()
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.value(n, v.Elem(), path)
	case sliceShape:
		d.sequence(n, v, path)
	case mapShape:
		d.mapping(n, v, path)
	default:
		d.leaf(n, v, path)
	}
}

// field is a struct field as a YAML key.
type field struct {
	key    string
	index  []int
	typ    reflect.Type
	secret bool
}

// fieldsOf lists t's keys as yaml names them (the yaml tag, or the lowercased field name),
// with the fields of ",inline" structs in place. It panics on a secret tag that is not on a
// string field: that is a mistake in the program, not in a config.
func fieldsOf(t reflect.Type) []field {
	var out []field
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("yaml")
		if tag == "-" || (!sf.IsExported() && !strings.Contains(tag, ",inline")) {
			continue
		}
		name, flags, _ := strings.Cut(tag, ",")
		if strings.Contains(","+flags+",", ",inline,") {
			if sf.Type.Kind() != reflect.Struct {
				panic(fmt.Sprintf("config: %s.%s: only a struct field can be inline", t, sf.Name))
			}
			for _, f := range fieldsOf(sf.Type) {
				f.index = append([]int{i}, f.index...)
				out = append(out, f)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		secret := sf.Tag.Get("secret") == "true"
		if secret && sf.Type.Kind() != reflect.String {
			panic(fmt.Sprintf("config: %s.%s: secret:\"true\" needs a string field", t, sf.Name))
		}
		out = append(out, field{key: name, index: []int{i}, typ: sf.Type, secret: secret})
	}
	return out
}

// entry is one key and value of a mapping; merged says it came from a "<<" merge key.
type entry struct {
	key, value *yaml.Node
	merged     bool
}

// entries lists n's keys and values, explicit ones first, then those merged in by "<<" (which
// explicit keys override, and earlier merged mappings override later ones).
func (d *decoder) entries(n *yaml.Node, path string) []entry {
	var explicit, merged []entry
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merged = append(merged, d.mergeEntries(v, path)...)
			continue
		}
		explicit = append(explicit, entry{key: k, value: v})
	}
	return append(explicit, merged...)
}

func (d *decoder) mergeEntries(v *yaml.Node, path string) []entry {
	v = unalias(v)
	var sources []*yaml.Node
	switch v.Kind {
	case yaml.MappingNode:
		sources = []*yaml.Node{v}
	case yaml.SequenceNode:
		for _, s := range v.Content {
			sources = append(sources, unalias(s))
		}
	}
	var out []entry
	for _, s := range sources {
		if s.Kind != yaml.MappingNode {
			d.fail(path, v.Line, "<<: merge a mapping or a list of mappings")
			return nil
		}
		for _, e := range d.entries(s, path) {
			e.merged = true
			out = append(out, e)
		}
	}
	return out
}

// structure decodes the mapping n into the struct v.
func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(path, n.Line, fmt.Sprintf("cannot unmarshal %s into a mapping of keys", n.ShortTag()))
		return
	}
	fields := fieldsOf(v.Type())
	byKey := make(map[string]*field, len(fields))
	for i := range fields {
		byKey[fields[i].key] = &fields[i]
	}
	setBy := map[string]*yaml.Node{} // field key -> the key node that set it
	for _, e := range d.entries(n, path) {
		k := e.key
		if k.Kind != yaml.ScalarNode {
			d.problem(path, k.Line, fmt.Sprintf("a key must be a string, not %s", k.ShortTag()))
			continue
		}
		name := k.Value
		f, fromFile := byKey[name], false
		if f == nil {
			if base, ok := strings.CutSuffix(name, "_file"); ok && byKey[base] != nil && byKey[base].secret {
				f, fromFile = byKey[base], true
			}
		}
		if f == nil {
			d.problem(join(path, name), k.Line, unknownKey(name, fields))
			continue
		}
		if prev := setBy[f.key]; prev != nil {
			if e.merged {
				continue
			}
			if prev.Value == name {
				d.problem(join(path, name), k.Line, fmt.Sprintf("key %s is already set at line %d", name, prev.Line))
			} else {
				d.problem(join(path, name), k.Line, fmt.Sprintf("set %s or %s_file, not both (the other is at line %d)", f.key, f.key, prev.Line))
			}
			continue
		}
		setBy[f.key] = k
		fv := v.FieldByIndex(f.index)
		if fromFile {
			d.secretFile(e.value, fv, join(path, f.key))
			continue
		}
		d.value(e.value, fv, join(path, f.key))
	}
}

// secretFile sets the string v, the secret at path, from the file the node n names.
func (d *decoder) secretFile(n *yaml.Node, v reflect.Value, path string) {
	key := path + "_file"
	n = unalias(n)
	if n.Kind != yaml.ScalarNode || isNull(n) {
		d.problem(key, n.Line, "want the path of a file holding the secret")
		d.failed = append(d.failed, path)
		return
	}
	name, err := d.expand(n.Value)
	if err != nil {
		d.problem(key, n.Line, err.Error())
		d.failed = append(d.failed, path)
		return
	}
	if !filepath.IsAbs(name) && d.dir != "" {
		name = filepath.Join(d.dir, name)
	}
	secret, err := readSecret(name)
	if err != nil {
		d.problem(key, 0, err.Error())
		d.failed = append(d.failed, path)
		return
	}
	v.SetString(secret)
}

// readSecret returns the content of the file at name, less one trailing newline.
func readSecret(name string) (string, error) {
	// O_NONBLOCK: a FIFO with no writer would block the open, and with it `serve` and
	// `config validate`; it is refused just below, as every file that is not regular is.
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }() // read-only: nothing to lose
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s: not a regular file (%s)", name, fi.Mode().Type())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxSecretFile {
		return "", fmt.Errorf("%s: larger than %d KiB, which is not one secret", name, maxSecretFile>>10)
	}
	s := strings.TrimSuffix(string(b), "\n")
	return strings.TrimSuffix(s, "\r"), nil
}

// sequence decodes the list n into the slice v.
func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		v.SetZero()
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(path, n.Line, fmt.Sprintf("cannot unmarshal %s into a list", n.ShortTag()))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, c := range n.Content {
		d.value(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
	}
	v.Set(s)
}

// mapping decodes the mapping n into the map v.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		v.SetZero()
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(path, n.Line, fmt.Sprintf("cannot unmarshal %s into a mapping", n.ShortTag()))
		return
	}
	m := reflect.MakeMap(v.Type())
	seen := map[string]int{}
	for _, e := range d.entries(n, path) {
		k := unalias(e.key)
		if k.Kind != yaml.ScalarNode {
			d.problem(path, k.Line, fmt.Sprintf("a key must be a string, not %s", k.ShortTag()))
			continue
		}
		if line, dup := seen[k.Value]; dup {
			if !e.merged {
				d.problem(join(path, k.Value), k.Line, fmt.Sprintf("key %s is already set at line %d", k.Value, line))
			}
			continue
		}
		seen[k.Value] = k.Line
		elem := reflect.New(v.Type().Elem()).Elem()
		d.value(e.value, elem, join(path, k.Value))
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), elem)
	}
	v.Set(m)
}

// leaf decodes n into v with yaml, after expanding the ${ENV} references in its scalars.
func (d *decoder) leaf(n *yaml.Node, v reflect.Value, path string) {
	before := len(d.problems)
	c := d.expandNode(n, path, map[*yaml.Node]*yaml.Node{})
	if len(d.problems) > before {
		d.failed = append(d.failed, path)
		return
	}
	expanded := c.Kind == yaml.ScalarNode && c.Value != n.Value
	if expanded && v.Kind() == reflect.String {
		// What the environment gave a string key is a string, even when it reads "null",
		// "~" or nothing: typed again, it would silently empty the key (a password, say).
		c.Tag = "!!str"
	}
	if err := c.Decode(v.Addr().Interface()); err != nil {
		if te, ok := errors.AsType[*yaml.TypeError](err); ok {
			for _, msg := range te.Errors {
				if expanded {
					// yaml quotes the start of the value; a value from the environment may
					// be a secret put in the wrong key, and is not in the file to see anyway.
					msg = yamlValue.ReplaceAllString(msg, "the value from the environment")
				}
				d.problem(path, 0, noLine(n, msg))
			}
		} else {
			d.problem(path, 0, noLine(n, err.Error()))
		}
		d.failed = append(d.failed, path)
	}
}

// noLine drops the "line 0: " that yaml and Unmarshalers put before a message about a node
// that is in no document (a flag's value): the line would mean nothing.
func noLine(n *yaml.Node, msg string) string {
	if n.Line != 0 {
		return msg
	}
	return strings.TrimPrefix(msg, "line 0: ")
}

// yamlValue is the quoted start of a value in yaml's type errors: ` + "`hunter2...`" + `.
var yamlValue = regexp.MustCompile("`[^`]*`")

// expandNode returns a copy of n with ${ENV} references expanded in its scalar values (not in
// keys). A copy, because an anchored node is reached again through each of its aliases and
// must not be expanded twice; copies are shared the way the originals are.
func (d *decoder) expandNode(n *yaml.Node, path string, copies map[*yaml.Node]*yaml.Node) *yaml.Node {
	if c, ok := copies[n]; ok {
		return c
	}
	c := new(yaml.Node)
	*c = *n
	copies[n] = c
	switch n.Kind {
	case yaml.AliasNode:
		c.Alias = d.expandNode(n.Alias, path, copies)
	case yaml.ScalarNode:
		v, err := d.expand(n.Value)
		if err != nil {
			d.problem(path, n.Line, err.Error())
			return c
		}
		if v != n.Value {
			c.Value = v
			// A plain scalar is typed by its text: type it again, as it now reads.
			const quoted = yaml.TaggedStyle | yaml.DoubleQuotedStyle | yaml.SingleQuotedStyle | yaml.LiteralStyle | yaml.FoldedStyle
			if n.Style&quoted == 0 {
				c.Tag = ""
			}
		}
	case yaml.SequenceNode:
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, e := range n.Content {
			c.Content[i] = d.expandNode(e, fmt.Sprintf("%s[%d]", path, i), copies)
		}
	case yaml.MappingNode:
		c.Content = make([]*yaml.Node, len(n.Content))
		for i := 0; i+1 < len(n.Content); i += 2 {
			c.Content[i] = n.Content[i]
			c.Content[i+1] = d.expandNode(n.Content[i+1], join(path, n.Content[i].Value), copies)
		}
	}
	return c
}

// expand replaces each ${NAME} in s by the environment variable NAME, and each $${ by ${.
func (d *decoder) expand(s string) (string, error) {
	if d.noExpand || !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", errors.New(`"${" without its closing "}" (write $${ for a literal ${)`)
		}
		name := s[i+2 : i+end]
		if !envName.MatchString(name) {
			return "", fmt.Errorf("${%s}: not an environment variable name (write $${ for a literal ${)", name)
		}
		val, ok := d.lookupEnv(name)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", name)
		}
		s = s[i+end+1:]
		if hostBeforePort(b.String(), val, s) {
			// ${POD_IP}:5000 on an IPv6 cluster: host:port needs the address in brackets.
			val = "[" + val + "]"
		}
		b.WriteString(val)
	}
}

// hostBeforePort reports whether val, expanded between before and after, is an IPv6 address
// written as the host of a host:port (after starts with ":" and a digit or a reference, and it
// is not already bracketed).
func hostBeforePort(before, val, after string) bool {
	if !strings.Contains(val, ":") || strings.HasSuffix(before, "[") {
		return false
	}
	if a, err := netip.ParseAddr(val); err != nil || !a.Is6() {
		return false
	}
	rest, ok := strings.CutPrefix(after, ":")
	return ok && rest != "" && (rest[0] >= '0' && rest[0] <= '9' || strings.HasPrefix(rest, "${"))
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// unknownKey says that name is no key of the struct with fields, suggesting a close one.
func unknownKey(name string, fields []field) string {
	msg := fmt.Sprintf("field %s not found", name)
	if base, ok := strings.CutSuffix(name, "_file"); ok {
		for _, f := range fields {
			if f.key == base {
				return msg + fmt.Sprintf(" (%s is not a secret, so it cannot be read from a file)", base)
			}
		}
	}
	best, bestDist := "", 3
	for _, f := range fields {
		if dist := editDistance(name, f.key); dist < bestDist {
			best, bestDist = f.key, dist
		}
	}
	if best != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", best)
	}
	return msg
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func unalias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// join appends key to the path of the mapping that holds it.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// keyLine matches a line that opens a key, with the "- " of list items before it.
var keyLine = regexp.MustCompile(`^( *)((?:- +)*)([A-Za-z0-9_][A-Za-z0-9_.\-]*) *:(?:\s|$)`)

// keyPathAt guesses the key path that line (1-based) of a document that does not parse is in,
// from the indentation of the keys above it: yaml's parser reports only the line. It returns
// "" when no key precedes the line.
func keyPathAt(data []byte, line int) string {
	type open struct {
		indent int
		key    string
		items  int // index of the current list item under the key, or -1
	}
	var stack []open
	for i, text := range strings.Split(string(data), "\n") {
		if i >= line {
			break
		}
		if strings.HasPrefix(text, "---") {
			stack = stack[:0]
			continue
		}
		m := keyLine.FindStringSubmatch(text)
		if m == nil {
			continue
		}
		indent := len(m[1])
		if m[2] != "" {
			// A list item: it belongs to the innermost key left of its dash (or at the
			// dash's column, for lists written flush with their key).
			for len(stack) > 0 && stack[len(stack)-1].indent > indent {
				stack = stack[:len(stack)-1]
			}
			if len(stack) > 0 {
				stack[len(stack)-1].items++
			}
			indent += len(m[2])
		}
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		stack = append(stack, open{indent: indent, key: m[3], items: -1})
	}
	var path string
	for _, o := range stack {
		path = join(path, o.key)
		if o.items >= 0 {
			path += fmt.Sprintf("[%d]", o.items)
		}
	}
	return path
}

// Keys lists every key path of the config type of cfg (a struct or a pointer to one), parents
// before their children: "ring", "ring.members", "backends", "backends[].s3.bucket". List
// elements are written [] and map entries .*; a secret's <key>_file is not listed.
func Keys(cfg any) []string {
	var out []string
	var walk func(t reflect.Type, path string, depth int)
	walk = func(t reflect.Type, path string, depth int) {
		if depth > 32 {
			panic(fmt.Sprintf("config: %s: the type is recursive", path))
		}
		switch shapeOf(t) {
		case ptrShape:
			walk(t.Elem(), path, depth+1)
		case sliceShape:
			walk(t.Elem(), path+"[]", depth+1)
		case mapShape:
			walk(t.Elem(), join(path, "*"), depth+1)
		case structShape:
			for _, f := range fieldsOf(t) {
				p := join(path, f.key)
				out = append(out, p)
				walk(f.typ, p, depth+1)
			}
		}
	}
	t := reflect.TypeOf(cfg)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	walk(t, "", 0)
	return out
}
