package jetstream

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/testenv"
)

func TestEmbeddedSyncAlways(t *testing.T) {
	l := open(t, testConfig(t.TempDir()))
	if c := l.srv.JetStreamConfig(); c == nil || !c.SyncAlways {
		t.Fatalf("JetStreamConfig() = %+v, want SyncAlways", c)
	}
	v, err := l.srv.Varz(nil)
	if err != nil {
		t.Fatalf("Varz: %v", err)
	}
	if v.JetStream.Config == nil || !v.JetStream.Config.SyncAlways {
		t.Fatalf("Varz().JetStream.Config = %+v, want SyncAlways", v.JetStream.Config)
	}
	info, err := l.stream.Info(context.Background())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.Config.Storage.String() != "File" || info.Config.Duplicates <= 0 || info.Config.MaxBytes <= 0 || info.Config.MaxAge != 0 ||
		info.Config.Retention != jetstream.WorkQueuePolicy || info.Config.Discard != jetstream.DiscardNew {
		t.Fatalf("stream config = %+v, want a file work queue with size limits, no age limit, DiscardNew and a duplicate window", info.Config)
	}
	if got := l.ClientURL(); got != "" {
		t.Errorf("ClientURL() = %q without a listener, want \"\"", got)
	}
	if err := l.Ping(context.Background()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func TestAppendBatchesAndConsumeAppliesOnce(t *testing.T) {
	l := open(t, testConfig(t.TempDir()))
	const n = 2000
	appendAll(t, l, 0, n)
	s := l.Stats()
	if s.NotificationsAppended != n {
		t.Fatalf("NotificationsAppended = %d, want %d", s.NotificationsAppended, n)
	}
	// Group commit: concurrent callers share messages.
	if s.Appends >= n/4 {
		t.Fatalf("Appends = %d messages for %d notifications, want batching (< %d)", s.Appends, n, n/4)
	}
	t.Logf("%d notifications in %d messages", n, s.Appends)
	g := newRecorder(t, n)
	consume(t, l, g.apply("a"))
	waitApplied(t, g, n)
	waitDrained(t, l)
	if got := l.Stats().Consumed; got != n {
		t.Errorf("Consumed = %d, want %d", got, n)
	}
	g.mu.Lock()
	calls := g.calls
	g.mu.Unlock()
	if calls >= int(s.Appends) {
		t.Errorf("apply called %d times for %d messages, want several messages per call", calls, s.Appends)
	}
}

func TestReopenKeepsAppended(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	l, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	appendAll(t, l, 0, 50)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	l2 := open(t, cfg)
	if n, err := l2.Pending(context.Background()); err != nil || n == 0 {
		t.Fatalf("Pending after reopen = %d, %v; want > 0", n, err)
	}
	g := newRecorder(t, 50)
	consume(t, l2, g.apply("a"))
	waitApplied(t, g, 50)
	waitDrained(t, l2)
}

// TestKilledServerRedelivers stops the embedded server while apply is in
// progress, so the message is never acked: after reopening it is delivered
// again.
func TestKilledServerRedelivers(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.AckWait = time.Second
	l, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	appendAll(t, l, 0, 20)
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var seen atomic.Int64
	stop := consume(t, l, applyFunc(func(ctx context.Context, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
		seen.Add(int64(len(ns)))
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		return make([]outlast.ApplyResult, len(ns)), nil
	}))
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("apply was never called")
	}
	l.srv.Shutdown() // the kill: acks after this go nowhere
	close(release)
	stop()
	if err := l.Close(); err != nil {
		t.Logf("Close after kill: %v", err)
	}
	if seen.Load() == 0 {
		t.Fatal("nothing was delivered before the kill")
	}

	l2 := open(t, cfg)
	g := newRecorder(t, 20)
	consume(t, l2, g.apply("a"))
	waitApplied(t, g, 20)
	waitDrained(t, l2)
}

func TestApplyUnavailableIsRetriedNotDeadLettered(t *testing.T) {
	l := open(t, testConfig(t.TempDir()))
	appendAll(t, l, 0, 200)
	g := newRecorder(t, 200)
	var downCalls atomic.Int64
	g.down = func() bool { return downCalls.Add(1) <= 12 } // well past any bound on deliveries
	consume(t, l, g.apply("a"))
	waitApplied(t, g, 200)
	waitDrained(t, l)
	if downCalls.Load() <= 12 {
		t.Fatalf("apply saw %d calls, want the outage to be retried", downCalls.Load())
	}
	if s := l.Stats(); s.DeadLetters != 0 {
		t.Errorf("DeadLetters = %d during a database outage, want 0", s.DeadLetters)
	}
	dls, err := l.DeadLetters(context.Background(), 10)
	if err != nil || len(dls) != 0 {
		t.Errorf("DeadLetters() = %v, %v; want none", dls, err)
	}
}

func TestRejectedIsDeadLetteredOthersApplied(t *testing.T) {
	l := open(t, testConfig(t.TempDir()))
	poison := notification(1000)
	poison.EventID, poison.PayoutID = "poison", "po-missing"
	batch := []*outlast.Notification{notification(0), poison, notification(1), notification(2)}
	publishBatch(t, l, batch...)

	g := newRecorder(t, 10) // holds ev-0 … ev-9's payouts, not poison's: the ledger rejects it
	// The first apply call must see the whole batch together; the good
	// ones are applied by it, not held back by their neighbour.
	var first sync.Once
	var firstApplied []string
	apply := g.apply("a")
	consume(t, l, applyFunc(func(ctx context.Context, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
		res, err := apply(ctx, ns)
		first.Do(func() {
			for i, r := range res {
				if r.Outcome == outlast.OutcomeApplied {
					firstApplied = append(firstApplied, ns[i].EventID)
				}
			}
		})
		return res, err
	}))
	appendAll(t, l, 3, 10) // later messages flow while the poison one is retried
	waitApplied(t, g, 10)
	testenv.WaitFor(t, 10*time.Second, "poison dead-lettered", func() bool { return l.Stats().DeadLetters == 1 })
	waitDrained(t, l)

	g.mu.Lock()
	seenPoison := g.seen["poison"]
	g.mu.Unlock()
	if seenPoison != 3 {
		t.Errorf("poison applied %d times, want 3 (the ledger's bound)", seenPoison)
	}
	if got := strings.Join(firstApplied, ","); !strings.HasPrefix(got, "ev-0,ev-1,ev-2") {
		t.Errorf("first apply applied %v, want ev-0, ev-1, ev-2 first", firstApplied)
	}
	entries, err := l.deadEntries(context.Background(), 10)
	if err != nil {
		t.Fatalf("deadEntries: %v", err)
	}
	if len(entries) != 1 {
		t.Fatalf("deadEntries() = %d entries, want 1", len(entries))
	}
	if e := entries[0]; e.Index != 1 || e.SourceSeq == 0 {
		t.Errorf("deadEntries()[0] = %+v, want index 1 of its batch message", e)
	}
	dls, err := l.DeadLetters(context.Background(), 10)
	if err != nil || len(dls) != 1 {
		t.Fatalf("DeadLetters() = %+v, %v; want 1 entry", dls, err)
	}
	dl := dls[0]
	wantID := fmt.Sprintf("log:%d", entries[0].Seq)
	if dl.ID != wantID || dl.Notification == nil || dl.Notification.EventID != "poison" || dl.Reason != "rejected: unknown payout" ||
		dl.Deliveries != 3 || dl.At.IsZero() {
		t.Errorf("DeadLetters()[0] = %+v, want %s: poison, rejected: unknown payout, 3 deliveries", dl, wantID)
	}
}

// TestFailingMessageIsIsolated: an apply error that is not "unavailable"
// says nothing about whether the notification can apply, so the failing
// message is isolated from its neighbours and redelivered with backoff,
// never dead-lettered; it applies once the error goes away.
func TestFailingMessageIsIsolated(t *testing.T) {
	l := open(t, testConfig(t.TempDir()))
	bad := notification(1000)
	bad.EventID = "bad"
	publishBatch(t, l, notification(0), notification(1))
	publishBatch(t, l, bad, notification(2))
	publishBatch(t, l, notification(3))
	g := newRecorder(t, 4)
	g.holdPayout(t, bad)
	g.fail["bad"] = true
	consume(t, l, g.apply("a"))
	waitApplied(t, g, 2) // ev-0, ev-1 and ev-3 are not blocked by "bad"
	testenv.WaitFor(t, 10*time.Second, "ev-3 applied and bad tried 4 times", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.applied["ev-3"] == 1 && g.calls >= 6
	})
	g.mu.Lock()
	if g.applied["ev-2"] != 0 {
		t.Errorf("applied ev-2 %d times, want 0 (it shares bad's message)", g.applied["ev-2"])
	}
	g.fail["bad"] = false
	g.mu.Unlock()
	if s := l.Stats(); s.DeadLetters != 0 {
		t.Fatalf("DeadLetters = %d for a failing apply, want 0", s.DeadLetters)
	}
	testenv.WaitFor(t, 20*time.Second, "bad and ev-2 applied once the error is gone", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.applied["bad"] == 1 && g.applied["ev-2"] == 1
	})
	waitDrained(t, l)
}

