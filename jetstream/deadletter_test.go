package jetstream

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/testenv"
)

// waitDeadLetters waits until the log lists n dead letters and returns them.
func waitDeadLetters(t *testing.T, l *Log, n int) []outlast.DeadLetter {
	t.Helper()
	var dls []outlast.DeadLetter
	testenv.WaitFor(t, 20*time.Second, "dead letters listed", func() bool {
		var err error
		dls, err = l.DeadLetters(context.Background(), 0)
		return err == nil && len(dls) == n
	})
	return dls
}

// sendPoison runs the committer over a recorder that holds no payout for
// the event "poison", so the ledger rejects it (unknown payout), and
// appends it. Holding its payout later (recorder.holdPayout) mends it.
func sendPoison(t *testing.T, l *Log) (*recorder, *outlast.Notification) {
	t.Helper()
	g := newRecorder(t, 0)
	consume(t, l, g.apply("a"))
	poison := notification(1000)
	poison.EventID = "poison"
	if err := l.Append(context.Background(), poison); err != nil {
		t.Fatal(err)
	}
	return g, poison
}

func (g *recorder) counts(event string) (seen, applied int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.seen[event], g.applied[event]
}

// TestReplayDeadLetter: a replayed dead letter is appended to the log
// again with a fresh delivery count, so while its cause stands it is
// judged again up to the bound and dead-lettered again; once the cause is
// mended, a replay applies it and it is gone from the dead letters.
func TestReplayDeadLetter(t *testing.T) {
	l := open(t, testConfig(t.TempDir()))
	ctx := context.Background()
	g, poison := sendPoison(t, l)
	first := waitDeadLetters(t, l, 1)

	if n, err := l.ReplayDeadLetters(ctx, []string{first[0].ID}); err != nil || n != 1 {
		t.Fatalf("ReplayDeadLetters(%s) = %d, %v; want 1", first[0].ID, n, err)
	}
	again := waitDeadLetters(t, l, 1)
	if again[0].ID == first[0].ID || again[0].Deliveries != 3 {
		t.Fatalf("dead letter after a replay still rejected = %+v, want a new entry after 3 fresh deliveries (was %s)", again[0], first[0].ID)
	}
	if seen, _ := g.counts("poison"); seen != 6 {
		t.Errorf("poison judged %d times, want 6: the bound again after the replay", seen)
	}

	g.holdPayout(t, poison)
	if n, err := l.ReplayDeadLetters(ctx, []string{again[0].ID, again[0].ID}); err != nil || n != 1 {
		t.Fatalf("ReplayDeadLetters(%s twice) = %d, %v; want 1", again[0].ID, n, err)
	}
	testenv.WaitFor(t, 20*time.Second, "the replayed notification applied", func() bool {
		_, applied := g.counts("poison")
		return applied == 1
	})
	waitDrained(t, l)
	waitDeadLetters(t, l, 0)
	if n, err := l.ReplayDeadLetters(ctx, []string{again[0].ID}); err != nil || n != 0 {
		t.Errorf("ReplayDeadLetters(replayed already) = %d, %v; want 0, nil", n, err)
	}
}

// TestReplayFailingDeleteLeavesADuplicate: the delete comes only after the
// append is durable, so a failure between the two leaves the notification
// in both places: it applies, and replaying the leftover is a duplicate.
func TestReplayFailingDeleteLeavesADuplicate(t *testing.T) {
	cfg := testConfig(t.TempDir())
	failDelete := make(chan bool, 1)
	failDelete <- true
	cfg.beforeDeleteDead = func() error {
		select {
		case <-failDelete:
			return errors.New("broker lost")
		default:
			return nil
		}
	}
	l := open(t, cfg)
	ctx := context.Background()
	g, poison := sendPoison(t, l)
	dls := waitDeadLetters(t, l, 1)
	g.holdPayout(t, poison)

	n, err := l.ReplayDeadLetters(ctx, []string{dls[0].ID})
	if outlast.ErrorCode(err) != outlast.EUNAVAILABLE || n != 0 {
		t.Fatalf("ReplayDeadLetters with a failing delete = %d, %v; want 0, %s", n, err, outlast.EUNAVAILABLE)
	}
	testenv.WaitFor(t, 20*time.Second, "the replayed notification applied", func() bool {
		_, applied := g.counts("poison")
		return applied == 1
	})
	if left := waitDeadLetters(t, l, 1); left[0].ID != dls[0].ID {
		t.Fatalf("dead letters after a failed delete = %+v, want %s still there", left, dls[0].ID)
	}
	if n, err := l.ReplayDeadLetters(ctx, []string{dls[0].ID}); err != nil || n != 1 {
		t.Fatalf("ReplayDeadLetters again = %d, %v; want 1", n, err)
	}
	waitDrained(t, l)
	waitDeadLetters(t, l, 0)
	if seen, applied := g.counts("poison"); applied != 1 || seen < 3+2 {
		t.Errorf("poison seen %d times, applied %d; want applied once, the leftover a duplicate", seen, applied)
	}
}

