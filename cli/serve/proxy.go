package serve

import (
	"context"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/server/proxy"
)

// ProxyOptions are the inputs of `serve proxy`.
type ProxyOptions = RoleOptions

// NewCmdProxy returns `krakenctl serve proxy`.
func NewCmdProxy(f *cmdutil.Factory, runF func(context.Context, *ProxyOptions) error) *cobra.Command {
	return newRoleCmd(f, roleCmd{
		use:   "proxy --config FILE",
		short: "Run a proxy: the OCI registry API builders push to",
		long: `Run a proxy: an OCI distribution API (spec v1.1) at /v2/ for docker push, buildkit, crane,
skopeo and other registry clients. It takes monolithic, chunked and streamed uploads,
cross-repository mounts, manifests (OCI and Docker, images, indexes and artifacts, with the
referrers API), tags and deletes, and serves pulls too.

Blob and manifest bytes go to the origins (namespace = repository, stored under their
SHA-256 even when pushed by a sha512 digest); tags and the per-repository links that say
which blobs and manifests each repository holds go to the build-index. A proxy keeps no state
of its own: run several behind a load balancer, and an upload started through one can be
continued through another. Deletes remove links and tags; no storage is reclaimed.
The process stops gracefully on SIGINT or SIGTERM.

Config (YAML; server/proxy/config.go documents every key):

  listen: 127.0.0.1:15400
  origins: [10.0.0.1:15000, 10.0.0.2:15000, 10.0.0.3:15000]
  build_index: [10.0.0.5:15100, 10.0.0.6:15100, 10.0.0.7:15100]
  max_blob_size: 10GiB`,
		example:    "  krakenctl serve proxy --config /etc/krakenctl/proxy.yaml",
		configHelp: "proxy config file (YAML)",
		listenHelp: "registry API listen address, overriding the config's listen",
		run:        runProxy,
	}, runF)
}

func runProxy(ctx context.Context, f *cmdutil.Factory, opts *ProxyOptions) error {
	var cfg proxy.Config
	return runOneListener(ctx, f, opts, &cfg, &cfg.Listen, cfg.Validate,
		func(ln net.Listener, log *slog.Logger, reg *prometheus.Registry) (runner, error) {
			return proxy.New(cfg, proxy.Deps{Listener: ln, Logger: log, Registerer: reg, Gatherer: reg})
		})
}
