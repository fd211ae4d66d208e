// Package redistest starts real redis-server processes (plain, replica,
// Sentinel) on free ports for tests, and kills (SIGKILL), pauses (SIGSTOP),
// resumes and restarts them, so fault tests exercise the real failure modes:
// connection refused, a hang, a restart with an empty dataset, a failover.
//
// Every process is stopped by its pid when the test ends. A missing
// redis-server binary skips the test, or fails it under CI=true. Call the
// helpers from the test goroutine: they fail the test with t.Fatalf.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outlast/outlast/internal/testenv"
)

// Binary is the redis-server executable; OUTLAST_TEST_REDIS_SERVER overrides it.
var Binary = func() string {
	if b := os.Getenv("OUTLAST_TEST_REDIS_SERVER"); b != "" {
		return b
	}
	return "/usr/bin/redis-server"
}()

const (
	readyTimeout = 10 * time.Second
	exitTimeout  = 5 * time.Second
	startTries   = 3       // a free port can be taken between FreePort and bind
	logBytesMax  = 1 << 16 // tail of the server's output kept for failure reports
)

// Server is one redis-server process (plain, replica or sentinel) on a fixed
// port that survives Restart. Its methods are not safe for concurrent use.
type Server struct {
	t    testing.TB
	Port int
	Addr string // 127.0.0.1:Port
	Dir  string // working directory (and sentinel.conf)
	args []string
	proc *process // nil when not running
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	out  *tail
}

// Start runs a plain, empty, non-persistent redis-server on a free port and
// waits until it answers PING. extraArgs are passed on, e.g.
// "--replicaof", "127.0.0.1", "6380".
func Start(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	return start(t, func(s *Server) []string {
		args := []string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--daemonize", "no",
			"--protected-mode", "no", "--dir", s.Dir, "--logfile", ""}
		return append(args, extraArgs...)
	})
}

// StartReplica runs a redis-server replicating master and waits until its
// replication link is up.
func StartReplica(t testing.TB, master *Server) *Server {
	t.Helper()
	// The default 5 s delay before a diskless full sync waits for more
	// replicas to share the transfer; a test has only this one.
	if _, err := Command(master.Addr, "CONFIG", "SET", "repl-diskless-sync-delay", "0"); err != nil {
		t.Fatalf("CONFIG SET on master %s: %v", master.Addr, err)
	}
	s := Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))
	testenv.WaitFor(t, readyTimeout, "replica "+s.Addr+" link up", func() bool {
		info, err := Command(s.Addr, "INFO", "replication")
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	return s
}

// SentinelConfig is the part of sentinel.conf a test chooses.
type SentinelConfig struct {
	MasterName  string // if "", "mymaster"
	Quorum      int    // if <= 0, 2
	DownAfterMs int    // if <= 0, 1000
	FailoverMs  int    // failover-timeout; if <= 0, 3000
}

// StartSentinel runs a sentinel monitoring master.
func StartSentinel(t testing.TB, master *Server, c SentinelConfig) *Server {
	t.Helper()
	if c.MasterName == "" {
		c.MasterName = "mymaster"
	}
	if c.Quorum <= 0 {
		c.Quorum = 2
	}
	if c.DownAfterMs <= 0 {
		c.DownAfterMs = 1000
	}
	if c.FailoverMs <= 0 {
		c.FailoverMs = 3000
	}
	return start(t, func(s *Server) []string {
		name := c.MasterName
		conf := fmt.Sprintf("port %d\nbind 127.0.0.1\ndaemonize no\nprotected-mode no\ndir %s\nlogfile \"\"\n",
			s.Port, s.Dir) +
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d\n", name, master.Port, c.Quorum) +
			fmt.Sprintf("sentinel down-after-milliseconds %s %d\n", name, c.DownAfterMs) +
			fmt.Sprintf("sentinel failover-timeout %s %d\n", name, c.FailoverMs) +
			fmt.Sprintf("sentinel parallel-syncs %s 1\n", name)
		path := filepath.Join(s.Dir, "sentinel.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatalf("write %s: %v", path, err)
		}
		return []string{path, "--sentinel"}
	})
}

func start(t testing.TB, args func(*Server) []string) *Server {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		testenv.Missing(t, "redis-server binary "+Binary, err)
		return nil
	}
	var lastErr error
	for range startTries {
		s := &Server{t: t, Dir: t.TempDir(), Port: testenv.FreePort(t)}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
		s.args = args(s)
		t.Cleanup(s.stop)
		if lastErr = s.launch(); lastErr == nil {
			return s
		}
		s.stop()
	}
	t.Fatalf("start redis-server: %v", lastErr)
	return nil
}