// TestReplayRefusals: an undecodable dead letter has nothing to replay, so
// a replay naming it is refused and replays nothing; ids of another store
// or malformed ones are refused too.
func TestReplayRefusals(t *testing.T) {
	l := open(t, testConfig(t.TempDir()))
	ctx := context.Background()
	if _, err := l.js.Publish(ctx, l.subjectBase+".notifications.x", []byte("not json")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	g, _ := sendPoison(t, l)
	dls := waitDeadLetters(t, l, 2)
	var raw, good string
	for _, dl := range dls {
		if dl.Notification == nil {
			raw = dl.ID
		} else {
			good = dl.ID
		}
	}
	n, err := l.ReplayDeadLetters(ctx, []string{good, raw})
	if outlast.ErrorCode(err) != outlast.EVALIDATION || n != 0 || !strings.Contains(outlast.ErrorMessage(err), raw+" (undecodable") {
		t.Fatalf("ReplayDeadLetters(%s, %s) = %d, %v; want 0 and %s naming %s", good, raw, n, err, outlast.EVALIDATION, raw)
	}
	for _, id := range []string{"inbox:1", "log:x", "log:0", "log"} {
		n, err := l.ReplayDeadLetters(ctx, []string{good, id})
		if outlast.ErrorCode(err) != outlast.EVALIDATION || n != 0 {
			t.Errorf("ReplayDeadLetters(%q) = %d, %v; want 0, %s", id, n, err, outlast.EVALIDATION)
		}
	}
	if _, applied := g.counts("poison"); applied != 0 || len(waitDeadLetters(t, l, 2)) != 2 {
		t.Errorf("a refused replay replayed something")
	}
}

// TestDeadLettersUnavailable: a link whose log is not open, and a closed
// log, say so with EUNAVAILABLE rather than an empty list.
func TestDeadLettersUnavailable(t *testing.T) {
	ctx := context.Background()
	k := NewLink(testConfig(t.TempDir()))
	if _, err := k.DeadLetters(ctx, 10); outlast.ErrorCode(err) != outlast.EUNAVAILABLE {
		t.Errorf("Link.DeadLetters before Open = %v, want %s", err, outlast.EUNAVAILABLE)
	}
	if _, err := k.ReplayDeadLetters(ctx, []string{"log:1"}); outlast.ErrorCode(err) != outlast.EUNAVAILABLE {
		t.Errorf("Link.ReplayDeadLetters before Open = %v, want %s", err, outlast.EUNAVAILABLE)
	}
	if err := k.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if dls, err := k.DeadLetters(ctx, 10); err != nil || len(dls) != 0 {
		t.Errorf("Link.DeadLetters once open = %v, %v; want none", dls, err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := k.DeadLetters(ctx, 10); outlast.ErrorCode(err) != outlast.EUNAVAILABLE {
		t.Errorf("Link.DeadLetters after Close = %v, want %s", err, outlast.EUNAVAILABLE)
	}
	if _, err := k.ReplayDeadLetters(ctx, []string{"log:1"}); outlast.ErrorCode(err) != outlast.EUNAVAILABLE {
		t.Errorf("Link.ReplayDeadLetters after Close = %v, want %s", err, outlast.EUNAVAILABLE)
	}
}
