// Package cli holds krakenctl's cobra command tree. Its sub-packages are glue only: flags become
// an options struct, a run function calls a library in server/, swarm/, ring/ or backend/, and
// prints through IOStreams. Business logic never lives here.
package cli
