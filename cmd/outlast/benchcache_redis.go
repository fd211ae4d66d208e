package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// benchRedisBinary is the redis-server the cache benchmark runs;
// OUTLAST_BENCH_REDIS_SERVER overrides it.
func benchRedisBinary() string {
	if b := os.Getenv("OUTLAST_BENCH_REDIS_SERVER"); b != "" {
		return b
	}
	return "redis-server"
}

const (
	benchRedisReadyTimeout = 10 * time.Second
	benchRedisExitTimeout  = 5 * time.Second
	benchRedisPingTimeout  = 200 * time.Millisecond
)

// benchRedis is a private, empty, non-persistent redis-server on a port of
// its own (never the shared one on 6379), which the benchmark kills
// (SIGKILL: connection refused), pauses (SIGSTOP: a hang) and restarts
// empty on the same port. It is not safe for concurrent use.
type benchRedis struct {
	port int
	addr string
	dir  string
	cmd  *exec.Cmd     // nil when not running
	done chan struct{} // closed when cmd has exited
}

// startBenchRedis starts a redis-server on a free port with its working
// directory in dir and waits until it answers PING.
func startBenchRedis(dir string) (*benchRedis, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	r := &benchRedis{port: port, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir}
	if err := r.launch(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *benchRedis) url() string { return "redis://" + r.addr + "/0" }

func (r *benchRedis) launch() error {
	cmd := exec.Command(benchRedisBinary(), "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
		"--dir", r.dir, "--logfile", "", "--loglevel", "warning")
	// Dies with the benchmark if it is killed before it can clean up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", benchRedisBinary(), err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	r.cmd, r.done = cmd, done
	deadline := time.Now().Add(benchRedisReadyTimeout)
	for {
		if benchRedisPing(r.addr) == nil {
			return nil
		}
		select {
		case <-done:
			r.cmd = nil
			return fmt.Errorf("redis-server on port %d exited at start", r.port)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.stop()
			return fmt.Errorf("redis-server on port %d not ready after %s", r.port, benchRedisReadyTimeout)
		}
	}
}

// kill sends SIGKILL (which also ends a stopped process) and waits for the
// exit, so the port refuses connections from then on.
func (r *benchRedis) kill() error {
	if r.cmd == nil {
		return errors.New("redis-server not running")
	}
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill redis-server pid %d: %w", r.cmd.Process.Pid, err)
	}
	select {
	case <-r.done:
	case <-time.After(benchRedisExitTimeout):
		return fmt.Errorf("redis-server pid %d still running %s after SIGKILL", r.cmd.Process.Pid, benchRedisExitTimeout)
	}
	r.cmd = nil
	return nil
}

// pause sends SIGSTOP: the kernel still accepts connections and buffers
// commands, but nothing answers.
func (r *benchRedis) pause() error {
	if r.cmd == nil {
		return errors.New("redis-server not running")
	}
	return r.cmd.Process.Signal(syscall.SIGSTOP)
}

// restartEmpty kills the process (running or stopped) and starts a fresh,
// empty one on the same port.
func (r *benchRedis) restartEmpty() error {
	if r.cmd != nil {
		if err := r.kill(); err != nil {
			return err
		}
	}
	return r.launch()
}

// stop kills the process by its pid, if it runs; for deferred cleanup.
func (r *benchRedis) stop() {
	if r.cmd != nil {
		_ = r.kill()
	}
}

func benchRedisPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, benchRedisPingTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(benchRedisPingTimeout))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING: %q", line)
	}
	return nil
}

// benchRedisVersion returns the redis-server version line, for the report.
func benchRedisVersion() string {
	out, err := exec.Command(benchRedisBinary(), "--version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// quietRedisLog is go-redis's logger during the benchmark: a dead Redis
// makes every pool dial log a line, thousands per second, which would bury
// the report and cost CPU the contenders need. It passes on one line per
// second and counts the rest.
type quietRedisLog struct {
	w          io.Writer
	mu         sync.Mutex
	last       time.Time
	suppressed int64
}

func (q *quietRedisLog) Printf(_ context.Context, format string, v ...any) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if time.Since(q.last) < time.Second {
		q.suppressed++
		return
	}
	q.last = time.Now()
	fmt.Fprintf(q.w, "go-redis: "+format+" (%d similar lines suppressed)\n", append(v, q.suppressed)...)
	q.suppressed = 0
}

var quietRedisLogOnce sync.Once

// quietenRedisLog installs quietRedisLog for the process; go-redis has one
// global logger.
func quietenRedisLog(w io.Writer) {
	quietRedisLogOnce.Do(func() { goredis.SetLogger(&quietRedisLog{w: w}) })
}
