package httpbackend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/krakenctl/krakenctl/backend"
)

// maxListingBytes bounds the directory index List reads.
const maxListingBytes = 32 << 20

// List implements backend.Backend by reading the index of the namespace's object
// directory, GET <url>/<namespace>/_objects/, in the configured format (Config.List). Entries
// that are not valid object names (sub-directories, parent links, sort links, temporary
// files) are skipped. A namespace the server does not have (404) lists nothing. Without a
// listing format, List returns an error wrapping ErrListUnsupported (and so
// errors.ErrUnsupported).
func (b *Backend) List(ctx context.Context, namespace, prefix string) ([]string, error) {
	u, err := b.objectURL(namespace, "", true)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", namespace, err)
	}
	var accept string
	switch b.cfg.List {
	case ListJSON:
		accept = "application/json"
	case ListHTML:
		accept = "text/html"
	default:
		return nil, fmt.Errorf("list %s: %w", namespace, ErrListUnsupported)
	}
	resp, err := b.send(ctx, http.MethodGet, u, nil, 0, accept)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", namespace, err)
	}
	defer closeBody(resp)
	if err := readStatus(resp); err != nil {
		if errors.Is(err, backend.ErrNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("list %s: %w", namespace, err)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxListingBytes+1))
	if err != nil {
		return nil, fmt.Errorf("list %s: read index: %w", namespace, err)
	}
	if len(data) > maxListingBytes {
		return nil, fmt.Errorf("list %s: index larger than %d bytes", namespace, maxListingBytes)
	}
	var entries []string
	if b.cfg.List == ListJSON {
		entries, err = parseJSONIndex(data)
	} else {
		entries = parseHTMLIndex(data)
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", namespace, err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e, prefix) && backend.CheckName(e) == nil {
			names = append(names, e)
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// parseJSONIndex reads an array of names or of {"name": ..., "type": ...} objects.
func parseJSONIndex(data []byte) ([]string, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("decode JSON index: %w", err)
	}
	names := make([]string, 0, len(raw))
	for _, r := range raw {
		r = bytes.TrimSpace(r)
		if len(r) > 0 && r[0] == '"' {
			var s string
			if err := json.Unmarshal(r, &s); err != nil {
				return nil, fmt.Errorf("decode JSON index entry: %w", err)
			}
			names = append(names, s)
			continue
		}
		var e struct {
			Name string `json:"name"`
			Type string `json:"type"`
		}
		if err := json.Unmarshal(r, &e); err != nil {
			return nil, fmt.Errorf("decode JSON index entry: %w", err)
		}
		if e.Type == "" || e.Type == "file" {
			names = append(names, e.Name)
		}
	}
	return names, nil
}

var hrefRE = regexp.MustCompile(`(?is)<a\s[^>]*?href\s*=\s*(?:"([^"]*)"|'([^']*)')`)

// parseHTMLIndex returns the relative link targets in an HTML directory index, unescaped.
// Links with a query, fragment, scheme or slash are not objects of this directory.
func parseHTMLIndex(data []byte) []string {
	var names []string
	for _, m := range hrefRE.FindAllSubmatch(data, -1) {
		href := string(m[1])
		if href == "" {
			href = string(m[2])
		}
		href = strings.NewReplacer("&amp;", "&", "&#39;", "'", "&quot;", `"`).Replace(href)
		href = strings.TrimPrefix(href, "./")
		if href == "" || strings.ContainsAny(href, "?#/:") {
			continue
		}
		name, err := url.PathUnescape(href)
		if err != nil {
			continue
		}
		names = append(names, name)
	}
	return names
}
