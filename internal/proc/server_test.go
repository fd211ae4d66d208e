package proc

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serverArg makes the test binary a tiny server (see TestMain): a real
// process to start, pause, kill and restart, with nothing to install.
const serverArg = "proc-test-server"

func TestMain(m *testing.M) {
	if len(os.Args) == 4 && os.Args[1] == serverArg {
		os.Exit(testServer(os.Args[2], os.Args[3]))
	}
	os.Exit(m.Run())
}

// testServer counts its starts in dir/starts, answers every connection to
// addr with "pong" and exits 0 on SIGTERM.
func testServer(addr, dir string) int {
	path := filepath.Join(dir, "starts")
	b, _ := os.ReadFile(path)
	n, _ := strconv.Atoi(string(b))
	if err := os.WriteFile(path, []byte(strconv.Itoa(n+1)), 0o600); err != nil {
		fmt.Println(err)
		return 1
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, "pong")
			c.Close()
		}
	}()
	fmt.Println("serving", addr)
	<-term
	return 0
}

// ping reports whether the server at addr answers within 200 ms.
func ping(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == "pong\n"
}

func testSpec() Spec {
	return Spec{Name: "test-server", Path: os.Args[0], Ready: ping,
		Args: func(port int, dir string) ([]string, error) {
			return []string{serverArg, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir}, nil
		}}
}

func startTestServer(t *testing.T, spec Spec) *Server {
	t.Helper()
	s := NewServer(spec)
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return s
}

func starts(t *testing.T, s *Server) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir(), "starts"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestServerFaults walks a server through every fault: a hang, a kill, a
// restart on the same port and directory, and a graceful stop that
// removes the directory.
func TestServerFaults(t *testing.T) {
	ctx := context.Background()
	s := startTestServer(t, testSpec())
	addr, pid := s.Addr(), s.Pid()
	if pid == 0 || !ping(ctx, addr) || starts(t, s) != "1" {
		t.Fatalf("after Start: Pid() = %d, ping = %v, starts = %q; want a pid, an answer, 1", pid, ping(ctx, addr), starts(t, s))
	}
	if err := s.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if ping(ctx, addr) {
		t.Error("a paused server answered")
	}
	if err := s.Resume(); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if !ping(ctx, addr) {
		t.Error("a resumed server did not answer")
	}
	if err := s.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("a killed server's port accepted a connection")
	}
	if s.Pid() != 0 || s.Pause() == nil {
		t.Errorf("after Kill: Pid() = %d and Pause succeeded; want 0 and a not-running error", s.Pid())
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if s.Addr() != addr || s.Pid() == pid || s.Pid() == 0 || starts(t, s) != "2" {
		t.Errorf("after Restart: Addr() = %s, Pid() = %d, starts = %q; want %s, a new pid, 2", s.Addr(), s.Pid(), starts(t, s), addr)
	}
	dir := s.Dir()
	if err := s.Pause(); err != nil { // Stop must resume it to stop it gracefully
		t.Fatalf("Pause: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := s.Process().Err(); err != nil {
		t.Errorf("exit after Stop = %v, want a graceful exit 0", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Stat(%s) after Stop = %v, want not exist", dir, err)
	}
	if err := s.Restart(ctx); err == nil {
		t.Error("Restart after Stop = nil, want an error")
	}
}

// TestServerRestartPaused: a paused server restarts, and Terminate stops
// it with the signal asked for while leaving it restartable.
func TestServerRestartPaused(t *testing.T) {
	ctx := context.Background()
	spec := testSpec()
	spec.Dir = t.TempDir()
	s := startTestServer(t, spec)
	if err := s.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatalf("Restart of a paused server: %v", err)
	}
	if err := s.Terminate(syscall.SIGTERM); err != nil {
		t.Fatalf("Terminate(SIGTERM): %v", err)
	}
	if s.Running() || s.Process().Err() != nil {
		t.Errorf("after Terminate: Running() = %v, exit %v; want false, 0", s.Running(), s.Process().Err())
	}
	if err := s.Restart(ctx); err != nil || !ping(ctx, s.Addr()) {
		t.Fatalf("Restart after Terminate = %v, or no answer", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(spec.Dir); err != nil {
		t.Errorf("Stop removed the caller's directory: %v", err)
	}
}

// TestServerStartFails: a server that exits before it is ready fails
// Start with its output, and leaves no directory behind.
func TestServerStartFails(t *testing.T) {
	var dir string
	spec := testSpec()
	spec.Args = func(_ int, d string) ([]string, error) {
		dir = d
		return []string{serverArg, "256.0.0.1:1", d}, nil // an address it cannot listen on
	}
	s := NewServer(spec)
	err := s.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "256.0.0.1") {
		t.Fatalf("Start = %v, want an exited-before-ready error quoting the output", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Stat(%s) after a failed Start = %v, want not exist", dir, err)
	}
}
