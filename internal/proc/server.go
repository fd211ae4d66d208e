package proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Defaults for Spec fields left at their zero value.
const (
	DefaultReadyTimeout = 10 * time.Second
	DefaultStopTimeout  = 5 * time.Second

	// killTimeout bounds the wait for a SIGKILLed process to be gone.
	killTimeout = 5 * time.Second
	// startTries bounds the starts on fresh free ports: another process
	// can take a free port between picking it and the server's bind.
	startTries = 3
	// outputShownBytes is how much of a failed start's output its error
	// quotes.
	outputShownBytes = 4096
)

// Spec says how to run a server.
type Spec struct {
	Name string // for messages; if "", the base name of Path
	Path string // executable; required
	// Args returns the arguments that run the server on 127.0.0.1:port
	// with its data in dir. It is called once per port Start tries, and
	// may prepare dir (write a config file, initialise a data directory);
	// Restart reuses its result. Required.
	Args func(port int, dir string) ([]string, error)
	// Ready reports whether the server at addr (127.0.0.1:port) serves;
	// it is polled every 10 ms after each start. Required.
	Ready func(ctx context.Context, addr string) bool
	// Port is the port to listen on; if 0, a free one, and a start that
	// fails is tried again (up to three times) on another.
	Port int
	// Dir is the working and data directory; if "", a new temporary
	// directory that Stop removes.
	Dir string
	// ReadyTimeout bounds each wait for Ready, at Start and Restart; if
	// <= 0, DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// StopSignal asks the server to exit gracefully; if nil, SIGTERM.
	StopSignal os.Signal
	// StopTimeout bounds Stop's and Terminate's wait for the exit; if
	// <= 0, DefaultStopTimeout.
	StopTimeout time.Duration
	// Output also receives the server's output; the tail is kept for
	// Output either way.
	Output io.Writer
	// Credential, if set, runs the server as another user and gives it
	// the temporary directory Start makes.
	Credential *syscall.Credential
}

// Server is one server process on a port and directory that survive
// Restart, with the faults a test, benchmark or the lab injects: Kill,
// Pause, Resume, Restart. It never touches a process it did not start.
// Its methods are not safe for concurrent use.
type Server struct {
	spec      Spec
	port      int
	dir       string
	removeDir bool     // dir was made by Start, and Stop removes it
	args      []string // Spec.Args's result for port
	p         *Process // the latest process; nil before the first
	stopped   bool     // Stop was called
}

// NewServer returns a server of spec, not yet started.
func NewServer(spec Spec) *Server {
	if spec.Name == "" {
		spec.Name = filepath.Base(spec.Path)
	}
	if spec.ReadyTimeout <= 0 {
		spec.ReadyTimeout = DefaultReadyTimeout
	}
	if spec.StopSignal == nil {
		spec.StopSignal = syscall.SIGTERM
	}
	if spec.StopTimeout <= 0 {
		spec.StopTimeout = DefaultStopTimeout
	}
	return &Server{spec: spec}
}

// Start starts the server and waits until it is ready, for at most
// ReadyTimeout or until ctx ends. A server that fails to start is
// stopped, its temporary directory removed.
func (s *Server) Start(ctx context.Context) error {
	if s.p != nil || s.stopped {
		return fmt.Errorf("start %s: already started", s.spec.Name)
	}
	if s.spec.Path == "" || s.spec.Args == nil || s.spec.Ready == nil {
		return errors.New("proc: a server spec needs Path, Args and Ready")
	}
	if err := s.makeDir(); err != nil {
		return err
	}
	tries := 1
	if s.spec.Port == 0 {
		tries = startTries
	}
	var err error
	for range tries {
		if err = s.startOnce(ctx); err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return errors.Join(err, s.Stop())
	}
	return nil
}

func (s *Server) makeDir() error {
	s.dir = s.spec.Dir
	if s.dir != "" {
		return nil
	}
	dir, err := os.MkdirTemp("", "proc-"+s.spec.Name+"-")
	if err != nil {
		return fmt.Errorf("%s directory: %w", s.spec.Name, err)
	}
	s.dir, s.removeDir = dir, true
	if c := s.spec.Credential; c != nil {
		if err := os.Chown(dir, int(c.Uid), int(c.Gid)); err != nil {
			return errors.Join(fmt.Errorf("%s directory: %w", s.spec.Name, err), os.RemoveAll(dir))
		}
	}
	return nil
}

// startOnce starts the server on Spec.Port, or on a new free port.
func (s *Server) startOnce(ctx context.Context) error {
	s.port = s.spec.Port
	if s.port == 0 {
		var err error
		if s.port, err = FreePort(); err != nil {
			return err
		}
	}
	args, err := s.spec.Args(s.port, s.dir)
	if err != nil {
		return fmt.Errorf("%s arguments: %w", s.spec.Name, err)
	}
	s.args = args
	return s.launch(ctx)
}

