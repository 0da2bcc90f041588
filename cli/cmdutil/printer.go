package cmdutil

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// Output formats accepted by -o.
const (
	OutputTable = "table"
	OutputJSON  = "json"
)

// AddOutputFlag registers -o/--output on cmd, storing the choice in p.
func AddOutputFlag(cmd *cobra.Command, p *string) {
	*p = OutputTable
	cmd.Flags().StringVarP(p, "output", "o", OutputTable, "output format: table or json")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{OutputTable, OutputJSON}, cobra.ShellCompDirectiveNoFileComp))
}

// CheckOutput validates an -o value.
func CheckOutput(format string) error {
	if format != OutputTable && format != OutputJSON {
		return FlagErrorf("invalid --output %q: want table or json", format)
	}
	return nil
}

// PrintJSON writes v as indented JSON.
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Table writes aligned columns. Headers are printed in upper case. The first write error is
// kept and returned by Flush.
type Table struct {
	tw  *tabwriter.Writer
	err error
}

// NewTable starts a table on w with the given headers.
func NewTable(w io.Writer, headers ...string) *Table {
	t := &Table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	for i, h := range headers {
		headers[i] = strings.ToUpper(h)
	}
	t.Row(toAny(headers)...)
	return t
}

// Row adds one row; values are formatted with %v.
func (t *Table) Row(cells ...any) {
	for i, c := range cells {
		if i > 0 {
			t.print("\t")
		}
		t.print(c)
	}
	t.print("\n")
}

func (t *Table) print(v any) {
	if t.err == nil {
		_, t.err = fmt.Fprint(t.tw, v)
	}
}

// Flush writes the table out and returns the first error met writing it.
func (t *Table) Flush() error {
	if t.err != nil {
		return t.err
	}
	return t.tw.Flush()
}

func toAny(s []string) []any {
	a := make([]any, len(s))
	for i, v := range s {
		a[i] = v
	}
	return a
}

// Plural returns "1 thing" or "n things" (English regular plural).
func Plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
