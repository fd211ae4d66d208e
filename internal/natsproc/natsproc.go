// Package natsproc runs a private nats-server with JetStream on a free port
// of its own, and kills (SIGKILL) and restarts it, so that tests and
// benchmarks meet a real broker dying. It never touches a server it did not
// start.
//
// It returns errors rather than failing a test, so benchmark code uses it
// as it is.
package natsproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/outlast/outlast/internal/proc"
)

const (
	// DefaultBinary is the nats-server run when Options.Binary is "".
	DefaultBinary = "nats-server"
	// DefaultReadyTimeout bounds a start when Options.ReadyTimeout <= 0.
	DefaultReadyTimeout = 10 * time.Second

	exitTimeout = 5 * time.Second
	startTries  = 3 // a free port can be taken between picking it and the bind
)

// Options says which nats-server to run.
type Options struct {
	Binary string // nats-server executable; if "", DefaultBinary from PATH
	// Dir is the JetStream store directory; if "", a new temporary
	// directory that Stop removes.
	Dir string
	// ReadyTimeout bounds each wait for the server to accept connections;
	// if <= 0, DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Log also receives the server's output.
	Log io.Writer
}

// Server is one nats-server on a port that survives Restart. Its methods
// are not safe for concurrent use.
type Server struct {
	binary       string
	port         int
	addr         string
	dir          string
	removeDir    bool
	readyTimeout time.Duration
	log          io.Writer
	p            *proc.Process
}

// Start runs a nats-server with JetStream on a free port and waits until it
// accepts connections.
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
		if s.dir, err = os.MkdirTemp("", "natsproc-"); err != nil {
			return nil, fmt.Errorf("nats-server directory: %w", err)
		}
		s.removeDir = true
	}
	return s, nil
}

// launch starts the process and waits until its port accepts a
// connection and it greets with INFO; a process that does not is killed.
func (s *Server) launch(ctx context.Context) error {
	p, err := proc.Start(proc.Options{Path: s.binary, Dir: s.dir, Output: s.log,
		Args: []string{"-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-js", "-sd", s.dir}})
	if err != nil {
		return err
	}
	s.p = p
	ctx, cancel := context.WithTimeout(ctx, s.readyTimeout)
	defer cancel()
	err = p.WaitReady(ctx, func(ctx context.Context) bool {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", s.addr)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		b := make([]byte, 4)
		_, err = io.ReadFull(c, b)
		return err == nil && string(b) == "INFO"
	})
	if err != nil {
		return errors.Join(fmt.Errorf("nats-server on %s: %w; output:\n%s", s.addr, err, p.Output()),
			p.Stop(syscall.SIGKILL, exitTimeout))
	}
	return nil
}

// Addr returns 127.0.0.1:port.
func (s *Server) Addr() string { return s.addr }

// URL returns nats://Addr.
func (s *Server) URL() string { return "nats://" + s.addr }

// Pid returns the process id, or 0 when not running.
func (s *Server) Pid() int {
	if !s.running() {
		return 0
	}
	return s.p.Pid()
}

func (s *Server) running() bool { return s.p != nil && !s.p.Exited() }

// Kill sends SIGKILL and waits for the exit, so the port refuses
// connections from then on.
func (s *Server) Kill() error {
	if !s.running() {
		return fmt.Errorf("kill nats-server %s: not running", s.addr)
	}
	return s.p.Stop(syscall.SIGKILL, exitTimeout)
}

// Restart kills the server if it runs and starts it again on the same
// port and store directory: what JetStream made durable is back.
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
