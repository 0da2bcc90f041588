package dev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/dev"
)

// logName is the log file inside the dev directory.
const logName = "dev.log"

// UpOptions are the inputs of `krakenctl dev up`.
type UpOptions struct {
	IO  *iostreams.IOStreams
	Env endpoints.Env

	Origins       int
	Agents        int
	AgentPort     int
	Dir           string
	Port          int
	EndpointsFile string
	LogLevel      slog.Level
	// TLS runs every role with TLS and mutual TLS, with certificates from a new CA in
	// Dir/tls, and closes the proxy to all but user dev (dev.Config.Auth).
	TLS bool
	// Rate caps every origin's and agent's swarm traffic, bytes per second (0: none).
	Rate cmdutil.RateFlag
	// Replicate are --replicate values: [REGEX=]ENDPOINTS_FILE.
	Replicate []string
	// Upstreams route repositories to upstream registries (--upstream-registry).
	Upstreams []dev.Upstream
	// Output is cmdutil.OutputTable (the summary and commands to try) or OutputJSON (Summary as
	// one JSON document on stdout once every role is ready).
	Output string
}

// Summary is what `dev up -o json` prints once the cluster is ready: every role's address
// (host:port) and where the cluster keeps its state.
type Summary struct {
	api.Endpoints
	Replicas      int    `json:"replicas"`
	Dir           string `json:"dir"`
	Log           string `json:"log"`
	EndpointsFile string `json:"endpoints_file"`
	// CAFile is the CA that every role's certificate chains to, with --tls: what clients
	// trust (docker's certs.d, skopeo's cert dir, SSL_CERT_FILE).
	CAFile string `json:"ca_file,omitempty"`
	// CertFile and KeyFile are an admin's client certificate, with --tls: what operator
	// commands present to the roles (the endpoints file names them too).
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
	// Username and Password are the proxy's login, with --tls: what docker login, crane and
	// skopeo push with. PasswordFile holds the password alone, for --password-stdin.
	Username     string `json:"username,omitempty"`
	Password     string `json:"password,omitempty"`
	PasswordFile string `json:"password_file,omitempty"`
}

