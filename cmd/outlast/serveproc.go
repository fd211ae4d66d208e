package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/proc"
)

// serveReadyTimeout bounds the wait for a started `outlast serve` to answer
// /readyz; a race-built binary on a busy 2-core machine needs seconds.
const serveReadyTimeout = time.Minute

// serveStopTimeout bounds the wait for a signalled serve to exit.
const serveStopTimeout = time.Minute

// startServeProcess runs `bin serve args...` as a supervised server
// (output also to output, if set) on the port of baseURL, which args must
// name in --addr, and waits until baseURL/readyz answers 200. A process
// that does not get there is killed. Restart starts it again with the
// same arguments; the caller stops it with stopServe (or Kill).
func startServeProcess(ctx context.Context, bin string, args []string, baseURL string, output io.Writer) (*proc.Server, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("outlast serve URL: %w", err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return nil, fmt.Errorf("outlast serve URL %q: no port", baseURL)
	}
	s := proc.NewServer(proc.Spec{Name: "outlast serve", Path: bin, Port: port, Dir: ".", Output: output,
		ReadyTimeout: serveReadyTimeout, StopSignal: syscall.SIGTERM, StopTimeout: serveStopTimeout,
		Args: func(int, string) ([]string, error) { return append([]string{"serve"}, args...), nil },
		Ready: func(ctx context.Context, addr string) bool {
			ctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			return client.New("http://"+addr, "").Ready(ctx) == nil
		}})
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// stopServe stops serve gracefully (SIGTERM) and waits for it to exit:
// unlike Stop, a serve that does not exit in serveStopTimeout is an
// error, not killed. A serve that has exited already is stopped.
func stopServe(s *proc.Server) error {
	if !s.Running() {
		return nil
	}
	return s.Terminate(syscall.SIGTERM)
}