// launch starts the process and waits until it is ready; a process that
// is not is killed.
func (s *Server) launch(ctx context.Context) error {
	p, err := Start(Options{Path: s.spec.Path, Args: s.args, Dir: s.dir, Output: s.spec.Output,
		Credential: s.spec.Credential})
	if err != nil {
		return err
	}
	s.p = p
	ctx, cancel := context.WithTimeout(ctx, s.spec.ReadyTimeout)
	defer cancel()
	addr := s.Addr()
	if err = p.WaitReady(ctx, func(ctx context.Context) bool { return s.spec.Ready(ctx, addr) }); err != nil {
		out := p.Output()
		out = out[max(0, len(out)-outputShownBytes):]
		return errors.Join(fmt.Errorf("%s on %s: %w; output:\n%s", s.spec.Name, addr, err, out),
			p.Stop(syscall.SIGKILL, killTimeout))
	}
	return nil
}

// Addr returns 127.0.0.1:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the port, the same across restarts (0 before Start).
func (s *Server) Port() int { return s.port }

// Dir returns the working and data directory.
func (s *Server) Dir() string { return s.dir }

// Pid returns the process id, or 0 when not running.
func (s *Server) Pid() int {
	if !s.Running() {
		return 0
	}
	return s.p.Pid()
}

// Running reports whether the server's process runs (paused or not).
func (s *Server) Running() bool { return s.p != nil && !s.p.Exited() }

// Kill sends SIGKILL (which also ends a paused server) and waits for the
// exit, so the port refuses connections from then on.
func (s *Server) Kill() error { return s.terminate(syscall.SIGKILL, killTimeout) }

// Terminate sends sig and waits up to StopTimeout for the exit; unlike
// Stop, it sends nothing else and leaves the server to Restart. A paused
// server acts on sig only once resumed, SIGKILL apart.
func (s *Server) Terminate(sig os.Signal) error { return s.terminate(sig, s.spec.StopTimeout) }

func (s *Server) terminate(sig os.Signal, timeout time.Duration) error {
	if !s.Running() {
		return fmt.Errorf("signal %v to %s %s: not running", sig, s.spec.Name, s.Addr())
	}
	return s.p.Stop(sig, timeout)
}

// Pause sends SIGSTOP and waits until every thread has stopped: the
// kernel still accepts connections and buffers requests, but nothing
// answers — a hang, like a kernel panic.
func (s *Server) Pause() error {
	if err := s.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	return s.p.waitStopped(killTimeout)
}

// Resume sends SIGCONT after Pause.
func (s *Server) Resume() error { return s.Signal(syscall.SIGCONT) }

// Signal sends sig to the running server and does not wait.
func (s *Server) Signal(sig os.Signal) error {
	if !s.Running() {
		return fmt.Errorf("signal %v to %s %s: not running", sig, s.spec.Name, s.Addr())
	}
	return s.p.Signal(sig)
}

// Restart kills the server if it runs, paused or not, and starts it again
// on the same port and directory with the same arguments, waiting until
// it is ready.
func (s *Server) Restart(ctx context.Context) error {
	if s.p == nil || s.stopped {
		return fmt.Errorf("restart %s: not started, or stopped", s.spec.Name)
	}
	if s.Running() {
		if err := s.Kill(); err != nil {
			return err
		}
	}
	return s.launch(ctx)
}

// Stop sends StopSignal and, if the server has not exited within
// StopTimeout, SIGKILL; then it removes the directory Start made. A paused
// server is resumed first, so it can exit gracefully. It may be called
// more than once; the server cannot be restarted after it.
func (s *Server) Stop() error {
	s.stopped = true
	var err error
	if s.Running() {
		err = s.stopProcess()
	}
	if s.removeDir && err == nil {
		err = os.RemoveAll(s.dir)
	}
	return err
}

func (s *Server) stopProcess() error {
	_ = s.p.Signal(syscall.SIGCONT) // a running process ignores it
	graceful := s.p.Stop(s.spec.StopSignal, s.spec.StopTimeout)
	if graceful == nil {
		return nil
	}
	if err := s.p.Stop(syscall.SIGKILL, killTimeout); err != nil {
		return errors.Join(graceful, err)
	}
	return nil
}

// Process returns the latest process, or nil before Start: its Done and
// Err say how it exited.
func (s *Server) Process() *Process { return s.p }

// Output returns the tail of the latest process's output.
func (s *Server) Output() string {
	if s.p == nil {
		return ""
	}
	return s.p.Output()
}
