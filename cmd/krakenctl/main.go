// Command krakenctl runs every krakenctl server role and carries the operator tools.
package main

import (
	"os"

	"github.com/krakenctl/krakenctl/cli/root"
)

func main() { os.Exit(root.Main()) }