func TestUndecodableMessageIsDeadLettered(t *testing.T) {
	l := open(t, testConfig(t.TempDir()))
	ctx := context.Background()
	if _, err := l.js.Publish(ctx, l.subjectBase+".notifications.x", []byte("not json")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	g := newRecorder(t, 0)
	consume(t, l, g.apply("a"))
	testenv.WaitFor(t, 10*time.Second, "undecodable message dead-lettered", func() bool { return l.Stats().DeadLetters == 1 })
	waitDrained(t, l)
	dls, err := l.DeadLetters(ctx, 0)
	if err != nil || len(dls) != 1 {
		t.Fatalf("DeadLetters() = %v, %v; want 1", dls, err)
	}
	if string(dls[0].Raw) != "not json" || !strings.HasPrefix(dls[0].Reason, "undecodable: ") {
		t.Errorf("DeadLetters()[0] = %+v, want the raw body and an undecodable reason", dls[0])
	}
}

func wantUnavailableWithin(t *testing.T, what string, limit time.Duration, f func() error) {
	t.Helper()
	start := time.Now()
	err := f()
	elapsed := time.Since(start)
	if code := outlast.ErrorCode(err); code != outlast.EUNAVAILABLE {
		t.Fatalf("%s = %v, want code %s", what, err, outlast.EUNAVAILABLE)
	}
	if outlast.ErrorRetryAfter(err) <= 0 {
		t.Errorf("%s: RetryAfter = 0, want > 0", what)
	}
	if elapsed > limit {
		t.Errorf("%s took %s, want at most %s", what, elapsed, limit)
	}
}

func TestAppendWhenClosedOrDown(t *testing.T) {
	ctx := context.Background()
	t.Run("closed", func(t *testing.T) {
		l, err := Open(ctx, testConfig(t.TempDir()))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		wantUnavailableWithin(t, "Append after Close", 50*time.Millisecond, func() error { return l.Append(ctx, notification(0)) })
		apply := newRecorder(t, 0).apply("a")
		wantUnavailableWithin(t, "Consume after Close", 50*time.Millisecond, func() error { return l.Consume(ctx, apply) })
	})
	t.Run("server down", func(t *testing.T) {
		cfg := testConfig(t.TempDir())
		cfg.AckTimeout = 500 * time.Millisecond
		l := open(t, cfg)
		if err := l.Append(ctx, notification(0)); err != nil {
			t.Fatalf("Append: %v", err)
		}
		l.srv.Shutdown()
		for i := range 3 {
			wantUnavailableWithin(t, "Append with the server down", cfg.AckTimeout+200*time.Millisecond, func() error { return l.Append(ctx, notification(i)) })
		}
		if err := l.Ping(ctx); outlast.ErrorCode(err) != outlast.EUNAVAILABLE {
			t.Errorf("Ping with the server down = %v, want %s", err, outlast.EUNAVAILABLE)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		l := open(t, testConfig(t.TempDir()))
		n := notification(0)
		n.Channel = "bad channel"
		if err := l.Append(ctx, n); outlast.ErrorCode(err) != outlast.EVALIDATION {
			t.Errorf("Append(invalid) = %v, want %s", err, outlast.EVALIDATION)
		}
	})
}

func TestAppendQueueFull(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.BatchMax, cfg.InflightMax, cfg.QueueMax = 1, 1, 1
	cfg.AckTimeout = 10 * time.Second
	held := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	cfg.beforePublish = func() {
		once.Do(func() {
			close(held)
			<-release
		})
	}
	l := open(t, cfg)
	ctx := context.Background()
	errs := make(chan error, 2)
	go func() { errs <- l.Append(ctx, notification(0)) }()
	<-held // the writer holds request 0
	go func() { errs <- l.Append(ctx, notification(1)) }()
	testenv.WaitFor(t, 5*time.Second, "request 1 queued", func() bool { return len(l.queue) == 1 })
	wantUnavailableWithin(t, "Append with a full queue", 50*time.Millisecond, func() error { return l.Append(ctx, notification(2)) })
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("Append of a queued request = %v, want nil", err)
		}
	}
}