// launch starts the process and waits for PING, or reports why not.
func (s *Server) launch() error {
	p := &process{cmd: exec.Command(Binary, s.args...), done: make(chan struct{}), out: &tail{}}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("exec %s: %w", Binary, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	s.proc = p
	deadline := time.Now().Add(readyTimeout)
	for {
		if reply, err := Command(s.Addr, "PING"); err == nil && reply == "PONG" {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("redis-server on port %d exited: %s", s.Port, p.out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on port %d not ready after %s: %s", s.Port, readyTimeout, p.out.String())
		}
	}
}

// URL returns redis://Addr.
func (s *Server) URL() string { return "redis://" + s.Addr }

// Pid returns the process id, or 0 when not running.
func (s *Server) Pid() int {
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Kill sends SIGKILL and waits for the process to exit: the port then
// refuses connections.
func (s *Server) Kill() {
	s.t.Helper()
	if s.proc == nil {
		s.t.Fatalf("kill redis-server %s: not running", s.Addr)
	}
	s.signal(syscall.SIGKILL)
	select {
	case <-s.proc.done:
	case <-time.After(exitTimeout):
		s.t.Fatalf("redis-server %s (pid %d) did not exit %s after SIGKILL", s.Addr, s.Pid(), exitTimeout)
	}
	s.proc = nil
}

// Pause sends SIGSTOP: the kernel still accepts connections and buffers
// commands, but nothing answers — a hang, like a kernel panic.
func (s *Server) Pause() { s.t.Helper(); s.signal(syscall.SIGSTOP) }

// Resume sends SIGCONT after Pause.
func (s *Server) Resume() { s.t.Helper(); s.signal(syscall.SIGCONT) }

// Restart kills the process if it runs and starts it again on the same
// port with the same arguments; a plain server comes back empty.
func (s *Server) Restart() {
	s.t.Helper()
	if s.proc != nil {
		s.Kill()
	}
	if err := s.launch(); err != nil {
		s.t.Fatalf("restart: %v", err)
	}
}

// Output returns the tail of the server's log.
func (s *Server) Output() string {
	if s.proc == nil {
		return ""
	}
	return s.proc.out.String()
}

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	if s.proc == nil {
		s.t.Fatalf("signal %v to redis-server %s: not running", sig, s.Addr)
	}
	if err := syscall.Kill(s.Pid(), sig); err != nil {
		s.t.Fatalf("signal %v to redis-server %s (pid %d): %v", sig, s.Addr, s.Pid(), err)
	}
}

// stop kills the process by pid (SIGKILL also ends a stopped one) and
// waits for it; it is the t.Cleanup of every Server.
func (s *Server) stop() {
	if s.proc == nil {
		return
	}
	if s.t.Failed() {
		s.t.Logf("redis-server %s output:\n%s", s.Addr, s.proc.out.String())
	}
	_ = syscall.Kill(s.Pid(), syscall.SIGKILL)
	select {
	case <-s.proc.done:
	case <-time.After(exitTimeout):
		s.t.Errorf("redis-server %s (pid %d) did not exit after SIGKILL", s.Addr, s.Pid())
	}
	s.proc = nil
}

// Command sends one command over a fresh connection and returns the reply
// as text (simple string, integer or bulk string), or the error reply as an
// error. It needs no client library, so it can probe a server the code
// under test cannot reach. The whole exchange is bounded by one second.
func Command(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(c))
}

func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("%s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unsupported reply %q", line)
}

// tail keeps the last logBytesMax bytes written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (w *tail) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if over := len(w.buf) - logBytesMax; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
	}
	return len(p), nil
}

func (w *tail) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}

// StartSentinelGroup runs a master, one replica and three sentinels that
// watch it as masterName with quorum 2, down-after-milliseconds 1000 and
// failover-timeout 3000, and waits until every sentinel knows the other two
// and the replica.
func StartSentinelGroup(t testing.TB, masterName string) (master, replica *Server, addrs []string) {
	t.Helper()
	master = Start(t)
	replica = StartReplica(t, master)
	for range 3 {
		s := StartSentinel(t, master, SentinelConfig{
			MasterName: masterName, Quorum: 2, DownAfterMs: 1000, FailoverMs: 3000,
		})
		addrs = append(addrs, s.Addr)
	}
	for _, addr := range addrs {
		c := goredis.NewSentinelClient(&goredis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second})
		testenv.WaitFor(t, 15*time.Second, "sentinel "+addr+" to discover peers and replica", func() bool {
			m, err := c.Master(context.Background(), masterName).Result()
			if err != nil || m["num-other-sentinels"] != "2" || m["num-slaves"] != "1" {
				return false
			}
			peers, err := c.Sentinels(context.Background(), masterName).Result()
			if err != nil {
				return false
			}
			for _, p := range peers {
				if p["flags"] != "sentinel" { // not yet connected, or down
					return false
				}
			}
			return true
		})
		c.Close()
	}
	return master, replica, addrs
}
