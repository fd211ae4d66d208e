package redis

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/redis/redistest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The contract the tiered cache consumes (declared there; repeated here so
// a drift breaks this build).
var (
	_ interface {
		Get(ctx context.Context, key string) (value []byte, version int64, found bool, err error)
		Set(ctx context.Context, key string, value []byte, version int64, ttl time.Duration) error
		Delete(ctx context.Context, key string) error
	} = (*Store)(nil)
	_ interface {
		Publish(ctx context.Context, key string) error
		Subscribe(ctx context.Context, fn func(key string)) error
	} = (*Store)(nil)
)

// failFastMax is the generous bound on a call against a dead or hung Redis:
// the timeouts are 100-200 ms, the go-redis defaults would take 5 s or more.
const failFastMax = time.Second

// openStore opens a Store on url and closes it when t ends.
func openStore(t *testing.T, url string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("Open(%q): %v", url, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// subscribe runs s.Subscribe until t ends and returns the received keys.
func subscribe(t *testing.T, s *Store) <-chan string {
	t.Helper()
	keys := make(chan string, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Subscribe(ctx, func(k string) {
			select {
			case keys <- k:
			default:
				t.Errorf("subscriber buffer full, dropped %q", k)
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Subscribe returned %v, want nil after cancel", err)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("Subscribe did not return within 2s of cancel")
		}
	})
	return keys
}

// waitSubscribers waits until the server of s counts n subscribers on the channel.
func waitSubscribers(t *testing.T, s *Store, n int64) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, "subscribers on the invalidation channel", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		m, err := s.Client().PubSubNumSub(ctx, s.channel).Result()
		return err == nil && m[s.channel] >= n
	})
}

func receive(t *testing.T, keys <-chan string, want string) {
	t.Helper()
	select {
	case got := <-keys:
		if got != want {
			t.Fatalf("received key %q, want %q", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no invalidation for %q within 5s", want)
	}
}

func TestGetSetDelete(t *testing.T) {
	srv := redistest.Start(t)
	s := openStore(t, srv.URL(), Options{Prefix: "t1:"})
	ctx := context.Background()

	if _, _, found, err := s.Get(ctx, "missing"); err != nil || found {
		t.Fatalf("Get(missing) = found %v, err %v; want not found, nil", found, err)
	}
	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	for key, value := range map[string][]byte{"bin": binary, "empty": {}, "k\x00\xff": []byte("v")} {
		if err := s.Set(ctx, key, value, 7, time.Minute); err != nil {
			t.Fatalf("Set(%q): %v", key, err)
		}
		got, ver, found, err := s.Get(ctx, key)
		if err != nil || !found || ver != 7 || !bytes.Equal(got, value) {
			t.Fatalf("Get(%q) = %q, %d, %v, %v; want %q, 7, true, nil", key, got, ver, found, err, value)
		}
	}
	if n, err := s.Client().Exists(ctx, "t1:bin").Result(); err != nil || n != 1 {
		t.Errorf("key t1:bin exists = %d, %v; want the prefix applied", n, err)
	}
	if err := s.Delete(ctx, "bin"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, _, found, err := s.Get(ctx, "bin"); err != nil || found {
		t.Fatalf("Get after Delete = found %v, err %v; want not found", found, err)
	}
	if err := s.Set(ctx, "bin", []byte("again"), 1, time.Minute); err != nil {
		t.Fatalf("Set after Delete: %v", err)
	}
	if got, ver, found, _ := s.Get(ctx, "bin"); !found || ver != 1 || string(got) != "again" {
		t.Errorf("Get after Delete and Set = %q, %d, %v; want again, 1, true", got, ver, found)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	// A restarted or failed-over Redis has no scripts: EVALSHA must fall back.
	if err := s.Client().ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, "bin", []byte("after flush"), 2, time.Minute); err != nil {
		t.Fatalf("Set after SCRIPT FLUSH: %v", err)
	}
	if got, _, _, _ := s.Get(ctx, "bin"); string(got) != "after flush" {
		t.Errorf("Get after SCRIPT FLUSH and Set = %q, want %q", got, "after flush")
	}
}

func TestCollectors(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	for _, c := range Collectors() {
		if err := reg.Register(c); err != nil {
			t.Fatalf("Register: %v", err)
		}
	}
}

func TestSetIsVersioned(t *testing.T) {
	srv := redistest.Start(t)
	s := openStore(t, srv.URL(), Options{})
	ctx := context.Background()
	const big = int64(1) << 62 // beyond 2^53, where Lua doubles lose the low bits
	steps := []struct {
		value   string
		version int64
		want    string // value stored afterwards
	}{
		{"a", 10, "a"},
		{"older", 9, "a"},
		{"equal", 10, "a"},
		{"newer", 11, "newer"},
		{"big", big + 2, "big"},
		{"big-older", big + 1, "big"},
		{"big-equal", big + 2, "big"},
		{"big-newer", big + 3, "big-newer"},
	}
	ignored := testutil.ToFloat64(Calls.WithLabelValues(opSet, resultIgnored))
	for _, st := range steps {
		if err := s.Set(ctx, "k", []byte(st.value), st.version, time.Minute); err != nil {
			t.Fatalf("Set(%q, v%d): %v", st.value, st.version, err)
		}
		if got, _, _, err := s.Get(ctx, "k"); err != nil || string(got) != st.want {
			t.Fatalf("after Set(%q, v%d): Get = %q, %v; want %q", st.value, st.version, got, err, st.want)
		}
	}
	if got := testutil.ToFloat64(Calls.WithLabelValues(opSet, resultIgnored)) - ignored; got != 4 {
		t.Errorf("ignored Sets counted = %v, want 4", got)
	}
	// Negative versions order as int64 does.
	for _, v := range []int64{-5, -3} {
		if err := s.Set(ctx, "neg", []byte{byte(-v)}, v, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if _, ver, _, _ := s.Get(ctx, "neg"); ver != -3 {
		t.Errorf("version after Set(-5), Set(-3) = %d, want -3", ver)
	}
}

func TestSetTTL(t *testing.T) {
	srv := redistest.Start(t)
	s := openStore(t, srv.URL(), Options{Prefix: "ttl:"})
	ctx := context.Background()
	if err := s.Set(ctx, "k", []byte("v"), 1, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	pttl := func() time.Duration {
		d, err := s.Client().PTTL(ctx, "ttl:k").Result()
		if err != nil {
			t.Fatalf("PTTL: %v", err)
		}
		return d
	}
	if d := pttl(); d <= 0 || d > 1500*time.Millisecond {
		t.Fatalf("PTTL = %s, want in (0, 1.5s]", d)
	}
	// An ignored Set must not extend the life of the newer entry.
	if err := s.Set(ctx, "k", []byte("old"), 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	if d := pttl(); d > 1500*time.Millisecond {
		t.Errorf("PTTL after ignored Set = %s, want <= 1.5s", d)
	}
	if err := s.Set(ctx, "k", []byte("new"), 2, time.Hour); err != nil {
		t.Fatal(err)
	}
	if d := pttl(); d <= 59*time.Minute {
		t.Errorf("PTTL after newer Set = %s, want about 1h", d)
	}
	if err := s.Set(ctx, "k", []byte("v"), 3, 0); err == nil {
		t.Errorf("Set with ttl 0 = nil, want error")
	}
	if err := s.Set(ctx, "k", make([]byte, DefaultValueBytesMax+1), 4, time.Minute); err == nil {
		t.Errorf("Set of %d bytes = nil, want error", DefaultValueBytesMax+1)
	}
	if _, _, _, err := s.Get(ctx, string(make([]byte, keyBytesMax+1))); err == nil {
		t.Errorf("Get with a %d-byte key = nil error, want error", keyBytesMax+1)
	}
}

func TestPublishSubscribe(t *testing.T) {
	srv := redistest.Start(t)
	a := openStore(t, srv.URL(), Options{})
	b := openStore(t, srv.URL(), Options{})
	other := openStore(t, srv.URL(), Options{Prefix: "other:"})
	keysA, keysB, keysOther := subscribe(t, a), subscribe(t, b), subscribe(t, other)
	waitSubscribers(t, a, 2)
	waitSubscribers(t, other, 1)

	for _, k := range []string{"account:1", "payout:\x00\xff"} {
		if err := b.Publish(context.Background(), k); err != nil {
			t.Fatalf("Publish(%q): %v", k, err)
		}
		receive(t, keysA, k)
		receive(t, keysB, k) // the publisher hears itself too
	}
	select {
	case k := <-keysOther:
		t.Errorf("store with another prefix received %q", k)
	default:
	}
}

func TestSubscribeSurvivesRestart(t *testing.T) {
	srv := redistest.Start(t)
	a := openStore(t, srv.URL(), Options{PingInterval: 200 * time.Millisecond})
	b := openStore(t, srv.URL(), Options{})
	keys := subscribe(t, a)
	waitSubscribers(t, a, 1)
	before := testutil.ToFloat64(Resubscribes)

	srv.Kill()
	srv.Restart()
	waitSubscribers(t, a, 1)
	if err := b.Publish(context.Background(), "after-restart"); err != nil {
		t.Fatalf("Publish after restart: %v", err)
	}
	receive(t, keys, "after-restart")
	if got := testutil.ToFloat64(Resubscribes) - before; got < 1 {
		t.Errorf("Resubscribes grew by %v, want >= 1", got)
	}
}

// TestSubscribeLeavesHungServer: a paused server answers nothing; the
// subscriber must notice through its pings and resubscribe once it resumes.
func TestSubscribeLeavesHungServer(t *testing.T) {
	srv := redistest.Start(t)
	a := openStore(t, srv.URL(), Options{PingInterval: 100 * time.Millisecond})
	b := openStore(t, srv.URL(), Options{})
	keys := subscribe(t, a)
	waitSubscribers(t, a, 1)
	before := testutil.ToFloat64(Calls.WithLabelValues(opSubscribe, resultTimeout))

	srv.Pause()
	testenv.WaitFor(t, 5*time.Second, "subscriber to time out on the paused server", func() bool {
		return testutil.ToFloat64(Calls.WithLabelValues(opSubscribe, resultTimeout)) > before
	})
	srv.Resume()
	testenv.WaitFor(t, 10*time.Second, "invalidation after resume", func() bool {
		_ = b.Publish(context.Background(), "after-resume")
		select {
		case k := <-keys:
			return k == "after-resume"
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})
}

func TestSubscribeStopsOnClose(t *testing.T) {
	srv := redistest.Start(t)
	s, err := Open(context.Background(), srv.URL(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Subscribe(context.Background(), func(string) {}) }()
	waitSubscribers(t, s, 1)
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Subscribe after Close returned %v, want nil", err)
		}
	case <-time.After(failFastMax): // Close waited for it; only the send to done remains
		t.Fatalf("Subscribe did not return after Close")
	}
	if d := time.Since(start); d > failFastMax {
		t.Errorf("Close took %s, want < %s", d, failFastMax)
	}
	if err := s.Subscribe(context.Background(), func(string) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("Subscribe on a closed Store = %v, want ErrClosed", err)
	}
}

// callAll runs every operation once against s and checks that each fails
// within failFastMax; it returns the slowest call.
func callAll(t *testing.T, s *Store, what string) time.Duration {
	t.Helper()
	ctx := context.Background() // no deadline: the client's own timeouts must bound the calls
	ops := map[string]func() error{
		"Get":     func() error { _, _, _, err := s.Get(ctx, "k"); return err },
		"Set":     func() error { return s.Set(ctx, "k", []byte("v"), time.Now().UnixNano(), time.Minute) },
		"Delete":  func() error { return s.Delete(ctx, "k") },
		"Publish": func() error { return s.Publish(ctx, "k") },
		"Ping":    func() error { return s.Ping(ctx) },
	}
	var slowest time.Duration
	for name, op := range ops {
		start := time.Now()
		err := op()
		d := time.Since(start)
		slowest = max(slowest, d)
		if err == nil {
			t.Errorf("%s with Redis %s = nil, want error", name, what)
		}
		if d > failFastMax {
			t.Errorf("%s with Redis %s took %s, want < %s", name, what, d, failFastMax)
		}
	}
	return slowest
}

func TestFailFastWhenKilled(t *testing.T) {
	srv := redistest.Start(t)
	s := openStore(t, srv.URL(), Options{})
	if err := s.Set(context.Background(), "k", []byte("v"), 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	var slowest time.Duration
	for range 3 {
		slowest = max(slowest, callAll(t, s, "killed"))
	}
	t.Logf("slowest call with Redis killed: %s", slowest)
	srv.Restart()
	waitWorking(t, s)
}

func TestFailFastWhenPaused(t *testing.T) {
	srv := redistest.Start(t)
	s := openStore(t, srv.URL(), Options{})
	if err := s.Set(context.Background(), "k", []byte("v"), 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	timeouts := testutil.ToFloat64(Calls.WithLabelValues(opGet, resultTimeout))
	slowest := callAll(t, s, "paused")

	// Concurrent callers, more than the pool holds, all fail within the bound.
	const callers = 2 * DefaultPoolSize
	var wg sync.WaitGroup
	durations := make([]time.Duration, callers)
	for i := range callers {
		wg.Go(func() {
			start := time.Now()
			_, _, _, err := s.Get(context.Background(), "k")
			durations[i] = time.Since(start)
			if err == nil {
				t.Errorf("concurrent Get with Redis paused = nil, want error")
			}
		})
	}
	wg.Wait()
	for _, d := range durations {
		slowest = max(slowest, d)
		if d > failFastMax {
			t.Errorf("concurrent Get with Redis paused took %s, want < %s", d, failFastMax)
		}
	}
	if got := testutil.ToFloat64(Calls.WithLabelValues(opGet, resultTimeout)) - timeouts; got < 1 {
		t.Errorf("Get timeouts counted = %v, want >= 1 (a hang is a timeout, not a refusal)", got)
	}
	t.Logf("slowest call with Redis paused: %s", slowest)
	srv.Resume()
	waitWorking(t, s)
}

func TestOpenWhileDown(t *testing.T) {
	srv := redistest.Start(t)
	srv.Kill()
	s := openStore(t, srv.URL(), Options{})
	callAll(t, s, "down at Open")
	srv.Restart()
	waitWorking(t, s)
}

// waitWorking waits until a Set and a Get succeed again.
func waitWorking(t *testing.T, s *Store) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, "Redis calls to succeed again", func() bool {
		ctx := context.Background()
		if err := s.Set(ctx, "recovered", []byte("yes"), time.Now().UnixNano(), time.Minute); err != nil {
			return false
		}
		v, _, found, err := s.Get(ctx, "recovered")
		return err == nil && found && string(v) == "yes"
	})
}

func TestCluster(t *testing.T) {
	// One node holding all 16384 slots is a real cluster to the client:
	// CLUSTER SLOTS, MOVED handling and per-slot routing of the script.
	srv := redistest.Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	if _, err := redistest.Command(srv.Addr, "CLUSTER", "ADDSLOTSRANGE", "0", "16383"); err != nil {
		t.Fatalf("CLUSTER ADDSLOTSRANGE: %v", err)
	}
	testenv.WaitFor(t, 10*time.Second, "cluster_state:ok", func() bool {
		info, err := redistest.Command(srv.Addr, "CLUSTER", "INFO")
		return err == nil && bytes.Contains([]byte(info), []byte("cluster_state:ok"))
	})
	s := openStore(t, "redis-cluster://"+srv.Addr, Options{})
	ctx := context.Background()
	for _, k := range []string{"a", "b", "c", "account:42"} {
		if err := s.Set(ctx, k, []byte("v-"+k), 2, time.Minute); err != nil {
			t.Fatalf("cluster Set(%q): %v", k, err)
		}
		if err := s.Set(ctx, k, []byte("older"), 1, time.Minute); err != nil {
			t.Fatalf("cluster Set(%q, older): %v", k, err)
		}
		if v, ver, found, err := s.Get(ctx, k); err != nil || !found || ver != 2 || string(v) != "v-"+k {
			t.Fatalf("cluster Get(%q) = %q, %d, %v, %v", k, v, ver, found, err)
		}
		if err := s.Delete(ctx, k); err != nil {
			t.Fatalf("cluster Delete(%q): %v", k, err)
		}
	}
	keys := subscribe(t, s)
	waitSubscribers(t, s, 1)
	if err := s.Publish(ctx, "cluster-key"); err != nil {
		t.Fatalf("cluster Publish: %v", err)
	}
	receive(t, keys, "cluster-key")
}
