// Package proc supervises one child process: it starts it, signals it by
// its own handle (never by a name or a reused pid), waits for it to be
// ready or to exit with a deadline, and keeps the tail of its output for
// diagnostics. Server builds on it a restartable, faultable server on a
// port of its own. It is Outlast's one process supervisor: the private
// redis-server, Sentinels, nats-server and PostgreSQL of tests and
// benchmarks (internal/redisproc, natsproc, pgproc) and the `outlast
// serve` of the end-to-end tests and benchmarks all run on it.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Defaults for Options fields left at their zero value.
const (
	DefaultOutputBytesMax = 64 << 10
	readyPoll             = 10 * time.Millisecond
	// pipeDrainTimeout bounds how long the exit waits for the output pipe
	// to close after the process is gone (a grandchild could hold it).
	pipeDrainTimeout = 2 * time.Second
)

// Options says what to run.
type Options struct {
	Path string   // executable; required
	Args []string // arguments, without the program name
	Dir  string   // working directory; if "", the caller's
	// Output also receives everything the process writes to stdout and
	// stderr; if nil, only the tail is kept.
	Output io.Writer
	// OutputBytesMax is how much of the output's tail Output() keeps; if
	// <= 0, DefaultOutputBytesMax.
	OutputBytesMax int
	// Credential, if set, runs the process as another user (PostgreSQL
	// refuses to run as root).
	Credential *syscall.Credential
}

// Process is one started child process. Its methods are safe for
// concurrent use.
type Process struct {
	cmd  *exec.Cmd
	name string
	out  *tail
	done chan struct{} // closed once the process has exited and err is set
	err  error         // cmd.Wait's result; written once, before done is closed
}

// Start starts the process. It dies with its parent (SIGKILL on the
// parent's death), so a test or benchmark killed before its clean-up leaves
// no server behind; the caller must still Stop it. (Linux sends that
// signal when the OS thread that started the child ends; Go keeps its
// threads unless a goroutine ends while locked to one.)
func Start(o Options) (*Process, error) {
	if o.Path == "" {
		return nil, errors.New("proc: no executable")
	}
	tailBytes := o.OutputBytesMax
	if tailBytes <= 0 {
		tailBytes = DefaultOutputBytesMax
	}
	p := &Process{cmd: exec.Command(o.Path, o.Args...), name: filepath.Base(o.Path),
		out: &tail{bytesMax: tailBytes}, done: make(chan struct{})}
	var w io.Writer = p.out
	if o.Output != nil {
		w = io.MultiWriter(p.out, o.Output)
	}
	p.cmd.Dir, p.cmd.Stdout, p.cmd.Stderr = o.Dir, w, w
	p.cmd.WaitDelay = pipeDrainTimeout
	// Go sets the death signal after the credential change, which would
	// otherwise clear it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: o.Credential}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", o.Path, err)
	}
	// Ends when the process exits, which Stop (or the parent's death)
	// guarantees.
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err returns how the process exited (nil for status 0), or nil while it
// runs.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to %s (pid %d): %w", sig, p.name, p.Pid(), err)
	}
	return nil
}

// Stop sends sig and waits up to timeout for the process to exit. A
// process that has already exited is stopped: Stop returns nil. SIGKILL
// also ends a process stopped by SIGSTOP.
func (p *Process) Stop(sig os.Signal, timeout time.Duration) error {
	if p.Exited() {
		return nil
	}
	if err := p.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("%s (pid %d) still running %s after %v", p.name, p.Pid(), timeout, sig)
	}
}

// waitStopped waits up to timeout until every thread of the process is
// stopped (by SIGSTOP): a signal is delivered asynchronously, and a
// thread still running could answer one more request. It reads
// /proc/PID/task/*/stat (Linux).
func (p *Process) waitStopped(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !p.allStopped() {
		if p.Exited() {
			return fmt.Errorf("%s (pid %d) exited instead of stopping: %v", p.name, p.Pid(), p.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (pid %d) not stopped %v after SIGSTOP", p.name, p.Pid(), timeout)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// allStopped reports whether every thread's state is T (stopped).
func (p *Process) allStopped() bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", p.Pid()))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, path := range tasks {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		// The state follows the command name, which is in parentheses and
		// may itself hold ") ".
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
			return false
		}
	}
	return true
}

// WaitReady calls ready every 10 ms until it returns true, and returns an
// error if the process exits first or ctx ends first. ready gets ctx, to
// bound its own probe.
func (p *Process) WaitReady(ctx context.Context, ready func(context.Context) bool) error {
	t := time.NewTicker(readyPoll)
	defer t.Stop()
	for {
		if ready(ctx) {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s (pid %d) exited before it was ready: %v", p.name, p.Pid(), p.err)
		case <-ctx.Done():
			return fmt.Errorf("%s (pid %d) not ready: %w", p.name, p.Pid(), ctx.Err())
		case <-t.C:
		}
	}
}

// Output returns the tail of what the process wrote to stdout and stderr.
func (p *Process) Output() string { return p.out.String() }

// tail keeps the last bytesMax bytes written to it.
type tail struct {
	bytesMax int        // written once, before the process starts
	mu       sync.Mutex // guards buf
	buf      []byte
}

func (w *tail) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	if over := len(w.buf) - w.bytesMax; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
	}
	return len(b), nil
}

func (w *tail) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for
// a child process to listen on. Another process can take it before the
// child binds it: callers retry a start that fails to bind.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
