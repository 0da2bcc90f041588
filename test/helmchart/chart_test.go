// Package helmchart checks that the Helm chart in charts/krakenctl renders role configs the
// krakenctl binary accepts: for the default values and every example values file, each
// ConfigMap entry goes through `krakenctl config validate ROLE FILE`. It needs helm
// ($KRAKENCTL_HELM, set by scripts/helm-check.sh) and skips without it.
package helmchart

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// secretFile is a key of a backend that the chart points at a mounted Secret's file.
var secretFile = regexp.MustCompile(`(?m)_file: (\S+/secrets/\S+)$`)

func TestRenderedConfigsValidate(t *testing.T) {
	helm := os.Getenv("KRAKENCTL_HELM")
	if helm == "" {
		t.Skip("KRAKENCTL_HELM is not set: run scripts/helm-check.sh")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "krakenctl")
	build := exec.Command("go", "build", "-o", bin, "./cmd/krakenctl")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build krakenctl: %v\n%s", err, out)
	}
	examples, err := filepath.Glob(filepath.Join(root, "charts/krakenctl/examples/*.yaml"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("no example values files (%v)", err)
	}
	for _, values := range append([]string{""}, examples...) {
		name := "default"
		if values != "" {
			name = filepath.Base(values)
		}
		t.Run(name, func(t *testing.T) {
			args := []string{"template", "krakenctl", filepath.Join(root, "charts/krakenctl"), "--namespace", "krakenctl"}
			if values != "" {
				args = append(args, "-f", values)
			}
			out, err := exec.Command(helm, args...).Output()
			if err != nil {
				t.Fatalf("helm %v: %v", args, err)
			}
			configs := roleConfigs(t, out)
			for _, role := range []string{"agent", "origin", "tracker", "proxy", "build-index"} {
				cfg, ok := configs[role+".yaml"]
				if !ok {
					t.Fatalf("the ConfigMap has no %s.yaml", role)
				}
				validate(t, bin, role, cfg)
			}
			if certs := certificates(t, out); len(certs) > 0 {
				checkNamesCertified(t, configs, certs)
			}
			if values != "" {
				return
			}
			// The checks can fail: the same origin config with a member that is not an
			// address, or a key no role has, is refused; a member no certificate names is
			// found.
			tlsCerts := map[string][]*x509.Certificate{"origin": {{DNSNames: []string{"*.krakenctl-origin-headless.krakenctl.svc.cluster.local"}}}}
			if msg := uncertified("origin", []string{"krakenctl-origin-0.other.krakenctl.svc.cluster.local:5000"}, tlsCerts); msg == "" {
				t.Error("a member outside the certificate's names passed the name check")
			}
			if msg := uncertified("origin", []string{"krakenctl-origin-0.krakenctl-origin-headless.krakenctl.svc.cluster.local:5000"}, tlsCerts); msg != "" {
				t.Errorf("a member the wildcard names failed the name check: %s", msg)
			}
			for _, bad := range []string{
				strings.Replace(configs["origin.yaml"], "dns:///", "dns://", 1),
				configs["origin.yaml"] + "\nno_such_key: 1\n",
			} {
				if out, err := run(t, bin, "origin", bad); err == nil {
					t.Errorf("krakenctl config validate accepted a broken origin config:\n%s\n%s", out, bad)
				}
			}
		})
	}
}

// validate runs `krakenctl config validate` on cfg with the pod's environment the chart's
// configs reference.
func validate(t *testing.T, bin, role, cfg string) {
	t.Helper()
	// The configs go as rendered: dns:/// members and raft.bootstrap_ordinal included.
	out, err := run(t, bin, role, cfg)
	if err != nil {
		t.Errorf("krakenctl config validate %s: %v\n%s\nconfig:\n%s", role, err, out, cfg)
	}
}