func TestCloseFailsQueuedAndStopsConsume(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.BatchMax, cfg.InflightMax = 1, 1
	held := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	cfg.beforePublish = func() {
		once.Do(func() {
			close(held)
			<-release
		})
	}
	l, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	ctx := context.Background()
	consumeDone := make(chan error, 1)
	apply := newRecorder(t, 2).apply("a")
	go func() { consumeDone <- l.Consume(ctx, apply) }()
	errs := make(chan error, 2)
	go func() { errs <- l.Append(ctx, notification(0)) }()
	<-held
	go func() { errs <- l.Append(ctx, notification(1)) }()
	testenv.WaitFor(t, 5*time.Second, "request 1 queued", func() bool { return len(l.queue) == 1 })
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	testenv.WaitFor(t, 5*time.Second, "Close started", func() bool {
		l.mu.RLock()
		defer l.mu.RUnlock()
		return l.closed
	})
	close(release)
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := <-consumeDone; err != nil {
		t.Errorf("Consume after Close = %v, want nil", err)
	}
	var unavailable int
	for range 2 {
		if err := <-errs; outlast.ErrorCode(err) == outlast.EUNAVAILABLE {
			unavailable++
		} else if err != nil {
			t.Errorf("Append during Close = %v", err)
		}
	}
	if unavailable == 0 {
		t.Errorf("no queued Append failed with %s on Close", outlast.EUNAVAILABLE)
	}
}

