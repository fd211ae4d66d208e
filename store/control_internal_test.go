package store

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/testenv"
)

// TestWatchControlOutlivesSilence: a LISTEN connection silent past
// listenPingAfter is pinged and kept, and still hears the next change.
func TestWatchControlOutlivesSilence(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	db, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	defer func(d time.Duration) { listenPingAfter, afterListenPing = d, nil }(listenPingAfter)
	listenPingAfter = 20 * time.Millisecond
	var pings atomic.Int64
	afterListenPing = func() { pings.Add(1) }

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	ready, hints, ended := make(chan struct{}), make(chan int64, 4), make(chan error, 1)
	wg.Go(func() {
		ended <- db.WatchControl(ctx, func() { close(ready) }, func(v int64) { hints <- v })
	})
	<-ready
	// Several silences pass, each ending in a ping; the watch stays open.
	testenv.WaitFor(t, 5*time.Second, "three pings", func() bool {
		select {
		case err := <-ended:
			t.Fatalf("the watch ended in silence: %v", err)
		default:
		}
		return pings.Load() >= 3
	})
	if _, err := db.PutControlConfig(ctx, &outlast.ControlConfig{}, 0, "test", ""); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-hints:
		if v != 1 {
			t.Fatalf("hint %d, want 1", v)
		}
	case err := <-ended:
		t.Fatalf("the watch ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no hint after the silences")
	}
}