func run(t *testing.T, bin, role, cfg string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, role+".yaml")
	// The Secrets the chart mounts under /etc/krakenctl/secrets: validate reads them.
	cfg = strings.ReplaceAll(cfg, "/etc/krakenctl/secrets/", dir+"/secrets/")
	for _, m := range secretFile.FindAllStringSubmatch(cfg, -1) {
		if err := os.MkdirAll(filepath.Dir(m[1]), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(m[1], []byte("example-secret-value"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "config", "validate", role, file)
	// The first pod of the role's StatefulSet (the release is "krakenctl").
	cmd.Env = append(os.Environ(), "POD_IP=10.1.0.5", "HOST_IP=10.0.0.5", "POD_NAME=krakenctl-"+role+"-0",
		"KRAKENCTL_BACKEND_0_ACCESS_KEY_ID=AKIAEXAMPLE", "KRAKENCTL_BACKEND_0_USERNAME=u",
		"KRAKENCTL_BACKEND_1_USERNAME=u")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}

// roleConfigs returns the data of the chart's ConfigMap in a `helm template` output.
func roleConfigs(t *testing.T, rendered []byte) map[string]string {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(rendered))
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("no ConfigMap in the rendered chart: %v", err)
		}
		if doc.Kind == "ConfigMap" {
			return doc.Data
		}
	}
}

// certificates returns the dnsNames and ipAddresses of the chart's cert-manager Certificates in
// a `helm template` output, by role, as certificates that VerifyHostname can check names with.
func certificates(t *testing.T, rendered []byte) map[string][]*x509.Certificate {
	t.Helper()
	certs := map[string][]*x509.Certificate{}
	dec := yaml.NewDecoder(bytes.NewReader(rendered))
	for {
		var doc struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				DNSNames    []string `yaml:"dnsNames"`
				IPAddresses []string `yaml:"ipAddresses"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&doc); err != nil {
			return certs
		}
		if doc.Kind != "Certificate" {
			continue
		}
		c := &x509.Certificate{DNSNames: doc.Spec.DNSNames}
		for _, ip := range doc.Spec.IPAddresses {
			c.IPAddresses = append(c.IPAddresses, net.ParseIP(ip))
		}
		role := doc.Metadata.Labels["app.kubernetes.io/component"]
		certs[role] = append(certs[role], c)
	}
}

// checkNamesCertified checks that every address a role's config dials another role at is a
// name that role's certificate carries: with TLS, a member its certificate does not name fails
// every handshake.
func checkNamesCertified(t *testing.T, configs map[string]string, certs map[string][]*x509.Certificate) {
	t.Helper()
	for _, c := range []struct{ config, key, role string }{
		{"agent.yaml", "trackers", "tracker"},
		{"agent.yaml", "build_index", "build-index"},
		{"origin.yaml", "ring.members", "origin"},
		{"tracker.yaml", "origins", "origin"},
		{"proxy.yaml", "origins", "origin"},
		{"proxy.yaml", "build_index", "build-index"},
		{"build-index.yaml", "origins", "origin"},
		{"build-index.yaml", "join", "build-index"},
	} {
		var doc map[string]any
		if err := yaml.Unmarshal([]byte(configs[c.config]), &doc); err != nil {
			t.Fatalf("%s: %v", c.config, err)
		}
		v := any(doc)
		for _, k := range strings.Split(c.key, ".") {
			m, _ := v.(map[string]any)
			v = m[k]
		}
		list, _ := v.([]any)
		if len(list) == 0 {
			t.Errorf("%s: no %s", c.config, c.key)
			continue
		}
		var addrs []string
		for _, a := range list {
			addrs = append(addrs, fmt.Sprint(a))
		}
		if msg := uncertified(c.role, addrs, certs); msg != "" {
			t.Errorf("%s %s: %s", c.config, c.key, msg)
		}
	}
	// The node's containerd reaches its agent at 127.0.0.1.
	if msg := uncertified("agent", []string{"127.0.0.1:16000"}, certs); msg != "" {
		t.Error(msg)
	}
}

// uncertified says which of addrs (host:port) no certificate of role names, or "".
func uncertified(role string, addrs []string, certs map[string][]*x509.Certificate) string {
	var bad []string
	for _, addr := range addrs {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			bad = append(bad, addr+" (not host:port)")
			continue
		}
		ok := false
		for _, c := range certs[role] {
			ok = ok || c.VerifyHostname(host) == nil
		}
		if !ok {
			bad = append(bad, addr)
		}
	}
	if len(bad) > 0 {
		return fmt.Sprintf("no %s certificate names %v", role, bad)
	}
	return ""
}