// TestTwoInstancesShareTheConsumer runs two Logs on one embedded server (the
// second connects over its URL): every notification is applied once, by one
// of them, and both do some of the work.
func TestTwoInstancesShareTheConsumer(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.ListenAddr = "127.0.0.1:0"
	a := open(t, cfg)
	if !strings.HasPrefix(a.ClientURL(), "nats://127.0.0.1:") {
		t.Fatalf("ClientURL() = %q, want nats://127.0.0.1:port", a.ClientURL())
	}
	cfgB := testConfig("")
	cfgB.URL = a.ClientURL()
	b := open(t, cfgB)
	testTwoInstances(t, a, b)
}

func testTwoInstances(t *testing.T, a, b *Log) {
	const n = 1000
	g := newRecorder(t, n)
	slow := func(tag string) applyFunc {
		apply := g.apply(tag)
		return func(ctx context.Context, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
			time.Sleep(5 * time.Millisecond) // a database transaction's worth, so both get a turn
			return apply(ctx, ns)
		}
	}
	consume(t, a, slow("a"))
	consume(t, b, slow("b"))
	var wg sync.WaitGroup
	wg.Go(func() { appendAll(t, a, 0, n/2) })
	wg.Go(func() { appendAll(t, b, n/2, n) })
	wg.Wait()
	waitApplied(t, g, n)
	waitDrained(t, a)
	g.mu.Lock()
	defer g.mu.Unlock()
	byTag := map[string]int{}
	for _, tag := range g.by {
		byTag[tag]++
	}
	if byTag["a"] == 0 || byTag["b"] == 0 {
		t.Errorf("work split %v, want both instances to apply some", byTag)
	}
	for id, k := range g.seen {
		if k != 1 {
			t.Errorf("event %s passed to apply %d times, want 1 (no redelivery expected)", id, k)
		}
	}
}

