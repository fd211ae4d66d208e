package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/store"
)

// watch runs db.WatchControl until the test ends, returning the hinted
// versions as they come and the watch's end.
func watch(t *testing.T, db *store.DB) (hints <-chan int64, ended <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h, e, ready := make(chan int64, 16), make(chan error, 1), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		e <- db.WatchControl(ctx, func() { close(ready) }, func(v int64) { h <- v })
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	select {
	case <-ready:
	case err := <-e:
		t.Fatalf("WatchControl ended before it was ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("WatchControl not ready after 10 s")
	}
	return h, e
}

func putMaintenance(t *testing.T, db *store.DB, ifVersion int64, on bool) *outlast.ControlConfig {
	t.Helper()
	c, err := db.PutControlConfig(context.Background(), &outlast.ControlConfig{Maintenance: outlast.Maintenance{On: on}}, ifVersion, "test", "")
	if err != nil {
		t.Fatalf("PutControlConfig: %v", err)
	}
	return c
}

func wantHint(t *testing.T, hints <-chan int64, want int64) {
	t.Helper()
	select {
	case v := <-hints:
		if v != want {
			t.Fatalf("hint of version %d, want %d", v, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no hint of version %d within 5 s", want)
	}
}

// TestWatchControl: every committed change is hinted, with its version,
// to every watcher; a refused change is not.
func TestWatchControl(t *testing.T) {
	testenv.EachDatabase(t, func(t *testing.T, dsn string) {
		db := openDB(t, dsn)
		a, _ := watch(t, db)
		b, _ := watch(t, db)
		putMaintenance(t, db, 0, true)
		wantHint(t, a, 1)
		wantHint(t, b, 1)
		if _, err := db.PutControlConfig(context.Background(), &outlast.ControlConfig{}, 0, "test", ""); outlast.ErrorCode(err) != outlast.EPRECONDITION {
			t.Fatalf("stale put: %v, want EPRECONDITION", err)
		}
		putMaintenance(t, db, 1, false)
		wantHint(t, a, 2) // not 1 again: the stale put sent nothing
		wantHint(t, b, 2)
	})
}

// TestWatchControlHearsOtherProcesses: on PostgreSQL a change made
// through another connection pool (another instance) is hinted too, and
// a LISTEN connection that is cut ends the watch with an error, for the
// caller to watch again.
func TestWatchControlHearsOtherProcesses(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	db, other := openDB(t, dsn), openDB(t, dsn)
	hints, ended := watch(t, db)
	putMaintenance(t, other, 0, true)
	wantHint(t, hints, 1)

	if _, err := other.SQL().Exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'outlast-control-listen' AND datname = current_database()"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the watch ended without an error when its connection was cut")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not end within 10 s of its connection being cut")
	}
	hints, _ = watch(t, db)
	putMaintenance(t, other, 1, false)
	wantHint(t, hints, 2)
}

// TestInstances: a heartbeat replaces the instance's last one, SeenAt is
// the store's clock, and instances silent for InstanceForgetAfter are
// forgotten by the next heartbeat of any instance.
func TestInstances(t *testing.T) {
	testenv.EachDatabase(t, func(t *testing.T, dsn string) {
		db := openDB(t, dsn)
		clock := withClock(db)
		ctx := context.Background()
		put := func(s *outlast.InstanceStatus) {
			t.Helper()
			if err := db.PutInstance(ctx, s); err != nil {
				t.Fatalf("PutInstance(%s): %v", s.ID, err)
			}
		}
		put(&outlast.InstanceStatus{ID: "b", Addr: "127.0.0.1:2", AppliedVersion: 1})
		put(&outlast.InstanceStatus{ID: "a", Addr: "127.0.0.1:1", AppliedVersion: 1,
			Dependencies: []outlast.DependencyHealth{{Name: "redis", OK: false, Detail: "connection refused"}}})
		clock.Advance(time.Second)
		put(&outlast.InstanceStatus{ID: "b", Addr: "127.0.0.1:2", AppliedVersion: 2, Maintenance: true,
			Overrides: []outlast.Override{{Source: outlast.OverrideFile, Message: "stop"}}})
		got, err := db.Instances(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].ID != "a" || got[1].ID != "b" {
			t.Fatalf("Instances = %+v, want a and b", got)
		}
		if got[1].AppliedVersion != 2 || !got[1].Maintenance || len(got[1].Overrides) != 1 || !got[1].SeenAt.Equal(clock.Now().UTC()) {
			t.Fatalf("b = %+v, want its second heartbeat seen now", got[1])
		}
		if len(got[0].Dependencies) != 1 || got[0].Dependencies[0].Detail != "connection refused" {
			t.Fatalf("a's dependencies = %+v", got[0].Dependencies)
		}
		clock.Advance(outlast.InstanceForgetAfter)
		put(&outlast.InstanceStatus{ID: "c"})
		if got, _ = db.Instances(ctx); len(got) != 2 || got[0].ID != "b" || got[1].ID != "c" {
			t.Fatalf("after a day: %+v, want a forgotten", got)
		}
		if err := db.PutInstance(ctx, &outlast.InstanceStatus{}); outlast.ErrorCode(err) != outlast.EVALIDATION {
			t.Fatalf("PutInstance without id: %v, want EVALIDATION", err)
		}
	})
}
