// Package natsproc runs a private nats-server with JetStream on a free port
// of its own, and kills (SIGKILL), pauses and restarts it, so that tests and
// benchmarks meet a real broker dying. It never touches a server it did not
// start.
//
// It returns errors rather than failing a test, so benchmark code uses it
// as it is.
package natsproc

import (
	"context"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/outlast/outlast/internal/proc"
)

const (
	// DefaultBinary is the nats-server run when Options.Binary is "".
	DefaultBinary = "nats-server"
	// DefaultReadyTimeout bounds a start when Options.ReadyTimeout <= 0.
	DefaultReadyTimeout = proc.DefaultReadyTimeout
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

// Server is one nats-server on a port and store directory that survive
// Restart, so what JetStream made durable is back after it: a proc.Server
// that greets with INFO. Kill, Pause, Resume, Restart, Stop, Pid, Addr
// and Output are proc.Server's. Its methods are not safe for concurrent
// use.
type Server struct {
	*proc.Server
}

// Start runs a nats-server with JetStream on a free port and waits until it
// accepts connections.
func Start(ctx context.Context, o Options) (*Server, error) {
	bin := o.Binary
	if bin == "" {
		bin = DefaultBinary
	}
	s := proc.NewServer(proc.Spec{Name: "nats-server", Path: bin, Ready: greets, Dir: o.Dir,
		ReadyTimeout: o.ReadyTimeout, Output: o.Log,
		Args: func(port int, dir string) ([]string, error) {
			return []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir}, nil
		}})
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	return &Server{Server: s}, nil
}

// greets reports whether addr accepts a connection and greets with INFO.
func greets(ctx context.Context, addr string) bool {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	b := make([]byte, 4)
	_, err = io.ReadFull(c, b)
	return err == nil && string(b) == "INFO"
}

// URL returns nats://Addr.
func (s *Server) URL() string { return "nats://" + s.Addr() }
