package dev

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/krakenctl/krakenctl/server/auth"
)

// The proxy's login with Config.Auth.
const (
	// Username is the one user of a dev cluster's proxy.
	Username = "dev"
	// AuthDir is the directory in Config.Dir that holds the login's files: password, htpasswd
	// and token-secret, each readable by their owner only.
	AuthDir = "auth"
	// MinPasswordLen is the shortest password a dev cluster accepts from its password file.
	MinPasswordLen = 20
)

// Credentials are the login of a dev cluster's proxy.
type Credentials struct {
	Username string
	Password string
	// PasswordFile holds Password and nothing else (no newline), for the --password-stdin of
	// docker login, crane auth login and krakenctl.
	PasswordFile string
}

// setupAuth returns the proxy's auth section for a cluster in dir, and its credentials. The
// password is made once, from crypto/rand, and kept in dir/auth/password, so that a `docker
// login` outlives a restart (the CA, made anew every run, does not: certificates are what a
// restart may rotate, a login should not need repeating); delete the file for a new one. The
// htpasswd file and the token secret are written afresh at every start: tokens of an earlier
// run are no good in this one.
func setupAuth(dir string) (*auth.Config, Credentials, error) {
	adir := filepath.Join(dir, AuthDir)
	if err := os.MkdirAll(adir, 0o700); err != nil {
		return nil, Credentials{}, fmt.Errorf("auth dir: %w", err)
	}
	// MkdirAll leaves an existing directory's mode alone: an older one may be wider.
	if err := os.Chmod(adir, 0o700); err != nil {
		return nil, Credentials{}, fmt.Errorf("auth dir: %w", err)
	}
	creds := Credentials{Username: Username, PasswordFile: filepath.Join(adir, "password")}
	pw, err := readPassword(creds.PasswordFile)
	if errors.Is(err, fs.ErrNotExist) {
		// 26 characters of base32, 130 bits: printable, and nothing a shell or a URL quotes.
		pw = rand.Text()
		err = writeSecret(creds.PasswordFile, pw)
	}
	if err != nil {
		return nil, Credentials{}, err
	}
	creds.Password = pw
	htpasswd, err := auth.HtpasswdLine(Username, pw, 0)
	if err != nil {
		return nil, Credentials{}, fmt.Errorf("hash the dev password: %w", err)
	}
	if err := writeSecret(filepath.Join(adir, "htpasswd"), htpasswd); err != nil {
		return nil, Credentials{}, err
	}
	// Two 130-bit texts: 52 bytes, over the 32 the token signature wants.
	secret := rand.Text() + rand.Text()
	if err := writeSecret(filepath.Join(adir, "token-secret"), secret); err != nil {
		return nil, Credentials{}, err
	}
	return &auth.Config{
		Mode:     auth.ModeToken,
		Htpasswd: htpasswd,
		// The user may do everything; nobody else may do anything, anonymous pulls included.
		// Components need no rule: the cluster's admin certificate (operator commands) may do
		// everything, and no other role calls the proxy's registry API.
		Rules: []auth.Rule{{Repositories: []string{"**"}, Users: []string{Username}, Actions: auth.All.Names()}},
		Token: auth.TokenConfig{Secret: secret},
	}, creds, nil
}

// readPassword reads the password of an earlier run, refusing one too short or with
// characters a login would mangle (someone edited the file: delete it for a new one).
func readPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read the dev password: %w", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if len(pw) < MinPasswordLen {
		return "", fmt.Errorf("the dev password in %s is shorter than %d characters: delete the file for a new one", path, MinPasswordLen)
	}
	for _, c := range pw {
		if c <= ' ' || c >= 0x7f || c == ':' {
			return "", fmt.Errorf("the dev password in %s has a space, a colon or a character outside printable ASCII: delete the file for a new one", path)
		}
	}
	return pw, nil
}

// writeSecret writes s to path, readable by its owner only, atomically: a reader never sees
// a part, and a file another user made readable is replaced, not rewritten in place.
func writeSecret(path, s string) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	// CreateTemp makes the file 0600 already; say so, the mode is the point.
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.WriteString(s); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
