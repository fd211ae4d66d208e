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
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/outlast/outlast/internal/proc"
)

const (
	// DefaultBinary is the redis-server run when Options.Binary is "".
	DefaultBinary = "redis-server"
	// DefaultReadyTimeout bounds a start when Options.ReadyTimeout <= 0.
	DefaultReadyTimeout = proc.DefaultReadyTimeout
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

// Server is one redis-server on a port that survives Restart: a
// proc.Server that answers PING. Kill, Pause, Resume, Restart, Stop, Pid,
// Addr, Port, Dir and Output are proc.Server's. Its methods are not safe
// for concurrent use.
type Server struct {
	*proc.Server
}

// Start runs a redis-server on a free port and waits until it answers
// PING, for at most ReadyTimeout or until ctx ends. A plain server is
// empty and does not persist anything.
func Start(ctx context.Context, o Options) (*Server, error) {
	args := func(port int, dir string) ([]string, error) {
		if o.Sentinel == nil {
			return append(plainArgs(port, dir), o.Args...), nil
		}
		a, err := sentinelArgs(port, dir, *o.Sentinel)
		return append(a, o.Args...), err
	}
	s := proc.NewServer(proc.Spec{Name: "redis-server", Path: orDefault(o.Binary, DefaultBinary), Args: args,
		Ready: ping, Dir: o.Dir, ReadyTimeout: o.ReadyTimeout, Output: o.Log})
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	return &Server{Server: s}, nil
}

func ping(ctx context.Context, addr string) bool {
	reply, err := Command(ctx, addr, "PING")
	return err == nil && reply == "PONG"
}

// plainArgs keep nothing on disk, so a restart comes back empty.
func plainArgs(port int, dir string) []string {
	return []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--protected-mode", "no", "--dir", dir, "--logfile", ""}
}

// sentinelArgs writes sentinel.conf, which a sentinel must be able to
// rewrite, and returns the arguments that run it.
func sentinelArgs(port int, dir string, c Sentinel) ([]string, error) {
	host, masterPort, err := net.SplitHostPort(c.MasterAddr)
	if err != nil {
		return nil, fmt.Errorf("sentinel master address %q: %w", c.MasterAddr, err)
	}
	name := orDefault(c.MasterName, "mymaster")
	conf := fmt.Sprintf("port %d\nbind 127.0.0.1\ndaemonize no\nprotected-mode no\ndir %s\nlogfile \"\"\n", port, dir) +
		fmt.Sprintf("sentinel monitor %s %s %s %d\n", name, host, masterPort, orDefault(c.Quorum, 2)) +
		fmt.Sprintf("sentinel down-after-milliseconds %s %d\n", name, orDefault(c.DownAfter, time.Second).Milliseconds()) +
		fmt.Sprintf("sentinel failover-timeout %s %d\n", name, orDefault(c.FailoverTimeout, 3*time.Second).Milliseconds()) +
		fmt.Sprintf("sentinel parallel-syncs %s 1\n", name)
	path := filepath.Join(dir, "sentinel.conf")
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

// URL returns redis://Addr.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Version returns the version line of the redis-server binary ("" for
// DefaultBinary).
func Version(ctx context.Context, binary string) (string, error) {
	out, err := exec.CommandContext(ctx, orDefault(binary, DefaultBinary), "--version").Output()
	if err != nil {
		return "", fmt.Errorf("redis-server --version: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}