// NewCmdUp returns `krakenctl dev up`. runF replaces the run function in tests.
func NewCmdUp(f *cmdutil.Factory, runF func(context.Context, *UpOptions) error) *cobra.Command {
	opts := &UpOptions{IO: f.IOStreams, Env: os.Getenv}
	var level string
	var upstreams []string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a whole cluster on localhost (registry included) until interrupted",
		Long: `Run a local krakenctl cluster in the foreground until SIGINT (Ctrl-C) or SIGTERM: origins,
a build-index, a tracker, the registry proxy and agents, all in this one process.

The origins listen on 127.0.0.1, on --port and the ports after it, form one hash ring and share
a filesystem storage backend; they seed their blobs to the swarm on --port+200 and up. A
single-node build-index (tags) listens on --port+100 (Raft on --port+101), the tracker on
--port+300 and the registry proxy, where images are pushed, on --port+400. --agents agents
serve blobs and the registry pull API on --agent-port, --agent-port+10, ... (their swarm ports
are the next port up), downloading through the swarm. Every role also has an admin listener
for /metrics, /debug/pprof, /health and /readyz: the tracker's on --port+301, the proxy's on
--port+302, the build-index's on --port+303, origin i's on --port+310+i and agent i's on
--agent-port+10i+2. Stores, the backend, the tags and the log (dev.log) live in --dir, so
images survive a restart. Once every role is ready, the addresses (admin listeners included)
are written to the endpoints file, where push, pull, tag and ring status find them without
flags; the file is removed on exit.

Default ports: origins 15000-15002, build-index 15100 (Raft 15101), their swarm ports
15200-15202, tracker 15300, proxy 15400, agent 0 on 16000 (swarm 16001), which is where
` + "`krakenctl pull`" + ` looks for an agent by default; admin listeners 15301-15303,
15310-15312 and 16002. Docker treats 127.0.0.1 registries as
insecure by itself, so ` + "`docker push 127.0.0.1:15400/hello:v1`" + ` and
` + "`docker pull 127.0.0.1:16000/hello:v1`" + ` work without any daemon configuration.

With --tls every listener serves TLS and the roles authenticate each other with certificates
from a CA made for this run: --dir/tls holds ca.pem, a certificate and key per role (for
127.0.0.1 and localhost) and admin.pem with admin-key.pem, a client certificate for operator
commands. The endpoints file names the CA and the admin's certificate, so push, pull, tag,
ring and cluster commands work without flags. A new CA is made at every start. The summary
shows how to make docker trust it (certs.d); dockerd's default configuration does not check
the certificates of registries on 127.0.0.1 at all, so docker works without that step too,
but clients that check (containerd with ` + "`ca`" + ` in hosts.toml, skopeo --cert-dir, crane
and Go with SSL_CERT_FILE) need the CA.

--tls also closes the proxy to everyone but user dev, who may push, pull and delete anything
(the agents still serve pulls to anyone on this machine). Its random password is made at the
first start and kept in --dir/auth/password, readable by you alone, so a docker login
outlives a restart (delete the file for a new password); the summary and -o json show both.
Log in without the password on the command line (here with the default --dir):

  docker login 127.0.0.1:15400 -u dev --password-stdin < ~/.local/state/krakenctl/dev/auth/password
  krakenctl dev up --tls -o json | jq -r .password    # a script reads it from the summary

krakenctl's commands present the admin's certificate from the endpoints file, which the proxy
lets do everything, so push --registry, pull --registry and tag --registry need no password;
with another client certificate or none, pass --username dev --password-stdin.

--upstream-registry REGEX=URL puts the cluster in front of an existing registry: the origins
pull the blobs and manifests of the repositories matching REGEX (the whole name) through from
the registry at URL, and the build-index resolves their tags there when nobody pushed them
here, so ` + "`docker pull 127.0.0.1:16000/library/x:tag`" + ` works with nothing pushed through the proxy.
A tag set with ` + "`krakenctl tag`" + ` wins over the upstream's; the upstream's answers are reused for
30 s. Pushes into those repositories are refused (405 UNSUPPORTED): an upstream takes no uploads. URL is http://HOST:PORT (plain HTTP) or https://HOST[:PORT]; the registry is pulled
from anonymously or with whatever its challenge allows without credentials.

--replicate [REGEX=]FILE sends every tag put (of the repositories matching REGEX, default all)
with all its content to the cluster of the endpoints file FILE, often another dev up's: blobs
first, then the tag, through a durable queue in --dir that retries at most every 10 s while the
other cluster is down and parks what it refuses. The file is read on every attempt, so the
other cluster may start later or restart on new ports. ` + "`krakenctl replicate status`" + ` shows the queue.`,
		Example: `  krakenctl dev up
  krakenctl dev up --origins 5 --agents 3 --dir /tmp/kdev
  krakenctl dev up --port 0 --agents 2    # any free ports
  krakenctl dev up -o json                # the addresses as JSON once ready (for scripts)
  krakenctl dev up --tls                  # TLS on every listener, mutual TLS between roles, a login on the proxy
  krakenctl dev up --endpoints-file /tmp/kdev.json   # the endpoints file as JSON
  krakenctl dev up --upstream-registry 'library/.*=http://127.0.0.1:5000'   # pull library/* through from a registry
  krakenctl dev up --port 25000 --agent-port 26000 --dir /tmp/kdev2 --endpoints-file /tmp/kdev2.yaml &
  krakenctl dev up --replicate '^team/=/tmp/kdev2.yaml'                   # team/* also goes to the second cluster`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Origins < 1 || opts.Origins > dev.MaxOrigins {
				return cmdutil.FlagErrorf("invalid --origins %d: want 1 to %d", opts.Origins, dev.MaxOrigins)
			}
			if opts.Port < 0 || opts.Port+dev.PortSpan > 65535 {
				return cmdutil.FlagErrorf("invalid --port %d: want 0 (any free ports) or a port with room for the %d ports after it up to 65535", opts.Port, dev.PortSpan)
			}
			if opts.Agents < 0 || opts.Agents > dev.MaxAgents {
				return cmdutil.FlagErrorf("invalid --agents %d: want 0 to %d", opts.Agents, dev.MaxAgents)
			}
			if opts.AgentPort < 1 || opts.AgentPort+10*opts.Agents > 65535 {
				return cmdutil.FlagErrorf("invalid --agent-port %d: want a port with room for %d agents (10 ports each) up to 65535", opts.AgentPort, opts.Agents)
			}
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			for _, v := range upstreams {
				u, err := dev.ParseUpstream(v)
				if err != nil {
					return cmdutil.FlagErrorf("invalid --upstream-registry %q: %w", v, err)
				}
				opts.Upstreams = append(opts.Upstreams, u)
			}
			if err := opts.LogLevel.UnmarshalText([]byte(level)); err != nil {
				return cmdutil.FlagErrorf("invalid --log-level %q: want debug, info, warn or error", level)
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return upRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().IntVar(&opts.Origins, "origins", dev.DefaultOrigins, "number of origins to run")
	cmd.Flags().IntVar(&opts.Agents, "agents", 1, "number of agents to run (0: origins only, no tracker)")
	cmd.Flags().Var(&opts.Rate, "rate", "cap every origin's and agent's swarm traffic at this many bytes per second, e.g. 10MiB (default: no cap)")
	cmd.Flags().StringArrayVar(&opts.Replicate, "replicate", nil, "replicate every tag put, with its content, to the cluster of this endpoints file (`[REGEX=]FILE`: only repositories matching REGEX); repeatable")
	cmd.Flags().IntVar(&opts.AgentPort, "agent-port", dev.DefaultAgentPort, "blob API port of the first agent; agent i uses this port + 10i, and the next port for peers (ignored with --port 0)")
	cmd.Flags().StringVar(&opts.Dir, "dir", "", "state directory: stores, storage backend and dev.log (default $XDG_STATE_HOME/krakenctl/dev)")
	cmd.Flags().IntVar(&opts.Port, "port", dev.DefaultPort, "port of the first origin; the others take the next ports (0: any free ports)")
	cmd.Flags().StringVar(&opts.EndpointsFile, "endpoints-file", "", "where to write every role's address, as JSON if the name ends in .json, else YAML (default $XDG_STATE_HOME/krakenctl/dev/"+endpoints.FileName+")")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	cmd.Flags().BoolVar(&opts.TLS, "tls", false, "run every role with TLS and mutual TLS, with certificates from a new CA in --dir/tls, and the proxy with a login (user dev, password in --dir/auth)")
	cmd.Flags().StringArrayVar(&upstreams, "upstream-registry", nil, "REGEX=URL: serve the repositories matching REGEX from the registry at URL (http:// or https://host:port), blobs and tags; repeatable, first match wins")
	cmd.Flags().StringVar(&level, "log-level", "warn", "level of the JSON logs written to dev.log: debug, info, warn or error")
	_ = cmd.MarkFlagDirname("dir")
	_ = cmd.MarkFlagFilename("endpoints-file", "yaml", "yml", "json")
	return cmd
}

func upRun(ctx context.Context, opts *UpOptions) error {
	dir, file := opts.Dir, opts.EndpointsFile
	defaultFile, err := endpoints.DefaultFile(opts.Env)
	if dir == "" || file == "" {
		if err != nil {
			return fmt.Errorf("%w: pass --dir and --endpoints-file", err)
		}
		if dir == "" {
			dir = filepath.Dir(defaultFile)
		}
		if file == "" {
			file = defaultFile
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return fmt.Errorf("resolve --dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create --dir: %w", err)
	}
	logPath := filepath.Join(dir, logName)
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer func() { _ = logFile.Close() }() // unbuffered: every line is written already
	log := slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: opts.LogLevel}))

	rules, err := replicationRules(opts.Replicate)
	if err != nil {
		return err
	}
	c, err := dev.New(dev.Config{
		Origins: opts.Origins, Agents: opts.Agents, AgentPort: opts.AgentPort,
		Dir: dir, Port: opts.Port, EndpointsFile: file, Rate: int64(opts.Rate), BuildIndex: true, Proxy: true, TLS: opts.TLS, Auth: opts.TLS,
		Replication: rules,
		Upstreams:   opts.Upstreams,
	}, dev.Deps{Logger: log})
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("start dev cluster: %w (pick free ports with --port, or --port 0 for any)", err)
	}
	if errors.Is(err, dev.ErrInvalidConfig) {
		// The flags passed their checks one by one, but not together (agent ports inside the
		// range of --port, say): still the operator's input to fix.
		return cmdutil.FlagErrorf("invalid flags: %w (see --port and --agent-port)", err)
	}
	if err != nil {
		return fmt.Errorf("start dev cluster: %w", err)
	}
	_, _ = fmt.Fprintf(opts.IO.ErrOut, "Starting %s and %s in %s ...\n", cmdutil.Plural(opts.Origins, "origin"), cmdutil.Plural(opts.Agents, "agent"), dir)
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	select {
	case <-c.Ready():
		printSummary(opts, c, file, file != defaultFile, logPath)
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("run dev cluster (logs in %s): %w", logPath, err)
		}
		return nil // interrupted before it was ready
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("run dev cluster (logs in %s): %w", logPath, err)
	}
	_, _ = fmt.Fprintln(opts.IO.ErrOut, "Dev cluster stopped.")
	return nil
}