func TestExternalNATS(t *testing.T) {
	cfg := externalConfig(t)
	a := open(t, cfg)
	b := open(t, cfg)
	if a.ClientURL() != "" {
		t.Errorf("ClientURL() = %q for an external server, want \"\"", a.ClientURL())
	}
	testTwoInstances(t, a, b)
}

func TestOpenUnreachableExternal(t *testing.T) {
	cfg := testConfig("")
	cfg.URL = fmt.Sprintf("nats://127.0.0.1:%d", testenv.FreePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Open(ctx, cfg)
	if outlast.ErrorCode(err) != outlast.EUNAVAILABLE {
		t.Fatalf("Open(unreachable) = %v, want %s", err, outlast.EUNAVAILABLE)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{
		{},                                  // embedded without DataDir
		{DataDir: "x", StreamPrefix: "a.b"}, // not a stream name
		{DataDir: "x", ConsumerName: "c*"},
		{DataDir: "x", AckWait: time.Second, RetryDelayMax: time.Second},
	} {
		if _, err := Open(context.Background(), c); err == nil {
			t.Errorf("Open(%+v) = nil error, want a config error", c)
		}
	}
}

func TestDecodeBatchRejectsMismatchedCount(t *testing.T) {
	h := nats.Header{}
	h.Set(headerCount, "3")
	if _, err := decodeBatch([]byte(`[{"channel":"a"}]`), h); err == nil {
		t.Error("decodeBatch with a wrong count = nil error")
	}
	if _, err := decodeBatch([]byte(`[null]`), nats.Header{}); err == nil {
		t.Error("decodeBatch with a null entry = nil error")
	}
	if _, err := decodeBatch([]byte(`{}`), nats.Header{}); err == nil {
		t.Error("decodeBatch of an object = nil error")
	}
}

func TestRetryPolicyFollowsConfig(t *testing.T) {
	p := Config{RetryDelayMin: 100 * time.Millisecond, RetryDelayMax: 5 * time.Second}.retryPolicy()
	for _, tc := range []struct {
		deliveries int
		want       time.Duration
	}{{1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {4, 800 * time.Millisecond}, {7, 5 * time.Second}, {1 << 30, 5 * time.Second}} {
		if got := p.Ceiling(tc.deliveries); got != tc.want {
			t.Errorf("Ceiling(%d) = %s, want %s", tc.deliveries, got, tc.want)
		}
	}
}

// TestAppliedMessagesNeverFillTheLog: the stream holds only what is not
// applied yet, so far more applied traffic than MaxBytes passes through
// without a single append being refused (before, acked messages stayed
// until MaxAge and a full stream refused every append).
func TestAppliedMessagesNeverFillTheLog(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.MaxBytes = 2 << 20
	l := open(t, cfg)
	const waves, perWave = 12, 2500
	g := newRecorder(t, waves*perWave)
	consume(t, l, g.apply("a"))
	for w := range waves {
		appendAll(t, l, w*perWave, (w+1)*perWave) // fails t on any refused append
		waitApplied(t, g, (w+1)*perWave)
	}
	waitDrained(t, l)
	appended := l.Stats().NotificationsAppended
	info, err := l.stream.Info(context.Background())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.State.Msgs != 0 {
		t.Errorf("stream holds %d messages after everything was applied, want 0", info.State.Msgs)
	}
	// The notifications that passed through took several times MaxBytes.
	if bytesThrough := appended * 200; bytesThrough < 2*uint64(cfg.MaxBytes) {
		t.Fatalf("only %d notifications (~%d bytes) went through, want well over MaxBytes", appended, bytesThrough)
	}
	testenv.WaitFor(t, 15*time.Second, "stream gauges published", func() bool {
		return testutil.ToFloat64(streamBytesLimit.WithLabelValues("notifications")) == float64(cfg.MaxBytes)
	})
}

// TestRecreatesDeletedStream deletes the stream (and with it the consumer)
// under a running committer: the log recreates both and carries on.
func TestRecreatesDeletedStream(t *testing.T) {
	l := open(t, testConfig(t.TempDir()))
	g := newRecorder(t, 20)
	consume(t, l, g.apply("a"))
	appendAll(t, l, 0, 10)
	waitApplied(t, g, 10)
	ctx := context.Background()
	if err := l.js.DeleteStream(ctx, l.streamName); err != nil {
		t.Fatalf("DeleteStream: %v", err)
	}
	testenv.WaitFor(t, 10*time.Second, "stream and consumer recreated", func() bool {
		_, err := l.js.Consumer(ctx, l.streamName, l.cfg.ConsumerName)
		return err == nil
	})
	appendAll(t, l, 10, 20)
	waitApplied(t, g, 20)
	waitDrained(t, l)
}

// TestCloseLeavesNoGoroutines opens, uses and closes a Log: the goroutines
// it started (writer, ack waiters, committer, client and embedded server)
// are all gone afterwards.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	g := newRecorder(t, 100) // before counting: the ledger's goroutines are not the Log's
	before := runtime.NumGoroutine()
	l, err := Open(context.Background(), testConfig(t.TempDir()))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Consume(ctx, g.apply("a")) }()
	appendAll(t, l, 0, 100)
	waitApplied(t, g, 100)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Consume after Close = %v, want nil", err)
	}
	cancel()
	testenv.WaitFor(t, 10*time.Second, "goroutines to end", func() bool {
		return runtime.NumGoroutine() <= before
	})
}

