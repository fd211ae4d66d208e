package proc

import (
	"bytes"
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sh runs script under /bin/sh, stopped by SIGKILL when the test ends.
func sh(t *testing.T, script string, out *bytes.Buffer) *Process {
	t.Helper()
	o := Options{Path: "/bin/sh", Args: []string{"-c", script}}
	if out != nil {
		o.Output = out
	}
	p, err := Start(o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Stop(syscall.SIGKILL, 5*time.Second); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return p
}

func TestReadyStopAndOutput(t *testing.T) {
	flag := t.TempDir() + "/ready"
	p := sh(t, "echo starting; touch "+flag+"; exec sleep 60", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := p.WaitReady(ctx, func(context.Context) bool { _, err := os.Stat(flag); return err == nil })
	if err != nil {
		t.Fatalf("WaitReady = %v, want nil", err)
	}
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("Signal(SIGSTOP) = %v", err)
	}
	if p.Exited() {
		t.Fatal("Exited() = true after SIGSTOP, want false")
	}
	// SIGKILL must end a stopped process too.
	if err := p.Stop(syscall.SIGKILL, 5*time.Second); err != nil {
		t.Fatalf("Stop(SIGKILL) = %v, want nil", err)
	}
	if !p.Exited() || p.Err() == nil {
		t.Errorf("after Stop: Exited() = %v, Err() = %v; want true and a killed status", p.Exited(), p.Err())
	}
	if err := p.Stop(syscall.SIGKILL, time.Second); err != nil {
		t.Errorf("second Stop = %v, want nil", err)
	}
	if got := p.Output(); got != "starting\n" {
		t.Errorf("Output() = %q, want %q", got, "starting\n")
	}
}

func TestWaitReadyExitFirst(t *testing.T) {
	var out bytes.Buffer
	p := sh(t, "echo bad config >&2; exit 3", &out)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := p.WaitReady(ctx, func(context.Context) bool { return false })
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("WaitReady = %v, want an exited-before-ready error", err)
	}
	if got := p.Output(); got != "bad config\n" || out.String() != got {
		t.Errorf("Output() = %q and Options.Output got %q, want both %q", got, out.String(), "bad config\n")
	}
}

func TestWaitReadyDeadline(t *testing.T) {
	p := sh(t, "exec sleep 60", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.WaitReady(ctx, func(context.Context) bool { return false }); err == nil {
		t.Fatal("WaitReady = nil for a never-ready process, want a deadline error")
	}
	if p.Exited() {
		t.Error("WaitReady stopped the process; the caller decides that")
	}
}

func TestOutputTail(t *testing.T) {
	p, err := Start(Options{Path: "/bin/sh", Args: []string{"-c", "printf 0123456789"}, OutputBytesMax: 4})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("process did not exit")
	}
	if got := p.Output(); got != "6789" {
		t.Errorf("Output() = %q, want the last 4 bytes %q", got, "6789")
	}
}
