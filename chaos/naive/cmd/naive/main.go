// Command naive runs the seeds' design (package naive) as a process, so
// the chaos lab can kill, pause and restart it as it does `outlast serve`.
// It is a lab baseline, not a product: no metrics, no TLS, flags only.
//
//	naive -addr 127.0.0.1:8090 -db postgres://… -redis 127.0.0.1:6379 \
//	      -admin-token t -channel tcb=http://127.0.0.1:9001 -channel-secret tcb=s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/outlast/outlast/chaos/naive"
)

// shutdownTimeout bounds the wait for in-flight requests on SIGTERM.
const shutdownTimeout = 10 * time.Second

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "naive:", err)
		os.Exit(1)
	}
}

// pairs is a repeatable name=value flag.
type pairs map[string]string

func (p pairs) String() string { return fmt.Sprint(map[string]string(p)) }

func (p pairs) Set(v string) error {
	name, value, ok := strings.Cut(v, "=")
	if !ok || name == "" || value == "" {
		return fmt.Errorf("want name=value, not %q", v)
	}
	p[name] = value
	return nil
}

func run(args []string) error {
	var cfg naive.Config
	channels, secrets := pairs{}, pairs{}
	fs := flag.NewFlagSet("naive", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address")
	fs.StringVar(&cfg.DSN, "db", "", "PostgreSQL DSN (postgres://…)")
	fs.StringVar(&cfg.RedisAddr, "redis", "127.0.0.1:6379", "Redis host:port")
	fs.StringVar(&cfg.AdminToken, "admin-token", "", "admin bearer token")
	fs.StringVar(&cfg.DefaultChannel, "default-channel", "", "channel of new payouts until the config names one (default: the first by name)")
	fs.Var(channels, "channel", "partner channel as name=bank base URL (repeatable)")
	fs.Var(secrets, "channel-secret", "webhook secret as name=secret (repeatable)")
	fs.BoolVar(&cfg.NoCommitter, "no-committer", false, "do not subscribe to notifications")
	fs.BoolVar(&cfg.NoDispatcher, "no-dispatcher", false, "do not send payouts to banks")
	fs.DurationVar(&cfg.CacheTTL, "cache-ttl", 0, "cache entry lifetime (default 30s)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.Channels, cfg.ChannelSecrets = channels, map[string][]byte{}
	for name, s := range secrets {
		cfg.ChannelSecrets[name] = []byte(s)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	s, err := naive.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Addr: *addr, Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.Run(ctx) })
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.ListenAndServe() }()
	select {
	case err = <-serveErr:
		stop()
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		err = srv.Shutdown(shutdownCtx)
	}
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, s.Close())
}
