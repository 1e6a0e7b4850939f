// Package testkit holds what the tests of several packages share when they run real programs
// (php, php-fpm, nginx, chromium, the wsbridge binary): finding the program, picking a port,
// collecting output. Only tests import it; it is not part of wsbridge's API.
package testkit

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// RequireTool returns the path of the first of names found on PATH (or given as an absolute
// path). Under CI (CI set) a missing program fails the test, because .ci/run installs it; on a
// developer machine the test is skipped with a message naming the Debian package to install.
func RequireTool(t testing.TB, pkg string, names ...string) string {
	t.Helper()
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	Missing(t, fmt.Sprintf("%s is not installed (Debian package %s)", strings.Join(names, " or "), pkg))
	return ""
}

// Missing fails under CI and skips elsewhere, saying what is missing.
func Missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; CI must provide it (.ci/run installs it)", what)
	}
	t.Skipf("%s: skipping", what)
}

// FreeAddr returns a loopback address whose port was free a moment ago, for programs that need
// a port number rather than a listener: ListenAddr's, outside the ephemeral range, so that no
// outgoing connection of a parallel test takes it first.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return ListenAddr(t)
}

// SyncBuffer collects output that one goroutine writes (a child's stderr, a logger) while the
// test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
