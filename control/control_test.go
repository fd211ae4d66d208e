package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/control"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/store"
)

func openStore(t *testing.T, dsn string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// flaky is the real store, made unreachable at will.
type flaky struct {
	outlast.ControlStore
	down atomic.Bool
}

var errDown = errors.New("connection refused")

func (f *flaky) ControlVersion(ctx context.Context) (int64, error) {
	if f.down.Load() {
		return 0, errDown
	}
	return f.ControlStore.ControlVersion(ctx)
}

func (f *flaky) ControlConfig(ctx context.Context) (*outlast.ControlConfig, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.ControlStore.ControlConfig(ctx)
}

// run starts c.Run until the test ends.
func run(t *testing.T, c *control.Client) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { c.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func newClient(t *testing.T, cfg control.Config) *control.Client {
	t.Helper()
	c, err := control.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func put(t *testing.T, s outlast.ControlStore, c *outlast.ControlConfig) *outlast.ControlConfig {
	t.Helper()
	cur, err := s.ControlVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	next, err := s.PutControlConfig(context.Background(), c, cur, "test", "")
	if err != nil {
		t.Fatal(err)
	}
	return next
}

func maintenance(on bool, msg string) *outlast.ControlConfig {
	return &outlast.ControlConfig{Maintenance: outlast.Maintenance{On: on, Message: msg}}
}

// TestPollAppliesWholeDocument: the poll takes each new version, calls
// Apply with it, and Maintenance follows; a document edited by hand into
// one that does not validate is not applied.
func TestPollAppliesWholeDocument(t *testing.T) {
	testenv.EachDatabase(t, func(t *testing.T, dsn string) {
		db := openStore(t, dsn)
		var applied atomic.Int64
		c := newClient(t, control.Config{Store: db, PollInterval: 20 * time.Millisecond,
			Apply: func(cfg *outlast.ControlConfig) { applied.Store(cfg.Version) }})
		if err := c.Load(context.Background()); err != nil {
			t.Fatal(err)
		}
		if c.Maintenance() != nil || c.Status().AppliedVersion != 0 {
			t.Fatalf("default: %v, %+v", c.Maintenance(), c.Status())
		}
		run(t, c)
		put(t, db, maintenance(true, "bank cut-over until 14:00"))
		testenv.WaitFor(t, 5*time.Second, "maintenance applied", func() bool { return c.Maintenance() != nil })
		err := c.Maintenance()
		if outlast.ErrorCode(err) != outlast.EUNAVAILABLE || outlast.ErrorMessage(err) != "bank cut-over until 14:00" ||
			outlast.ErrorRetryAfter(err) != outlast.MaintenanceRetryAfterDefault {
			t.Fatalf("Maintenance() = %v", err)
		}
		if applied.Load() != 1 || c.Status().Source != "config" {
			t.Fatalf("Apply saw version %d; status %+v", applied.Load(), c.Status())
		}
		if _, err := db.SQL().Exec(`UPDATE control_config SET version = 2, doc = '{"active_channel":"nowhere"}'`); err != nil {
			t.Fatal(err)
		}
		put(t, db, maintenance(false, ""))
		testenv.WaitFor(t, 5*time.Second, "version 3 applied", func() bool { return c.Status().AppliedVersion == 3 })
		if c.Maintenance() != nil || applied.Load() != 3 {
			t.Fatalf("after version 3: %v, applied %d", c.Maintenance(), applied.Load())
		}
	})
}

// TestHintAppliesAtOnce: with a poll far away, the store's hint alone
// applies a change.
func TestHintAppliesAtOnce(t *testing.T) {
	testenv.EachDatabase(t, func(t *testing.T, dsn string) {
		db := openStore(t, dsn)
		c := newClient(t, control.Config{Store: db, Watch: db.WatchControl, PollInterval: time.Hour})
		if err := c.Load(context.Background()); err != nil {
			t.Fatal(err)
		}
		run(t, c)
		testenv.WaitFor(t, 10*time.Second, "listening", func() bool { return c.Status().Listening })
		put(t, db, maintenance(true, ""))
		testenv.WaitFor(t, 5*time.Second, "maintenance applied by the hint", func() bool { return c.Maintenance() != nil })
	})
}

// TestUnreachableKeepsLastGood: with the database unreachable the last
// good document stays in force, the status says how old it is and why,
// and the next successful poll takes what changed meanwhile.
func TestUnreachableKeepsLastGood(t *testing.T) {
	db := openStore(t, "sqlite:"+t.TempDir()+"/l.db")
	put(t, db, maintenance(true, "stop"))
	f := &flaky{ControlStore: db}
	c := newClient(t, control.Config{Store: f, PollInterval: 10 * time.Millisecond})
	if err := c.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	run(t, c)
	f.down.Store(true)
	testenv.WaitFor(t, 5*time.Second, "stale status", func() bool { return c.Status().Stale })
	st := c.Status()
	if st.AppliedVersion != 1 || !st.Maintenance || st.LastError == "" {
		t.Fatalf("while down: %+v", st)
	}
	put(t, db, maintenance(false, ""))
	if c.Maintenance() == nil {
		t.Fatal("a change the instance cannot read applied")
	}
	f.down.Store(false)
	testenv.WaitFor(t, 5*time.Second, "version 2", func() bool { return c.Status().AppliedVersion == 2 })
	if st := c.Status(); st.Stale || st.LastError != "" || st.Maintenance {
		t.Fatalf("after recovery: %+v", st)
	}
}

// TestOverrideFile: the file holds the instance in maintenance whatever
// the database says, with the database unreachable, until it is removed
// or says maintenance false; a file that cannot be understood holds it
// too.
func TestOverrideFile(t *testing.T) {
	db := openStore(t, "sqlite:"+t.TempDir()+"/l.db")
	f := &flaky{ControlStore: db}
	f.down.Store(true)
	path := filepath.Join(t.TempDir(), "override")
	c := newClient(t, control.Config{Store: f, OverrideFile: path, OverrideInterval: 10 * time.Millisecond})
	run(t, c)
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		content, msg string
		on           bool
	}{
		{"", "payouts are paused for maintenance", true},
		{`{"message": "bank outage"}`, "bank outage", true},
		{`{"maintenance": false}`, "", false},
		{`{"maintenance": true, "message": "again"}`, "again", true},
		{`stop!`, "payouts are paused for maintenance", true},
		{`{"maintenance": false, "extra": 1}`, "payouts are paused for maintenance", true},
	} {
		write(tc.content)
		testenv.WaitFor(t, 5*time.Second, "file "+tc.content+" read", func() bool {
			err := c.Maintenance()
			return (err != nil) == tc.on && (err == nil || outlast.ErrorMessage(err) == tc.msg)
		})
		if st := c.Status(); tc.on && (st.Source != outlast.OverrideFile || len(st.Overrides) != 1 || st.Overrides[0].Actor != path) {
			t.Fatalf("file %q: status %+v", tc.content, st)
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "file removed", func() bool { return c.Maintenance() == nil })
}

// TestLocalSwitchSurvivesRestart: the local switch works with the
// database unreachable, is kept in the state file, is in force again in a
// new client on the same file, and clearing it clears the file.
func TestLocalSwitchSurvivesRestart(t *testing.T) {
	db := openStore(t, "sqlite:"+t.TempDir()+"/l.db")
	f := &flaky{ControlStore: db}
	f.down.Store(true)
	state := filepath.Join(t.TempDir(), "break-glass.json")
	c := newClient(t, control.Config{Store: f, StateFile: state})
	st, err := c.SetLocal(true, "stop everything", "admin token from 10.0.0.7")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Maintenance || st.Source != outlast.OverrideLocal || outlast.ErrorMessage(c.Maintenance()) != "stop everything" {
		t.Fatalf("after SetLocal: %+v, %v", st, c.Maintenance())
	}
	if _, err := c.SetLocal(true, string(make([]byte, outlast.MaintenanceMessageBytesMax+1)), "x"); outlast.ErrorCode(err) != outlast.EVALIDATION {
		t.Fatalf("a too long message: %v, want EVALIDATION", err)
	}
	again := newClient(t, control.Config{Store: f, StateFile: state})
	if st := again.Status(); !st.Maintenance || st.Overrides[0].Actor != "admin token from 10.0.0.7" || !st.Overrides[0].Since.Equal(c.Status().Overrides[0].Since) {
		t.Fatalf("after a restart: %+v", st)
	}
	if _, err := again.SetLocal(false, "", "y"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state file after clearing: %v", err)
	}
	if again.Maintenance() != nil {
		t.Fatal("still in maintenance after clearing")
	}
}

// TestHeartbeats: the heartbeat carries the applied version, the channel
// order it makes, overrides and dependency health, and is written again
// at once when they change.
func TestHeartbeats(t *testing.T) {
	testenv.EachDatabase(t, func(t *testing.T, dsn string) {
		db := openStore(t, dsn)
		// The router's part: the order follows the applied document, with
		// tcb as the channel given at start.
		var applied atomic.Pointer[outlast.ControlConfig]
		applied.Store(&outlast.ControlConfig{})
		c := newClient(t, control.Config{Store: db, Instances: db, Watch: db.WatchControl, InstanceID: "i-1", Addr: "127.0.0.1:1",
			HeartbeatInterval: time.Hour, PollInterval: time.Hour,
			Apply: func(cfg *outlast.ControlConfig) { applied.Store(cfg) },
			Channels: func() (order, all []string) {
				return applied.Load().Order("tcb"), []string{"acb", "tcb"}
			},
			Health: func(ctx context.Context) []outlast.DependencyHealth {
				return []outlast.DependencyHealth{{Name: "database", OK: true}, {Name: "redis", OK: false, Detail: "down"}}
			}})
		if err := c.Load(context.Background()); err != nil {
			t.Fatal(err)
		}
		run(t, c)
		instance := func() *outlast.InstanceStatus {
			is, err := db.Instances(context.Background())
			if err != nil || len(is) != 1 {
				return nil
			}
			return is[0]
		}
		testenv.WaitFor(t, 10*time.Second, "first heartbeat", func() bool { return instance() != nil })
		if i := instance(); !slices.Equal(i.ChannelOrder, []string{"tcb"}) || !slices.Equal(i.Channels, []string{"acb", "tcb"}) {
			t.Fatalf("first heartbeat's channels: order %q of %q, want [tcb] of [acb tcb]", i.ChannelOrder, i.Channels)
		}
		testenv.WaitFor(t, 10*time.Second, "listening", func() bool { return c.Status().Listening })
		v1 := maintenance(true, "")
		v1.Channels = map[string]outlast.ChannelConfig{"acb": {Enabled: true}, "tcb": {Enabled: true}}
		v1.ActiveChannel, v1.Fallback = "acb", []string{"tcb"}
		put(t, db, v1)
		testenv.WaitFor(t, 5*time.Second, "heartbeat of version 1", func() bool {
			i := instance()
			return i != nil && i.AppliedVersion == 1 && i.Maintenance
		})
		if i := instance(); !slices.Equal(i.ChannelOrder, []string{"acb", "tcb"}) {
			t.Fatalf("heartbeat of version 1: channel order %q, want [acb tcb]", i.ChannelOrder)
		}
		if _, err := c.SetLocal(true, "x", "me"); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, 5*time.Second, "heartbeat with the override", func() bool {
			i := instance()
			return i != nil && len(i.Overrides) == 1
		})
		i := instance()
		if i.Addr != "127.0.0.1:1" || len(i.Dependencies) != 2 || i.Dependencies[1].OK || i.AppliedAt.IsZero() {
			t.Fatalf("heartbeat %+v", i)
		}
	})
}

// TestHeartbeatChannels: an instance that reports its channels says so
// even when no channel takes new payouts ([], not null), and one without
// the hook reports none (null).
func TestHeartbeatChannels(t *testing.T) {
	db := openStore(t, "sqlite:"+t.TempDir()+"/l.db")
	for _, tc := range []struct {
		hook func() (order, all []string)
		want string
	}{
		{nil, `"channel_order":null,"channels":null`},
		{func() (order, all []string) { return nil, []string{"tcb"} }, `"channel_order":[],"channels":["tcb"]`},
	} {
		c := newClient(t, control.Config{Store: db, InstanceID: "i-1", Channels: tc.hook})
		b, err := json.Marshal(c.Heartbeat(context.Background()))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), tc.want) {
			t.Errorf("heartbeat with hook %t = %s, want %s in it", tc.hook != nil, b, tc.want)
		}
	}
}

