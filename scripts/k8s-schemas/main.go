// Command k8s-schemas turns Kubernetes' swagger.json (api/openapi-spec in the k8s.io/kubernetes
// module) into the strict JSON schemas kubeconform reads, so the chart is validated offline:
//
//	go run ./scripts/k8s-schemas SWAGGER_JSON OUT_DIR
//
// It writes OUT_DIR/_definitions.json, with every $ref made relative to that file, every
// int-or-string a oneOf of both, and additionalProperties: false on every object with
// properties (kubeconform -strict then rejects a misspelt key); and one
// <kind>[-<group>]-<version>.json per group-version-kind, a $ref into _definitions.json.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: k8s-schemas SWAGGER_JSON OUT_DIR")
		os.Exit(2)
	}
	n, err := run(os.Args[1], os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8s-schemas:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "k8s-schemas: %d kinds in %s\n", n, os.Args[2])
}

func run(in, out string) (int, error) {
	b, err := os.ReadFile(in)
	if err != nil {
		return 0, fmt.Errorf("read swagger: %w", err)
	}
	var spec struct {
		Definitions map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return 0, fmt.Errorf("parse %s: %w", in, err)
	}
	if len(spec.Definitions) == 0 {
		return 0, fmt.Errorf("%s has no definitions", in)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return 0, fmt.Errorf("create %s: %w", out, err)
	}
	for _, d := range spec.Definitions {
		rewrite(d)
	}
	if err := writeJSON(filepath.Join(out, "_definitions.json"), map[string]any{"definitions": spec.Definitions}); err != nil {
		return 0, err
	}
	kinds := 0
	for name, d := range spec.Definitions {
		m, _ := d.(map[string]any)
		gvks, _ := m["x-kubernetes-group-version-kind"].([]any)
		for _, g := range gvks {
			gvk, _ := g.(map[string]any)
			kind, _ := gvk["kind"].(string)
			group, _ := gvk["group"].(string)
			version, _ := gvk["version"].(string)
			if kind == "" || version == "" {
				continue
			}
			file := strings.ToLower(kind)
			if group != "" {
				file += "-" + strings.ToLower(strings.Split(group, ".")[0])
			}
			file += "-" + strings.ToLower(version) + ".json"
			ref := map[string]any{"$ref": "_definitions.json#/definitions/" + name}
			if err := writeJSON(filepath.Join(out, file), ref); err != nil {
				return 0, err
			}
			kinds++
		}
	}
	return kinds, nil
}

// rewrite applies the three transformations to a schema node in place, recursively.
func rewrite(v any) {
	switch n := v.(type) {
	case map[string]any:
		if ref, ok := n["$ref"].(string); ok && strings.HasPrefix(ref, "#/") {
			n["$ref"] = "_definitions.json" + ref
		}
		if n["format"] == "int-or-string" {
			delete(n, "type")
			delete(n, "format")
			n["oneOf"] = []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}
		}
		if _, ok := n["properties"]; ok {
			if _, set := n["additionalProperties"]; !set {
				n["additionalProperties"] = false
			}
		}
		for _, c := range n {
			rewrite(c)
		}
	case []any:
		for _, c := range n {
			rewrite(c)
		}
	}
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
