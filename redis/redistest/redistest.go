// Package redistest starts real redis-server processes (plain, replica,
// Sentinel) on free ports for tests, and kills (SIGKILL), pauses (SIGSTOP),
// resumes and restarts them, so fault tests exercise the real failure modes:
// connection refused, a hang, a restart with an empty dataset, a failover.
//
// It is a thin testing.TB wrapper over internal/redisproc: every process is
// stopped by its own handle when the test ends, a missing redis-server
// binary skips the test (or fails it under CI=true), and an error fails the
// test. Call the helpers from the test goroutine: they use t.Fatalf.
package redistest

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outlast/outlast/internal/redisproc"
	"github.com/outlast/outlast/internal/testenv"
)

// Binary is the redis-server executable; OUTLAST_TEST_REDIS_SERVER overrides it.
var Binary = func() string {
	if b := os.Getenv("OUTLAST_TEST_REDIS_SERVER"); b != "" {
		return b
	}
	return "/usr/bin/redis-server"
}()

const readyTimeout = 10 * time.Second

// Server is one redis-server process (plain, replica or sentinel) on a fixed
// port that survives Restart. Its methods are not safe for concurrent use.
type Server struct {
	t    testing.TB
	srv  *redisproc.Server
	Port int
	Addr string // 127.0.0.1:Port
	Dir  string // working directory (and sentinel.conf)
}

// Start runs a plain, empty, non-persistent redis-server on a free port and
// waits until it answers PING. extraArgs are passed on, e.g.
// "--replicaof", "127.0.0.1", "6380".
func Start(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	return start(t, redisproc.Options{Args: extraArgs})
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

// StartSentinel runs a sentinel monitoring master; c.MasterAddr is set to
// master's address, and the other fields' defaults are redisproc's.
func StartSentinel(t testing.TB, master *Server, c redisproc.Sentinel) *Server {
	t.Helper()
	c.MasterAddr = master.Addr
	return start(t, redisproc.Options{Sentinel: &c})
}

func start(t testing.TB, o redisproc.Options) *Server {
	t.Helper()
	if _, err := exec.LookPath(Binary); err != nil {
		testenv.Missing(t, "redis-server binary "+Binary, err)
		return nil
	}
	o.Binary, o.Dir, o.ReadyTimeout = Binary, t.TempDir(), readyTimeout
	srv, err := redisproc.Start(context.Background(), o)
	if err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	s := &Server{t: t, srv: srv, Port: srv.Port(), Addr: srv.Addr(), Dir: srv.Dir()}
	t.Cleanup(s.stop)
	return s
}

// URL returns redis://Addr.
func (s *Server) URL() string { return s.srv.URL() }

// Pid returns the process id, or 0 when not running.
func (s *Server) Pid() int { return s.srv.Pid() }

// Kill sends SIGKILL and waits for the process to exit: the port then
// refuses connections.
func (s *Server) Kill() { s.t.Helper(); s.check(s.srv.Kill()) }

// Pause sends SIGSTOP: the kernel still accepts connections and buffers
// commands, but nothing answers — a hang, like a kernel panic.
func (s *Server) Pause() { s.t.Helper(); s.check(s.srv.Pause()) }

// Resume sends SIGCONT after Pause.
func (s *Server) Resume() { s.t.Helper(); s.check(s.srv.Resume()) }

// Restart kills the process if it runs and starts it again on the same
// port with the same arguments; a plain server comes back empty.
func (s *Server) Restart() { s.t.Helper(); s.check(s.srv.Restart(context.Background())) }

// Output returns the tail of the server's log.
func (s *Server) Output() string { return s.srv.Output() }

func (s *Server) check(err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatalf("redis-server %s: %v", s.Addr, err)
	}
}

// stop is the t.Cleanup of every Server; a failed test gets the server's
// log.
func (s *Server) stop() {
	if s.t.Failed() {
		s.t.Logf("redis-server %s output:\n%s", s.Addr, s.srv.Output())
	}
	if err := s.srv.Stop(); err != nil {
		s.t.Errorf("stop redis-server %s: %v", s.Addr, err)
	}
}

// Command sends one command to addr over a fresh connection, bounded by one
// second; see redisproc.Command.
func Command(addr string, args ...string) (string, error) {
	return redisproc.Command(context.Background(), addr, args...)
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
		s := StartSentinel(t, master, redisproc.Sentinel{
			MasterName: masterName, Quorum: 2, DownAfter: time.Second, FailoverTimeout: 3 * time.Second,
		})
		addrs = append(addrs, s.Addr)
	}
	for _, addr := range addrs {
		waitSentinelReady(t, addr, masterName)
	}
	return master, replica, addrs
}

// waitSentinelReady waits until the sentinel at addr sees both other
// sentinels connected and the replica.
func waitSentinelReady(t testing.TB, addr, masterName string) {
	t.Helper()
	c := goredis.NewSentinelClient(&goredis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer c.Close()
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
}
