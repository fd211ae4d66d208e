package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/proc"
)

// serveReadyTimeout bounds the wait for a started `outlast serve` to answer
// /readyz; a race-built binary on a busy 2-core machine needs seconds.
const serveReadyTimeout = time.Minute

// startServeProcess runs `bin serve args...` as a child process (output also to
// output, if set) and waits until baseURL/readyz answers 200. A process that
// does not get there is killed. The caller stops the process by its handle.
func startServeProcess(ctx context.Context, bin string, args []string, baseURL string, output io.Writer) (*proc.Process, error) {
	p, err := proc.Start(proc.Options{Path: bin, Args: append([]string{"serve"}, args...), Output: output})
	if err != nil {
		return nil, fmt.Errorf("start outlast serve: %w", err)
	}
	api := client.New(baseURL, "")
	ctx, cancel := context.WithTimeout(ctx, serveReadyTimeout)
	defer cancel()
	err = p.WaitReady(ctx, func(ctx context.Context) bool {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return api.Ready(ctx) == nil
	})
	if err != nil {
		out := p.Output()
		out = out[max(0, len(out)-serveOutputShownBytes):]
		return nil, errors.Join(fmt.Errorf("outlast serve on %s: %w; its last output:\n%s", baseURL, err, out),
			p.Stop(syscall.SIGKILL, serveStopTimeout))
	}
	return p, nil
}

// serveOutputShownBytes is how much of a failed serve's output an error
// quotes; serveStopTimeout bounds the wait for a signalled serve to exit.
const (
	serveOutputShownBytes = 4096
	serveStopTimeout      = time.Minute
)
