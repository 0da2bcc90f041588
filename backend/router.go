package backend

import (
	"context"
	"fmt"
	"io"
	"regexp"
)

// Route sends the namespaces matching Pattern to Backend.
type Route struct {
	// Pattern is matched against the whole namespace (it is anchored for the caller).
	Pattern *regexp.Regexp
	// Name identifies the route in logs, metrics and errors, for example "s3-images".
	Name    string
	Backend Backend
}

// Router is a Backend that forwards each call to the first route whose pattern matches the
// namespace. It is immutable after NewRouter and safe for concurrent use.
type Router struct {
	routes []Route
}

// NewRouter returns a router over routes, tried in order. Patterns are anchored at both ends
// so "library/.*" cannot match "evil/library/x".
func NewRouter(routes ...Route) *Router {
	rs := make([]Route, len(routes))
	for i, r := range routes {
		r.Pattern = regexp.MustCompile(`^(?:` + r.Pattern.String() + `)$`)
		rs[i] = r
	}
	return &Router{routes: rs}
}

// Route returns the first route matching namespace, or an error wrapping ErrNoRoute.
func (r *Router) Route(namespace string) (Route, error) {
	for _, rt := range r.routes {
		if rt.Pattern.MatchString(namespace) {
			return rt, nil
		}
	}
	return Route{}, fmt.Errorf("%w %q", ErrNoRoute, namespace)
}

func (r *Router) pick(namespace string) (Backend, error) {
	rt, err := r.Route(namespace)
	if err != nil {
		return nil, err
	}
	return rt.Backend, nil
}

// Stat implements Backend.
func (r *Router) Stat(ctx context.Context, namespace, name string) (Info, error) {
	b, err := r.pick(namespace)
	if err != nil {
		return Info{}, err
	}
	return b.Stat(ctx, namespace, name)
}

// Download implements Backend.
func (r *Router) Download(ctx context.Context, namespace, name string, w io.Writer) error {
	b, err := r.pick(namespace)
	if err != nil {
		return err
	}
	return b.Download(ctx, namespace, name, w)
}

// Upload implements Backend.
func (r *Router) Upload(ctx context.Context, namespace, name string, rd io.Reader, size int64) error {
	b, err := r.pick(namespace)
	if err != nil {
		return err
	}
	return b.Upload(ctx, namespace, name, rd, size)
}

// List implements Backend.
func (r *Router) List(ctx context.Context, namespace, prefix string) ([]string, error) {
	b, err := r.pick(namespace)
	if err != nil {
		return nil, err
	}
	return b.List(ctx, namespace, prefix)
}

// CheckWrite implements WriteChecker: the namespace's route, then its backend's answer,
// named by the route so the message says which configured backend refuses.
func (r *Router) CheckWrite(namespace string) error {
	rt, err := r.Route(namespace)
	if err != nil {
		return fmt.Errorf("namespace %q: %w", namespace, err)
	}
	if err := CheckWrite(rt.Backend, namespace); err != nil {
		return fmt.Errorf("namespace %q is stored by backend %q: %w", namespace, rt.Name, err)
	}
	return nil
}

// Interface guards
var (
	_ Backend      = (*Router)(nil)
	_ WriteChecker = (*Router)(nil)
)
