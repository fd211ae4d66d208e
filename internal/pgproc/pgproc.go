// Package pgproc runs a private PostgreSQL server on a free port of its
// own, with a fresh data directory, and crashes (immediate shutdown),
// kills, pauses and restarts it, so that tests, benchmarks and the lab can
// stop a database without touching the shared one. It never touches a
// server it did not start.
//
// It returns errors rather than failing a test; internal/testenv wraps it
// for tests.
package pgproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outlast/outlast/internal/proc"
)

const (
	// DefaultReadyTimeout bounds a start when Options.ReadyTimeout <= 0:
	// crash recovery replays the WAL before the server takes connections.
	DefaultReadyTimeout = time.Minute
	// probeTimeout bounds one readiness probe.
	probeTimeout = time.Second
)

// Options says which PostgreSQL to run.
type Options struct {
	// BinDir holds initdb and postgres; if "", they are looked up in PATH.
	BinDir string
	// Dir holds the data directory (Dir/data) and the Unix socket; if "",
	// a new temporary directory that Stop removes.
	Dir string
	// ReadyTimeout bounds each wait for the server to take connections, at
	// start and restart; if <= 0, DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Log also receives the server's output (its log goes to stderr).
	Log io.Writer
}

// Server is one PostgreSQL server on a port and data directory that
// survive Restart: a proc.Server that takes connections. Kill, Pause,
// Resume, Restart, Stop, Pid, Addr, Port, Dir and Output are
// proc.Server's; Stop shuts it down fast (SIGINT). Kill and Pause reach
// the postmaster alone: after Kill its backends linger a moment (Crash
// waits for them), and while it is paused new connections hang but open
// sessions go on. Its methods are not safe for concurrent use.
type Server struct {
	*proc.Server
}

// Start initialises a data directory with initdb (trust authentication,
// superuser "postgres") and runs postgres on a free port, waiting until
// it takes connections. PostgreSQL refuses to run as root, so under root
// both run as the "postgres" user; its absence is an error wrapping
// ErrNoUser.
func Start(ctx context.Context, o Options) (*Server, error) {
	initdb, err := lookPath(o.BinDir, "initdb")
	if err != nil {
		return nil, err
	}
	postgres, err := lookPath(o.BinDir, "postgres")
	if err != nil {
		return nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		if cred, err = postgresUser(); err != nil {
			return nil, err
		}
	}
	s := proc.NewServer(proc.Spec{Name: "postgres", Path: postgres, Ready: takesConnections,
		Dir: o.Dir, ReadyTimeout: orDefault(o.ReadyTimeout, DefaultReadyTimeout), Output: o.Log,
		StopSignal: syscall.SIGINT, StopTimeout: time.Minute, Credential: cred,
		Args: func(port int, dir string) ([]string, error) {
			data := filepath.Join(dir, "data")
			if err := initDB(ctx, initdb, data, cred); err != nil {
				return nil, err
			}
			// fsync stays on: the ledger's durability is what is under test.
			return []string{"-D", data, "-p", strconv.Itoa(port), "-k", dir, "-c", "listen_addresses=127.0.0.1"}, nil
		}})
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	return &Server{Server: s}, nil
}

// DSN returns the URL of the server's postgres database.
func (s *Server) DSN() string { return dsn(s.Addr()) }

func dsn(addr string) string {
	return "postgres://postgres@" + addr + "/postgres?sslmode=disable"
}

// Crash shuts the server down at once (SIGQUIT, pg_ctl's immediate mode),
// as a crash would: sessions are cut, nothing is checkpointed, and
// Restart recovers from the WAL. Unlike Kill, it waits for the server's
// backends to exit, so Restart finds no shared memory still in use.
func (s *Server) Crash() error { return s.Terminate(syscall.SIGQUIT) }

// takesConnections reports whether a session opens on the server at addr.
func takesConnections(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn(addr))
	if err != nil {
		return false
	}
	return c.Close(ctx) == nil
}

// initDB runs initdb into data unless it holds a cluster already (a start
// tried again on another port reuses it).
func initDB(ctx context.Context, initdb, data string, cred *syscall.Credential) error {
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err == nil {
		return nil
	}
	cmd := exec.CommandContext(ctx, initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = "/" // the caller's directory may be closed to the postgres user
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	return nil
}

// ErrNoUser is wrapped by the error of a start as root on a machine
// without a "postgres" user.
var ErrNoUser = errors.New(`no "postgres" user to run PostgreSQL as (it refuses root)`)

func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoUser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("postgres uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("postgres gid %q: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// lookPath finds name in dir, or in PATH when dir is "". A missing binary
// is an error wrapping exec.ErrNotFound.
func lookPath(dir, name string) (string, error) {
	if dir != "" {
		name = filepath.Join(dir, name)
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("PostgreSQL server binary: %w", err)
	}
	return path, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
