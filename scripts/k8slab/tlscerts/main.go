// Command tlscerts makes the certificates of one TLS run of the Kubernetes lab
// (K8S_LAB_TLS=1 scripts/k8s-lab.sh e2e), offline, from a new CA of the project's own pki
// package: one kubernetes.io/tls Secret per role and one per build-index node, named and
// carrying what charts/krakenctl/README.md ("TLS") asks of tls.mode existingSecrets, written
// as one manifest for kubectl apply; and an admin certificate (O=admin) as files, for the
// script's own calls to the roles (metrics, swarm list). A new CA per run: nothing is kept
// between runs, and nothing but the lab trusts it.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/krakenctl/krakenctl/server/pki"
)

func main() {
	out := flag.String("out", "", "directory for ca.crt, admin.crt, admin.key and secrets.yaml")
	release := flag.String("release", "kk", "the helm release name")
	ns := flag.String("namespace", "krakenctl", "the release's namespace")
	domain := flag.String("cluster-domain", "cluster.local", "the cluster's DNS domain")
	buildIndex := flag.Int("build-index", 3, "build-index replicas (one Secret per node)")
	prefix := flag.String("secret-prefix", "kk-lab", "Secrets are <prefix>-<role>-tls, build-index <prefix>-build-index-tls-<ordinal>")
	flag.Parse()
	if *out == "" {
		log.Fatal("tlscerts: -out is required")
	}
	if err := run(*out, *release, *ns, *domain, *prefix, *buildIndex); err != nil {
		log.Fatalf("tlscerts: %v", err)
	}
}

func run(out, release, ns, domain, prefix string, buildIndex int) error {
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	ca, err := pki.NewCA("krakenctl k8s-lab CA " + time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return err
	}
	// The chart's names: <release>-krakenctl-<role>, its headless Service <name>-headless.
	name := func(role string) string { return release + "-krakenctl-" + role }
	headless := func(role string) string { return fmt.Sprintf("%s-headless.%s.svc.%s", name(role), ns, domain) }

	var manifest strings.Builder
	secret := func(secretName string, l pki.Leaf) error {
		cert, key, err := ca.Issue(l)
		if err != nil {
			return err
		}
		writeSecret(&manifest, secretName, ns, cert, key, ca.CertPEM())
		return nil
	}

	// The table of charts/krakenctl/README.md, row by row.
	leaves := []struct {
		secret string
		leaf   pki.Leaf
	}{
		// containerd on the node dials its agent at 127.0.0.1 (hosts.toml).
		{prefix + "-agent-tls", pki.Leaf{Name: "agent", Groups: []string{pki.GroupAgent}, Hosts: []string{"127.0.0.1"}}},
		{prefix + "-origin-tls", pki.Leaf{Name: "origin", Groups: []string{pki.GroupOrigin}, Hosts: []string{"*." + headless("origin")}}},
		{prefix + "-tracker-tls", pki.Leaf{Name: "tracker", Groups: []string{pki.GroupTracker}, Hosts: []string{"*." + headless("tracker")}}},
		// The Service's names, and the host loopback the lab's port-forward pushes to.
		{prefix + "-proxy-tls", pki.Leaf{Name: "proxy", Groups: []string{pki.GroupProxy}, Hosts: []string{
			name("proxy"), name("proxy") + "." + ns, name("proxy") + "." + ns + ".svc",
			name("proxy") + "." + ns + ".svc." + domain, "127.0.0.1", "localhost",
		}}},
	}
	for i := range buildIndex {
		// A build-index node's common name is its raft node id, the pod name.
		pod := fmt.Sprintf("%s-%d", name("build-index"), i)
		leaves = append(leaves, struct {
			secret string
			leaf   pki.Leaf
		}{fmt.Sprintf("%s-build-index-tls-%d", prefix, i), pki.Leaf{Name: pod, Groups: []string{pki.GroupBuildIndex}, Hosts: []string{pod + "." + headless("build-index")}}})
	}
	for _, l := range leaves {
		if err := secret(l.secret, l.leaf); err != nil {
			return err
		}
	}
	// The operator's certificate: the script's metrics reads and the swarm list pod. A Secret
	// too, so that pod can mount it.
	admin := pki.Leaf{Name: "k8s-lab", Groups: []string{pki.GroupAdmin}}
	cert, key, err := ca.Issue(admin)
	if err != nil {
		return err
	}
	files := map[string][]byte{"ca.crt": ca.CertPEM(), "admin.crt": cert, "admin.key": key}
	for f, b := range files {
		if err := os.WriteFile(filepath.Join(out, f), b, 0o600); err != nil {
			return err
		}
	}
	writeSecret(&manifest, prefix+"-admin-tls", ns, cert, key, ca.CertPEM())
	return os.WriteFile(filepath.Join(out, "secrets.yaml"), []byte(manifest.String()), 0o600)
}

// writeSecret appends a kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt to m.
func writeSecret(m *strings.Builder, name, ns string, cert, key, caPEM []byte) {
	fmt.Fprintf(m, "---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {name: %s, namespace: %s}\nstringData:\n", name, ns)
	for _, kv := range [][2]string{{"tls.crt", string(cert)}, {"tls.key", string(key)}, {"ca.crt", string(caPEM)}} {
		fmt.Fprintf(m, "  %s: |\n", kv[0])
		for _, line := range strings.Split(strings.TrimRight(kv[1], "\n"), "\n") {
			fmt.Fprintf(m, "    %s\n", line)
		}
	}
}