// TestConcurrentLocalSwitchesKeepFileAndMemoryAgreed: operators switching
// the same instance at once must leave the state file saying what is in
// force, or a restart brings back a switch that was cleared (or loses one
// that is on).
func TestConcurrentLocalSwitchesKeepFileAndMemoryAgreed(t *testing.T) {
	db := openStore(t, "sqlite:"+t.TempDir()+"/l.db")
	state := filepath.Join(t.TempDir(), "break-glass.json")
	c := newClient(t, control.Config{Store: db, StateFile: state})
	for round := range 20 {
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				if _, err := c.SetLocal(i%2 == 0, fmt.Sprintf("round %d", round), "op"); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		restarted := newClient(t, control.Config{Store: db, StateFile: state})
		if got, want := restarted.Maintenance() != nil, c.Maintenance() != nil; got != want {
			t.Fatalf("round %d: in force %t, but after a restart %t: the state file says otherwise", round, want, got)
		}
	}
}

// TestRefusedFirstDocumentReadOnce: a document that does not validate,
// found before any was applied, is refused once, not read and logged
// again at every poll, and the next good version is taken.
func TestRefusedFirstDocumentReadOnce(t *testing.T) {
	db := openStore(t, "sqlite:"+t.TempDir()+"/l.db")
	if _, err := db.SQL().Exec(`UPDATE control_config SET version = 1, doc = '{"active_channel":"nowhere"}'`); err != nil {
		t.Fatal(err)
	}
	reads := &countingStore{ControlStore: db}
	c := newClient(t, control.Config{Store: reads, PollInterval: 5 * time.Millisecond})
	if err := c.Load(context.Background()); err == nil {
		t.Fatal("Load took a document that does not validate")
	}
	run(t, c)
	testenv.WaitFor(t, 5*time.Second, "ten polls", func() bool { return reads.versions.Load() >= 10 })
	if n := reads.docs.Load(); n != 1 {
		t.Fatalf("the refused document was read %d times, want once", n)
	}
	if st := c.Status(); st.AppliedVersion != -1 || st.Stale || st.LastError != "" {
		t.Fatalf("status %+v: want nothing applied, the database reachable", st)
	}
	put(t, db, maintenance(true, ""))
	testenv.WaitFor(t, 5*time.Second, "version 2 applied", func() bool { return c.Status().AppliedVersion == 2 })
}

// countingStore counts the reads of the real store.
type countingStore struct {
	outlast.ControlStore
	versions, docs atomic.Int64
}

func (s *countingStore) ControlVersion(ctx context.Context) (int64, error) {
	s.versions.Add(1)
	return s.ControlStore.ControlVersion(ctx)
}

func (s *countingStore) ControlConfig(ctx context.Context) (*outlast.ControlConfig, error) {
	s.docs.Add(1)
	return s.ControlStore.ControlConfig(ctx)
}
