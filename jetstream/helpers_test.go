package jetstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/backoff"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/ledger"
)

// testLogger is silent unless OUTLAST_TEST_LOG=1, so failures can be
// debugged without flooding every run.
func testLogger() *slog.Logger {
	if os.Getenv("OUTLAST_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testConfig is a config with short retry delays so tests of redelivery
// finish quickly.
func testConfig(dir string) Config {
	return Config{
		DataDir:       dir,
		Logger:        testLogger(),
		RetryDelayMin: 10 * time.Millisecond,
		RetryDelayMax: 100 * time.Millisecond,
		FetchWait:     200 * time.Millisecond,
	}
}

// open opens a Log and closes it when t ends.
func open(t testing.TB, cfg Config) *Log {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

// externalConfig points at the shared NATS server with a unique stream
// prefix, deleting the streams when t ends, or skips if NATS is missing.
func externalConfig(t testing.TB) Config {
	t.Helper()
	u, err := url.Parse(testenv.NATSURL)
	if err != nil {
		t.Fatalf("parse %q: %v", testenv.NATSURL, err)
	}
	testenv.RequireTCP(t, "NATS", u.Host)
	var b [4]byte
	_, _ = rand.Read(b[:])
	cfg := testConfig("")
	cfg.URL = testenv.NATSURL
	cfg.StreamPrefix = "T" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		nc, err := nats.Connect(testenv.NATSURL)
		if err != nil {
			t.Logf("cleanup connect: %v", err)
			return
		}
		defer nc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		js, _ := jetstream.New(nc)
		for _, s := range []string{cfg.StreamPrefix + "_NOTIFICATIONS", cfg.StreamPrefix + "_DEAD"} {
			if err := js.DeleteStream(ctx, s); err != nil {
				t.Logf("delete stream %s: %v", s, err)
			}
		}
	})
	return cfg
}

func notification(i int) *outlast.Notification {
	channels := []string{"tcb", "acb.v2"}
	return &outlast.Notification{
		Channel:    channels[i%len(channels)],
		EventID:    fmt.Sprintf("ev-%d", i),
		PayoutID:   fmt.Sprintf("po-%d", i),
		PartnerRef: fmt.Sprintf("ref-%d", i),
		Status:     outlast.StatusSucceeded,
		OccurredAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		ReceivedAt: time.Now().UTC(),
	}
}

// applyFunc is an Applier from a function.
type applyFunc func(ctx context.Context, ns []*outlast.Notification) ([]outlast.ApplyResult, error)

func (f applyFunc) Apply(ctx context.Context, _ outlast.Source, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
	return f(ctx, ns)
}

// recorder is what the tests' committers apply to: the real ledger
// (package ledger: its one rule for rejected notifications, here with a
// bound of 3 deliveries) over ledgertest.Memory, which passes the ledger
// conformance suite and holds the payouts the tests' notifications report
// on. A notification whose payout it does not hold is rejected as the
// store would reject it. Around the ledger, it counts what it was given
// and what it applied, and fails the calls a test tells it to.
type recorder struct {
	ledger *ledger.Ledger
	mem    *ledgertest.Memory
	owner  ledgertest.Fixture // the account every payout is paid from

	mu      sync.Mutex
	applied map[string]int // event id → times applied (must stay 1)
	seen    map[string]int // event id → times passed to the ledger
	calls   int
	// down makes apply fail with EUNAVAILABLE while it returns true.
	down func() bool
	// fail makes apply fail, by event id, with an error that is not
	// EUNAVAILABLE, before the ledger sees the batch.
	fail map[string]bool
	// by records which consumer applied each event.
	by map[string]string
}

// newRecorder returns a recorder holding the payouts of notification(0)
// to notification(n-1).
func newRecorder(t testing.TB, n int) *recorder {
	t.Helper()
	mem := ledgertest.NewMemory()
	l, err := ledger.New(mem, ledger.Config{RejectDeliveriesMax: 3,
		RejectRetry: backoff.Policy{Base: 10 * time.Millisecond, Max: 10 * time.Millisecond}})
	if err != nil {
		t.Fatalf("ledger.New: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	g := &recorder{
		ledger: l, mem: mem, owner: ledgertest.Seed(t, mem, "jetstream", outlast.AmountMax),
		applied: map[string]int{}, seen: map[string]int{}, by: map[string]string{}, fail: map[string]bool{},
	}
	for i := range n {
		g.holdPayout(t, notification(i))
	}
	return g
}

// holdPayout creates the pending payout n reports on, on n's channel.
// Call it before the recorder is shared.
func (g *recorder) holdPayout(t testing.TB, n *outlast.Notification) {
	t.Helper()
	g.mem.NewID = func() string { return n.PayoutID }
	req := g.owner.Req(n.PayoutID, 1)
	req.Channel = n.Channel
	ledgertest.MustPayout(t, g.mem, req)
}

func (g *recorder) apply(tag string) applyFunc {
	return func(ctx context.Context, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.calls++
		if g.down != nil && g.down() {
			return nil, outlast.Unavailable(fmt.Errorf("database is down"), time.Second, "ledger unavailable")
		}
		for _, n := range ns {
			if g.fail[n.EventID] {
				return nil, fmt.Errorf("constraint violated by %s", n.EventID)
			}
		}
		res, err := g.ledger.Apply(ctx, outlast.FromLog, ns)
		if err != nil {
			return nil, err
		}
		for i, n := range ns {
			g.seen[n.EventID]++
			if res[i].Outcome == outlast.OutcomeApplied {
				g.applied[n.EventID]++
				g.by[n.EventID] = tag
			}
		}
		return res, nil
	}
}

func (g *recorder) appliedCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.applied)
}

// consume runs l.Consume in the background until the returned stop is
// called; stop fails t if Consume returned an error or did not return.
func consume(t testing.TB, l *Log, apply Applier) (stop func()) {
	t.Helper()
	return testenv.Start(t, "Consume", func(ctx context.Context) error { return l.Consume(ctx, apply) })
}

// appendAll appends notifications [from, to) concurrently, one goroutine
// each, and fails t on any error.
func appendAll(t testing.TB, l *Log, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, to-from)
	for i := from; i < to; i++ {
		wg.Go(func() {
			if err := l.Append(ctx, notification(i)); err != nil {
				errs <- fmt.Errorf("Append(%d): %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// waitApplied waits until events [0, n) have all been applied.
func waitApplied(t testing.TB, g *recorder, n int) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("%d notifications applied", n), func() bool {
		return g.appliedCount() >= n
	})
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range n {
		id := fmt.Sprintf("ev-%d", i)
		if g.applied[id] != 1 {
			t.Errorf("event %s applied %d times, want 1", id, g.applied[id])
		}
	}
}

// waitDrained waits until the consumer has nothing left to do.
func waitDrained(t testing.TB, l *Log) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, "consumer drained", func() bool {
		n, err := l.Pending(context.Background())
		return err == nil && n == 0
	})
}

// publishBatch publishes ns as one batch message, the way the writer does,
// so a test controls exactly what shares a message.
func publishBatch(t testing.TB, l *Log, ns ...*outlast.Notification) {
	t.Helper()
	group := make([]*request, len(ns))
	for i, n := range ns {
		r, err := newRequest(n)
		if err != nil {
			t.Fatal(err)
		}
		group[i] = r
	}
	msg := nats.NewMsg(l.subjectBase + ".notifications." + subjectToken(ns[0].Channel))
	msg.Data = encodeBatch(group)
	msg.Header.Set(headerCount, fmt.Sprint(len(group)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := l.js.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("publish batch: %v", err)
	}
}
