package cache

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var errFake = errors.New("fake: connection refused")

// fakeL2 is an in-memory L2 with fault knobs: fail (every call errors), hang
// (every call blocks until its ctx ends) and Empty (a restart that lost
// everything). It counts calls and records when each Set happened.
type fakeL2 struct {
	fail atomic.Bool
	hang atomic.Bool

	gets, sets, deletes atomic.Int64

	mu       sync.Mutex
	items    map[string]fakeItem
	setTimes []time.Time
}

type fakeItem struct {
	value   []byte
	version int64
	expires time.Time
}

func newFakeL2() *fakeL2 { return &fakeL2{items: make(map[string]fakeItem)} }

func (f *fakeL2) fault(ctx context.Context) error {
	if f.hang.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	if f.fail.Load() {
		return errFake
	}
	return nil
}

func (f *fakeL2) Get(ctx context.Context, key string) ([]byte, int64, bool, error) {
	f.gets.Add(1)
	if err := f.fault(ctx); err != nil {
		return nil, 0, false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	it, ok := f.items[key]
	if !ok || time.Now().After(it.expires) {
		return nil, 0, false, nil
	}
	return it.value, it.version, true, nil
}

func (f *fakeL2) Set(ctx context.Context, key string, value []byte, version int64, ttl time.Duration) error {
	f.sets.Add(1)
	if err := f.fault(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setTimes = append(f.setTimes, time.Now())
	if it, ok := f.items[key]; ok && time.Now().Before(it.expires) && it.version >= version {
		return nil
	}
	f.items[key] = fakeItem{value: append([]byte(nil), value...), version: version, expires: time.Now().Add(ttl)}
	return nil
}

func (f *fakeL2) Delete(ctx context.Context, key string) error {
	f.deletes.Add(1)
	if err := f.fault(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.items, key)
	return nil
}

// Empty drops everything, as a Redis restarted without persistence.
func (f *fakeL2) Empty() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.items)
	f.setTimes = nil
}

func (f *fakeL2) has(key string) (fakeItem, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	it, ok := f.items[key]
	return it, ok
}

func (f *fakeL2) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.items)
}

func (f *fakeL2) writes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.setTimes...)
}

// hub is a broadcast shared by several caches' fakeBroadcasters.
type hub struct {
	mu   sync.Mutex
	subs map[int]func(string)
	next int
}

func newHub() *hub { return &hub{subs: make(map[int]func(string))} }

func (h *hub) Publish(_ context.Context, key string) error {
	h.mu.Lock()
	fns := make([]func(string), 0, len(h.subs))
	for _, fn := range h.subs {
		fns = append(fns, fn)
	}
	h.mu.Unlock()
	for _, fn := range fns {
		fn(key)
	}
	return nil
}

func (h *hub) Subscribe(ctx context.Context, fn func(key string)) error {
	h.mu.Lock()
	id := h.next
	h.next++
	h.subs[id] = fn
	h.mu.Unlock()
	<-ctx.Done()
	h.mu.Lock()
	delete(h.subs, id)
	h.mu.Unlock()
	return ctx.Err()
}

func (h *hub) subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// fakeClock is the Now seam, moved by hand.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// db is a fake source of truth: int values with versions, load counting,
// optional delay, failure and a gate that holds loads until released.
type db struct {
	mu       sync.Mutex
	rows     map[string]row
	loads    atomic.Int64
	inFlight atomic.Int64
	maxConc  atomic.Int64
	fail     atomic.Bool
	delay    time.Duration
	gate     chan struct{} // if not nil, loads wait for it to close (or ctx)
}

type row struct {
	Value   int
	Version int64
}

func newDB() *db { return &db{rows: make(map[string]row)} }

func (d *db) put(key string, value int, version int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rows[key] = row{value, version}
}

func (d *db) load(ctx context.Context, key string) (row, error) {
	d.loads.Add(1)
	n := d.inFlight.Add(1)
	defer d.inFlight.Add(-1)
	for {
		m := d.maxConc.Load()
		if n <= m || d.maxConc.CompareAndSwap(m, n) {
			break
		}
	}
	if d.gate != nil {
		select {
		case <-d.gate:
		case <-ctx.Done():
			return row{}, ctx.Err()
		}
	}
	if d.delay > 0 {
		select {
		case <-time.After(d.delay):
		case <-ctx.Done():
			return row{}, ctx.Err()
		}
	}
	if d.fail.Load() {
		return row{}, errFake
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.rows[key]
	if !ok {
		return row{}, ErrNotFound
	}
	return r, nil
}

func encodeRow(r row) ([]byte, error) {
	return []byte(strconv.Itoa(r.Value) + "/" + strconv.FormatInt(r.Version, 10)), nil
}

func decodeRow(b []byte) (row, error) {
	s := string(b)
	for i := range s {
		if s[i] == '/' {
			v, err := strconv.Atoi(s[:i])
			if err != nil {
				return row{}, err
			}
			ver, err := strconv.ParseInt(s[i+1:], 10, 64)
			return row{v, ver}, err
		}
	}
	return row{}, errors.New("bad row")
}

// testOptions returns options for a cache of rows over d and l2 (nil for
// L1 only), quiet and quick to fail.
func testOptions(d *db, l2 L2) Options[string, row] {
	o := Options[string, row]{
		Name:   "test",
		Load:   d.load,
		Encode: encodeRow,
		Decode: decodeRow,
		TTL:    time.Minute,
		Logger: quietLogger,
	}
	if l2 != nil {
		o.L2 = l2
	}
	return o
}

func newTestCache(t testing.TB, o Options[string, row]) *Cache[string, row] {
	t.Helper()
	c, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// runCache runs c.Run until the test ends and checks that it returned.
func runCache(t testing.TB, c *Cache[string, row]) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return 5 s after its ctx ended")
		}
	})
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond)
	}
}
