// Package redisproc runs a private redis-server (plain, replica or
// Sentinel) on a free port of its own, and kills (SIGKILL), pauses
// (SIGSTOP), resumes and restarts it, so that tests and benchmarks meet
// the real failure modes: connection refused, a hang, a restart with an
// empty dataset, a failover. It never touches a server it did not start.
//
// It returns errors rather than failing a test, so the benchmark binary
// uses it as it is; redis/redistest wraps it for tests.
package redisproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/outlast/outlast/internal/proc"
)

const (
	// DefaultBinary is the redis-server run when Options.Binary is "".
	DefaultBinary = "redis-server"
	// DefaultReadyTimeout bounds a start when Options.ReadyTimeout <= 0.
	DefaultReadyTimeout = 10 * time.Second

	exitTimeout = 5 * time.Second
	startTries  = 3 // a free port can be taken between picking it and the bind
)

// Options says which redis-server to run.
type Options struct {
	Binary string // redis-server executable; if "", DefaultBinary from PATH
	// Dir is the working directory (--dir, and sentinel.conf); if "", a new
	// temporary directory that Stop removes.
	Dir string
	// Args are passed on after the defaults, e.g. "--replicaof",
	// "127.0.0.1", "6380" or "--loglevel", "warning".
	Args []string
	// Sentinel, if set, makes the server a sentinel monitoring a master.
	Sentinel *Sentinel
	// ReadyTimeout bounds each wait for the server to answer PING, at start
	// and restart; if <= 0, DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Log also receives the server's output; the tail is kept for Output
	// either way.
	Log io.Writer
}

// Sentinel is the part of sentinel.conf a caller chooses.
type Sentinel struct {
	MasterName      string        // if "", "mymaster"
	MasterAddr      string        // host:port of the master; required
	Quorum          int           // if <= 0, 2
	DownAfter       time.Duration // down-after-milliseconds; if <= 0, 1 s
	FailoverTimeout time.Duration // failover-timeout; if <= 0, 3 s
}

// Server is one redis-server on a port that survives Restart. Its methods
// are not safe for concurrent use.
type Server struct {
	binary       string
	port         int
	addr         string // 127.0.0.1:port
	dir          string
	removeDir    bool // dir was made by Start, and Stop removes it
	args         []string
	readyTimeout time.Duration
	log          io.Writer
	p            *proc.Process // the latest process; nil before the first
}

