package cmdutil

import (
	"strings"

	"github.com/spf13/pflag"

	"github.com/krakenctl/krakenctl/server/config"
)

// RateFlag is a flag of bytes per second, written as a size with units as config files take
// it, with or without "/s": "25MiB" or "25MiB/s".
type RateFlag int64

func (r *RateFlag) String() string { return config.ByteSize(*r).String() + "/s" }

// Type names the flag's kind in help.
func (r *RateFlag) Type() string { return "rate" }

// Set parses v.
func (r *RateFlag) Set(v string) error {
	n, err := config.ParseByteSize(strings.TrimSuffix(strings.TrimSpace(v), "/s"))
	if err != nil {
		return err
	}
	*r = RateFlag(n)
	return nil
}

var _ pflag.Value = (*RateFlag)(nil)
