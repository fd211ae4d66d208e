package redisproc

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast/internal/testenv"
)

func startServer(t *testing.T, o Options) *Server {
	t.Helper()
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		testenv.Missing(t, "redis-server binary", err)
	}
	s, err := Start(context.Background(), o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return s
}

func command(t *testing.T, addr string, args ...string) string {
	t.Helper()
	reply, err := Command(context.Background(), addr, args...)
	if err != nil {
		t.Fatalf("Command(%q) = %v", args, err)
	}
	return reply
}

// TestFaults walks a server through every fault the tests and the
// benchmark inject: a hang, a kill, an empty restart on the same port.
func TestFaults(t *testing.T) {
	s := startServer(t, Options{})
	command(t, s.Addr(), "SET", "k", "v")
	if got := command(t, s.Addr(), "GET", "k"); got != "v" {
		t.Fatalf("GET k = %q, want v", got)
	}
	if err := s.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if _, err := Command(context.Background(), s.Addr(), "PING"); err == nil {
		t.Error("PING to a paused server = nil error, want a timeout")
	}
	if err := s.Resume(); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	command(t, s.Addr(), "PING")
	pid := s.Pid()
	if err := s.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if _, err := Command(context.Background(), s.Addr(), "PING"); err == nil {
		t.Error("PING to a killed server = nil error, want connection refused")
	}
	if err := s.Pause(); err == nil {
		t.Error("Pause of a killed server = nil, want not running")
	}
	if err := s.Restart(context.Background()); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if s.Pid() == pid || s.Pid() == 0 {
		t.Errorf("Pid() after Restart = %d, want a new process (was %d)", s.Pid(), pid)
	}
	if got := command(t, s.Addr(), "GET", "k"); got != "" {
		t.Errorf("GET k after Restart = %q, want empty", got)
	}
}

func TestRestartPaused(t *testing.T) {
	s := startServer(t, Options{})
	if err := s.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if err := s.Restart(context.Background()); err != nil {
		t.Fatalf("Restart of a paused server: %v", err)
	}
	command(t, s.Addr(), "PING")
}

func TestStopRemovesDir(t *testing.T) {
	s := startServer(t, Options{})
	dir := s.Dir()
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Stat(%s) after Stop = %v, want not exist", dir, err)
	}
	if s.Pid() != 0 {
		t.Errorf("Pid() after Stop = %d, want 0", s.Pid())
	}
}

func TestBadArgsFailWithOutput(t *testing.T) {
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		testenv.Missing(t, "redis-server binary", err)
	}
	_, err := Start(context.Background(), Options{Args: []string{"--no-such-option", "x"}, ReadyTimeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "no-such-option") {
		t.Fatalf("Start with a bad option = %v, want an error quoting the server's complaint", err)
	}
}

func TestSentinel(t *testing.T) {
	master := startServer(t, Options{})
	s := startServer(t, Options{Sentinel: &Sentinel{MasterName: "m1", MasterAddr: master.Addr()}})
	if info := command(t, s.Addr(), "INFO", "sentinel"); !strings.Contains(info, "name=m1,status=ok,address="+master.Addr()) {
		t.Errorf("INFO sentinel = %q, want master m1 at %s", info, master.Addr())
	}
	conf, err := os.ReadFile(s.Dir() + "/sentinel.conf")
	if err != nil || !strings.Contains(string(conf), "down-after-milliseconds m1 1000") {
		t.Errorf("sentinel.conf = %q, %v; want the default down-after of 1000 ms", conf, err)
	}
}

func TestVersion(t *testing.T) {
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		testenv.Missing(t, "redis-server binary", err)
	}
	v, err := Version(context.Background(), "")
	if err != nil || !strings.HasPrefix(v, "Redis server") {
		t.Errorf("Version = %q, %v; want a Redis server version line", v, err)
	}
}