func printSummary(opts *UpOptions, c *dev.Cluster, file string, customFile bool, logPath string) {
	out := opts.IO.Out
	e := c.Addrs()
	tls := e.TLS
	if opts.Output == cmdutil.OutputJSON {
		sum := Summary{Endpoints: e, Replicas: c.Replicas(), Dir: c.Dir(), Log: logPath, EndpointsFile: file}
		if tls != nil {
			// Flat, next to the addresses, for scripts: `jq -r .ca_file`.
			sum.TLS = nil
			sum.CAFile, sum.CertFile, sum.KeyFile = tls.CAFile, tls.CertFile, tls.KeyFile
		}
		login := c.Credentials()
		sum.Username, sum.Password, sum.PasswordFile = login.Username, login.Password, login.PasswordFile
		_ = cmdutil.PrintJSON(out, sum)
		_, _ = fmt.Fprintln(opts.IO.ErrOut, "Press Ctrl-C to stop.")
		return
	}
	// Built whole and written once. The cluster runs whether or not its summary reached the
	// terminal, so a failed write is not an error of the command.
	var b strings.Builder
	defer func() { _, _ = io.WriteString(out, b.String()) }()
	addrs := c.Endpoints()
	agents := c.Agents()
	fmt.Fprintf(&b, "krakenctl dev cluster is up: %s, each blob on %d of them, a build-index, a registry proxy and %s.\n\n", cmdutil.Plural(len(addrs), "origin"), c.Replicas(), cmdutil.Plural(len(agents), "agent"))
	// The admin column comes last, so the columns people read first stay where they were.
	admin := e.Admin
	scheme := "http://"
	if tls != nil {
		scheme = "https://"
	}
	t := cmdutil.NewTable(&b, "role", "address", "serves", "admin")
	row := func(role, addr, serves string, admins []string, i int) {
		t.Row(role, scheme+addr, serves, scheme+admins[i])
	}
	for i, a := range addrs {
		row(fmt.Sprintf("origin %d", i), a, "blobs", admin.Origins, i)
	}
	row("build-index", c.BuildIndexAddr(), "tags (krakenctl tag)", admin.BuildIndex, 0)
	if tr := c.TrackerAddr(); tr != "" {
		row("tracker", tr, "peer lists", admin.Trackers, 0)
	}
	row("proxy", c.ProxyAddr(), "registry: push images here", admin.Proxy, 0)
	for i, a := range agents {
		row(fmt.Sprintf("agent %d", i), a, "registry: pull images here", admin.Agents, i)
	}
	_ = t.Flush()
	fmt.Fprintf(&b, "\nState:      %s\n", c.Dir())
	fmt.Fprintf(&b, "Logs:       %s\n", logPath)
	fmt.Fprintf(&b, "Endpoints:  %s\n", file)
	if tls != nil {
		fmt.Fprintf(&b, "CA:         %s\n", tls.CAFile)
		fmt.Fprintf(&b, "Admin cert: %s (key %s)\n", tls.CertFile, tls.KeyFile)
	}
	login := c.Credentials()
	if login.Username != "" {
		fmt.Fprintf(&b, "Username:   %s\n", login.Username)
		fmt.Fprintf(&b, "Password:   %s (in %s)\n", login.Password, login.PasswordFile)
	}
	flag := ""
	if customFile {
		flag = " --endpoints-file " + file
	}
	fmt.Fprintf(&b, "\nTry, in another terminal:\n")
	// Pulls go through an agent, from the swarm; without agents, the proxy serves them too.
	puller, pullHow := c.ProxyAddr(), "pull it back from the proxy (run agents to pull from the swarm)"
	if len(agents) > 0 {
		puller, pullHow = agents[0], "pull it through an agent, from the swarm"
	}
	var tries [][2]string
	if tls != nil {
		ports := []string{port(c.ProxyAddr())}
		for _, a := range agents {
			ports = append(ports, port(a))
		}
		tries = append(tries, [2]string{
			"for port in " + strings.Join(ports, " ") + "; do sudo mkdir -p /etc/docker/certs.d/" + dev.Host + ":$port && sudo cp " + tls.CAFile + " /etc/docker/certs.d/" + dev.Host + ":$port/ca.crt; done",
			"trust this run's CA for the proxy and the agents (again after every start; dockerd itself skips the check on 127.0.0.1)"})
	}
	if login.Username != "" {
		// From the file: the password stays out of the shell's history and of ps.
		tries = append(tries, [2]string{
			"docker login " + c.ProxyAddr() + " -u " + login.Username + " --password-stdin < " + login.PasswordFile,
			"log docker in to the proxy, which lets nobody else push or pull"})
	}
	tries = append(tries, [][2]string{
		{"docker tag IMAGE " + c.ProxyAddr() + "/hello:v1", "name any local image for the proxy"},
		{"docker push " + c.ProxyAddr() + "/hello:v1", "push it through the proxy: blobs to the origins, the tag to the build-index"},
		{"docker pull " + puller + "/hello:v1", pullHow},
		{"krakenctl push FILE" + flag, "upload a file to the origins, print its digest"},
	}...)
	if len(agents) > 0 {
		// Through an agent, the addresses come from the flag; TLS from the default endpoints
		// file, so with another file the files are named.
		tlsFlags := ""
		if tls != nil && customFile {
			tlsFlags = " --tls-ca-file " + tls.CAFile + " --tls-cert-file " + tls.CertFile + " --tls-key-file " + tls.KeyFile
		}
		tries = append(tries, [2]string{"krakenctl pull DIGEST --file out --agent " + agents[0] + tlsFlags, "download it through an agent, from the swarm, verified"})
	}
	tries = append(tries,
		[2]string{"krakenctl pull DIGEST --file out --from-origins" + flag, "download it from the origins directly"},
		[2]string{"krakenctl ring status" + flag, "the origins, their health and who owns what"})
	for _, try := range tries {
		fmt.Fprintf(&b, "  %s\n      # %s\n", try[0], try[1])
	}
	fmt.Fprintf(&b, "\nPress Ctrl-C to stop.\n")
}

// port is the port of a host:port address.
func port(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr // the cluster's own addresses always have one
	}
	return p
}

// replicationRules turns --replicate values ([REGEX=]FILE) into build-index rules, one per
// value; a value without REGEX replicates every repository.
func replicationRules(values []string) ([]buildindex.ReplicationRule, error) {
	var rules []buildindex.ReplicationRule
	for _, v := range values {
		re, file, ok := strings.Cut(v, "=")
		if !ok {
			re, file = ".*", v
		}
		if _, err := regexp.Compile(re); err != nil {
			return nil, cmdutil.FlagErrorf("invalid --replicate %q: %q is not a regular expression: %v", v, re, err)
		}
		if strings.TrimSpace(file) == "" {
			return nil, cmdutil.FlagErrorf("invalid --replicate %q: no endpoints file", v)
		}
		abs, err := filepath.Abs(file)
		if err != nil {
			return nil, fmt.Errorf("--replicate %q: %w", v, err)
		}
		rules = append(rules, buildindex.ReplicationRule{Repository: re, To: []string{abs}})
	}
	return rules, nil
}
