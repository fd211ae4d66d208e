package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"time"

	"github.com/outlast/outlast/partnersim"
)

// bankFlags registers the simulated bank's knobs on fs.
func bankFlags(fs *flag.FlagSet, cfg *partnersim.Config) {
	fs.StringVar(&cfg.Name, "name", cfg.Name, "channel name of the bank (e.g. tcb)")
	fs.StringVar(&cfg.WebhookURL, "webhook", cfg.WebhookURL, "URL the bank posts signed notifications to")
	fs.Func("secret", "webhook HMAC secret shared with the service", func(s string) error {
		cfg.Secret = []byte(s)
		return nil
	})
	fs.DurationVar(&cfg.PayDelay, "pay-delay", cfg.PayDelay, "time from accepting a payout to settling it")
	fs.Float64Var(&cfg.FailRate, "fail-rate", cfg.FailRate, "share of accepted payouts that end failed")
	cfg.Faults.RegisterFlags(fs, "")
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "random seed; 0 picks one")
}

func runPartnersim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("partnersim", "Run a simulated partner bank that speaks the partner protocol, with fault knobs\n(also settable at runtime: PUT /faults).", stdout, stderr)
	cfg := partnersim.Config{Name: "tcb"}
	addr := fs.String("addr", "127.0.0.1:9001", "listen address")
	bankFlags(fs.FlagSet, &cfg)
	secretFile := fs.String("secret-file", "", "file holding the webhook secret, instead of --secret (which ps shows)")
	if err := fs.parse(args); err != nil {
		return err
	}
	s, err := secret("secret", string(cfg.Secret), *secretFile)
	if err != nil {
		return fs.fail("%v", err)
	}
	cfg.Secret = []byte(s)
	if cfg.WebhookURL == "" || len(cfg.Secret) == 0 {
		return fs.fail("--webhook and --secret (or --secret-file) are required")
	}
	if err := cfg.Faults.Validate(); err != nil {
		return fs.fail("%v", err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	cfg.Logger = newLogger(stderr, "info")
	fmt.Fprintf(stdout, "partnersim %s on http://%s, notifying %s\n", cfg.Name, ln.Addr(), cfg.WebhookURL)
	return serveBank(ctx, ln, partnersim.New(cfg))
}

// serveBank serves bank on ln and runs its clock and webhook sender until ctx
// is done, then stops both and waits for them.
func serveBank(ctx context.Context, ln net.Listener, bank *partnersim.Bank) error {
	srv := &nethttp.Server{Handler: bank, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- bank.Run(ctx) }()
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, nethttp.ErrServerClosed) {
			errc <- err
			return
		}
		errc <- nil
	}()
	<-ctx.Done()
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(shutCtx)
	return errors.Join(err, <-errc, <-errc)
}
