package proxy

import _ "embed" // for the example config

//go:embed example.yaml
var example string

// Example returns a complete, commented proxy configuration file: every key with its
// default or a realistic value. `krakenctl config example proxy` prints it, and a test
// proves it loads and mentions every key of Config.
func Example() string { return example }