// TestUpgradeRetention: a notifications stream of an earlier version
// (limits retention, which kept applied messages) is replaced by the work
// queue only once its consumer has applied everything; with unapplied
// messages, or no consumer to tell, it is refused, never dropped.
func TestUpgradeRetention(t *testing.T) {
	l := open(t, testConfig(t.TempDir()))
	ctx := context.Background()
	if err := l.js.DeleteStream(ctx, l.streamName); err != nil {
		t.Fatal(err)
	}
	old, err := l.js.CreateStream(ctx, jetstream.StreamConfig{Name: l.streamName,
		Subjects: []string{l.subjectBase + ".notifications.>"}, Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("create a limits stream: %v", err)
	}
	if _, err := l.js.Publish(ctx, l.subjectBase+".notifications.tcb", []byte("[]")); err != nil {
		t.Fatal(err)
	}
	if err := l.upgradeRetention(ctx); err == nil || !strings.Contains(err.Error(), "no consumer") {
		t.Fatalf("upgrade with a message and no consumer = %v, want a refusal", err)
	}
	c, err := old.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: l.cfg.ConsumerName, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.upgradeRetention(ctx); err == nil || !strings.Contains(err.Error(), "1 unapplied") {
		t.Fatalf("upgrade with an unapplied message = %v, want a refusal", err)
	}
	msgs, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range msgs.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.upgradeRetention(ctx); err != nil {
		t.Fatalf("upgrade once everything is applied = %v, want nil", err)
	}
	if err := l.setup(ctx); err != nil {
		t.Fatalf("setup after the upgrade: %v", err)
	}
	info, err := l.stream.Info(ctx)
	if err != nil || info.Config.Retention != jetstream.WorkQueuePolicy {
		t.Fatalf("stream after the upgrade = %+v, %v; want a work queue", info, err)
	}
}
