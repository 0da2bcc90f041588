package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/tagstore"
)

// RecoverOptions are the inputs of `krakenctl cluster recover`.
type RecoverOptions struct {
	IO         *iostreams.IOStreams
	ConfigPath string
	// Members are "id=raftaddr" pairs; Drop are IDs. Exactly one of them is given.
	Members []string
	Drop    []string
	Output  string
}

// NewCmdRecover returns `krakenctl cluster recover`. runF replaces the run function in tests.
func NewCmdRecover(f *cmdutil.Factory, runF func(context.Context, *RecoverOptions) error) *cobra.Command {
	opts := &RecoverOptions{IO: f.IOStreams}
	cmd := &cobra.Command{
		Use:   "recover --config FILE (--member ID=RAFTADDR ... | --drop ID ...)",
		Short: "Bring a build-index cluster that lost its quorum back from the surviving nodes",
		Long: `Rewrite a stopped build-index node's Raft state so that it starts with a new membership: the
surviving nodes only. Use it when too many nodes are gone for good for the others to elect a
leader (two of three, three of five), and no ` + "`cluster remove`" + ` can be made any more.

Run it offline, on each surviving node, with the node's own build-index config file (it finds
the Raft state in the config's dir) and the same membership for every survivor:
  --member ID=RAFTADDR   each surviving node, this one included (repeat the flag), or
  --drop ID              each node that is gone, leaving the rest of the stored membership.
Then start the survivors. They elect a leader among themselves and keep every entry their logs
hold; the nodes that were dropped must not be started again with their old state (wipe their
dir first, then add them back with ` + "`cluster join`" + `).

The node's state is applied and saved as a new snapshot that carries the new membership, and
its log is emptied. The node must be stopped: its Raft files are locked while it runs.`,
		Example: `  # bi-2 and bi-3 of three are gone for good; on bi-1, stopped:
  krakenctl cluster recover --config /etc/krakenctl/build-index.yaml --drop bi-2 --drop bi-3

  # the same, naming the survivors; on bi-1 and bi-2, both stopped:
  krakenctl cluster recover --config bi.yaml --member bi-1=10.0.0.1:15101 --member bi-2=10.0.0.2:15101`,
		Args: argsFunc(0, "recover takes no arguments: name the survivors with --member or the lost nodes with --drop"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.ConfigPath == "" {
				return cmdutil.FlagErrorf("--config is required: the stopped node's build-index config file")
			}
			if (len(opts.Members) == 0) == (len(opts.Drop) == 0) {
				return cmdutil.FlagErrorf("give either --member (every survivor) or --drop (every lost node)")
			}
			if _, err := parseMembers(opts.Members); err != nil {
				return cmdutil.FlagErrorf("invalid --member: %w", err)
			}
			for _, id := range opts.Drop {
				if err := checkID(id); err != nil {
					return cmdutil.FlagErrorf("invalid --drop: %w", err)
				}
			}
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return recoverRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVarP(&opts.ConfigPath, "config", "c", "", "the stopped node's build-index config file (YAML)")
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
	cmd.Flags().StringArrayVar(&opts.Members, "member", nil, "a surviving node as ID=RAFTADDR (repeat for each, this node included)")
	cmd.Flags().StringArrayVar(&opts.Drop, "drop", nil, "the ID of a node that is gone for good (repeat for each)")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

// parseMembers parses "id=raftaddr" pairs.
func parseMembers(specs []string) ([]tagstore.Member, error) {
	members := make([]tagstore.Member, 0, len(specs))
	for _, spec := range specs {
		id, addr, ok := strings.Cut(spec, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want ID=RAFTADDR", spec)
		}
		if err := checkID(id); err != nil {
			return nil, fmt.Errorf("%q: %w", spec, err)
		}
		if err := ring.CheckMember(addr); err != nil {
			return nil, fmt.Errorf("%q: %w", spec, err)
		}
		members = append(members, tagstore.Member{ID: id, RaftAddr: addr})
	}
	return members, nil
}

// recoverResult is the JSON output of `cluster recover`.
type recoverResult struct {
	NodeID  string       `json:"node_id"`
	Dir     string       `json:"dir"`
	Index   uint64       `json:"index"`
	Tags    int          `json:"tags"`
	Links   int          `json:"links"`
	Before  []api.Member `json:"before"`
	Members []api.Member `json:"members"`
}

func recoverRun(_ context.Context, opts *RecoverOptions) error {
	var cfg buildindex.Config
	if err := config.Load(opts.ConfigPath, &cfg); err != nil {
		return err
	}
	members, err := parseMembers(opts.Members)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(opts.IO.ErrOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
	res, err := tagstore.Recover(cfg.Raft, tagstore.RecoverOptions{Members: members, Drop: opts.Drop}, logger)
	if err != nil {
		return err
	}
	out := recoverResult{NodeID: cfg.Raft.NodeID, Dir: cfg.Raft.Dir, Index: res.Index, Tags: res.Tags, Links: res.Links,
		Before: apiMembers(res.Before), Members: apiMembers(res.Members)}
	if opts.Output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(opts.IO.Out, out)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Recovered %s (%s): %d tags and %d links at log index %d.\n\n", out.NodeID, out.Dir, out.Tags, out.Links, out.Index)
	t := cmdutil.NewTable(&b, "id", "raft addr", "suffrage", "before", "now")
	for _, row := range membershipRows(out.Before, out.Members) {
		t.Row(row...)
	}
	if err := t.Flush(); err != nil {
		return err
	}
	b.WriteString("\nRecover every other survivor with the same membership before starting any of them, then start them.\n")
	_, err = io.WriteString(opts.IO.Out, b.String())
	return err
}

func apiMembers(ms []tagstore.Member) []api.Member {
	out := make([]api.Member, len(ms))
	for i, m := range ms {
		out[i] = api.Member(m)
	}
	return out
}

// membershipRows lists every member before or after, and whether it is in each.
func membershipRows(before, after []api.Member) [][]any {
	type row struct {
		m         api.Member
		was, isIn bool
	}
	var rows []*row
	find := func(id string) *row {
		for _, r := range rows {
			if r.m.ID == id {
				return r
			}
		}
		r := &row{}
		rows = append(rows, r)
		return r
	}
	for _, m := range before {
		r := find(m.ID)
		r.m, r.was = m, true
	}
	for _, m := range after {
		r := find(m.ID)
		r.m, r.isIn = m, true
	}
	mark := func(b bool) string {
		if b {
			return "yes"
		}
		return "-"
	}
	out := make([][]any, 0, len(rows))
	for _, r := range rows {
		out = append(out, []any{r.m.ID, r.m.RaftAddr, cmdutil.OrDash(r.m.Suffrage), mark(r.was), mark(r.isIn)})
	}
	return out
}
