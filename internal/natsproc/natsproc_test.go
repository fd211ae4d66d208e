package natsproc_test

import (
	"context"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outlast/outlast/internal/natsproc"
	"github.com/outlast/outlast/internal/testenv"
)

// TestKillAndRestart: the server accepts a client, refuses connections
// once killed, and is back on the same address after Restart.
func TestKillAndRestart(t *testing.T) {
	if _, err := exec.LookPath(natsproc.DefaultBinary); err != nil {
		testenv.Missing(t, "nats-server (Debian package nats-server)", err)
	}
	ctx := context.Background()
	s, err := natsproc.Start(ctx, natsproc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	nc, err := nats.Connect(s.URL(), nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.JetStream(); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("a killed server accepted a connection")
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Pid() == 0 {
		t.Fatal("no pid after restart")
	}
}
