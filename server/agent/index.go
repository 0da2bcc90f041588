package agent

import (
	"net/http"

	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// errNoBuildIndex answers the registry requests that need the build-index on an agent that has
// none configured.
var errNoBuildIndex = errcode.Errorf(http.StatusServiceUnavailable, errcode.CodeUnavailable,
	"this agent has no build_index configured: it cannot resolve tags, sha512 digests or referrers, "+
		"nor list tags and repositories; pull by sha256 digest, or list the build-index nodes under build_index in the agent's config")

// buildIndex returns the build-index nodes the registry API reads tags, links and listings
// from (linearizably, failing over between nodes as client.BuildIndexes does), or
// errNoBuildIndex on an agent without build_index.
func (r *ociReader) buildIndex() (*client.BuildIndexes, error) {
	if r.index == nil {
		return nil, errNoBuildIndex
	}
	return r.index, nil
}