// Start runs a redis-server on a free port and waits until it answers
// PING, for at most ReadyTimeout or until ctx ends. A plain server is
// empty and does not persist anything.
func Start(ctx context.Context, o Options) (*Server, error) {
	var err error
	for range startTries {
		var s *Server
		if s, err = newServer(o); err != nil {
			return nil, err
		}
		if err = s.launch(ctx); err == nil {
			return s, nil
		}
		if serr := s.Stop(); serr != nil {
			return nil, errors.Join(err, serr)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

func newServer(o Options) (*Server, error) {
	port, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{binary: o.Binary, port: port, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		dir: o.Dir, readyTimeout: o.ReadyTimeout, log: o.Log}
	if s.binary == "" {
		s.binary = DefaultBinary
	}
	if s.readyTimeout <= 0 {
		s.readyTimeout = DefaultReadyTimeout
	}
	if s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "redisproc-"); err != nil {
			return nil, fmt.Errorf("redis-server directory: %w", err)
		}
		s.removeDir = true
	}
	if o.Sentinel == nil {
		s.args = s.plainArgs()
	} else if s.args, err = s.sentinelArgs(*o.Sentinel); err != nil {
		return nil, errors.Join(err, s.Stop())
	}
	s.args = append(s.args, o.Args...)
	return s, nil
}

// plainArgs keep nothing on disk, so a restart comes back empty.
func (s *Server) plainArgs() []string {
	return []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--protected-mode", "no", "--dir", s.dir, "--logfile", ""}
}

// sentinelArgs writes sentinel.conf, which a sentinel must be able to
// rewrite, and returns the arguments that run it.
func (s *Server) sentinelArgs(c Sentinel) ([]string, error) {
	host, port, err := net.SplitHostPort(c.MasterAddr)
	if err != nil {
		return nil, fmt.Errorf("sentinel master address %q: %w", c.MasterAddr, err)
	}
	name := orDefault(c.MasterName, "mymaster")
	conf := fmt.Sprintf("port %d\nbind 127.0.0.1\ndaemonize no\nprotected-mode no\ndir %s\nlogfile \"\"\n", s.port, s.dir) +
		fmt.Sprintf("sentinel monitor %s %s %s %d\n", name, host, port, orDefault(c.Quorum, 2)) +
		fmt.Sprintf("sentinel down-after-milliseconds %s %d\n", name, orDefault(c.DownAfter, time.Second).Milliseconds()) +
		fmt.Sprintf("sentinel failover-timeout %s %d\n", name, orDefault(c.FailoverTimeout, 3*time.Second).Milliseconds()) +
		fmt.Sprintf("sentinel parallel-syncs %s 1\n", name)
	path := filepath.Join(s.dir, "sentinel.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return []string{path, "--sentinel"}, nil
}

// orDefault returns v, or def when v is the zero value or negative.
func orDefault[T int | time.Duration | string](v, def T) T {
	var zero T
	if v <= zero {
		return def
	}
	return v
}

// launch starts the process and waits until it answers PING; a process
// that does not is killed.
func (s *Server) launch(ctx context.Context) error {
	p, err := proc.Start(proc.Options{Path: s.binary, Args: s.args, Dir: s.dir, Output: s.log})
	if err != nil {
		return err
	}
	s.p = p
	ctx, cancel := context.WithTimeout(ctx, s.readyTimeout)
	defer cancel()
	err = p.WaitReady(ctx, func(ctx context.Context) bool {
		reply, err := Command(ctx, s.addr, "PING")
		return err == nil && reply == "PONG"
	})
	if err != nil {
		return errors.Join(fmt.Errorf("redis-server on %s: %w; output:\n%s", s.addr, err, p.Output()),
			p.Stop(syscall.SIGKILL, exitTimeout))
	}
	return nil
}

// Addr returns 127.0.0.1:port.
func (s *Server) Addr() string { return s.addr }

// Port returns the port, the same across restarts.
func (s *Server) Port() int { return s.port }

// URL returns redis://Addr.
func (s *Server) URL() string { return "redis://" + s.addr }

// Dir returns the working directory.
func (s *Server) Dir() string { return s.dir }

// Pid returns the process id, or 0 when not running.
func (s *Server) Pid() int {
	if !s.running() {
		return 0
	}
	return s.p.Pid()
}

func (s *Server) running() bool { return s.p != nil && !s.p.Exited() }

// Kill sends SIGKILL (which also ends a paused server) and waits for the
// exit, so the port refuses connections from then on.
func (s *Server) Kill() error {
	if !s.running() {
		return fmt.Errorf("kill redis-server %s: not running", s.addr)
	}
	return s.p.Stop(syscall.SIGKILL, exitTimeout)
}

// Pause sends SIGSTOP: the kernel still accepts connections and buffers
// commands, but nothing answers — a hang, like a kernel panic.
func (s *Server) Pause() error { return s.signal(syscall.SIGSTOP) }

// Resume sends SIGCONT after Pause.
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	if !s.running() {
		return fmt.Errorf("signal %v to redis-server %s: not running", sig, s.addr)
	}
	return s.p.Signal(sig)
}

// Restart kills the server if it runs, paused or not, and starts it again
// on the same port with the same arguments; a plain server comes back
// empty.
func (s *Server) Restart(ctx context.Context) error {
	if s.running() {
		if err := s.Kill(); err != nil {
			return err
		}
	}
	return s.launch(ctx)
}

// Stop kills the server if it runs and removes the directory Start made.
// It may be called more than once.
func (s *Server) Stop() error {
	var err error
	if s.p != nil {
		err = s.p.Stop(syscall.SIGKILL, exitTimeout)
	}
	if s.removeDir && err == nil {
		err = os.RemoveAll(s.dir)
	}
	return err
}

// Output returns the tail of the latest process's output.
func (s *Server) Output() string {
	if s.p == nil {
		return ""
	}
	return s.p.Output()
}

// Version returns the version line of the redis-server binary ("" for
// DefaultBinary).
func Version(ctx context.Context, binary string) (string, error) {
	out, err := exec.CommandContext(ctx, orDefault(binary, DefaultBinary), "--version").Output()
	if err != nil {
		return "", fmt.Errorf("redis-server --version: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}
