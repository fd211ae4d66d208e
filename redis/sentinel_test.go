package redis

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/redis/redistest"
	goredis "github.com/redis/go-redis/v9"
)

const masterName = "mymaster"

// failoverGapMax bounds kill-to-first-successful-Set. Sentinel needs
// down-after-milliseconds (1 s) to suspect, a vote, and a promotion; a few
// seconds are expected, an election retry after failover-timeout more.
const failoverGapMax = 20 * time.Second

// startSentinelSetup runs a master, one replica and three sentinels with
// quorum 2 (see redistest.StartSentinelGroup).
func startSentinelSetup(t *testing.T) (master, replica *redistest.Server, addrs []string) {
	t.Helper()
	return redistest.StartSentinelGroup(t, masterName)
}

func TestSentinel(t *testing.T) {
	master, replica, addrs := startSentinelSetup(t)
	ctx := context.Background()
	t.Run("CheckSentinel", func(t *testing.T) { checkSentinelQuorum(t, addrs) })

	url := "redis-sentinel://" + strings.Join(addrs, ",") + "/" + masterName
	s := openStore(t, url, Options{})
	sub := openStore(t, url, Options{PingInterval: 200 * time.Millisecond})
	keys := subscribe(t, sub)
	if err := s.Set(ctx, "before", []byte("v1"), 1, time.Minute); err != nil {
		t.Fatalf("Set before failover: %v", err)
	}
	if n, err := s.Client().Do(ctx, "WAIT", 1, 1000).Int(); err != nil || n < 1 {
		t.Fatalf("WAIT 1 = %d, %v; want the replica to hold the write", n, err)
	}

	killed := time.Now()
	master.Kill()
	attempts, slowest := 0, time.Duration(0)
	testenv.WaitFor(t, failoverGapMax, "Set to succeed on the promoted replica", func() bool {
		attempts++
		start := time.Now()
		err := s.Set(ctx, "after", []byte("v2"), 2, time.Minute)
		slowest = max(slowest, time.Since(start))
		return err == nil
	})
	gap := time.Since(killed)
	t.Logf("sentinel failover gap (SIGKILL of master to first successful Set): %s; %d attempts, slowest %s",
		gap.Round(time.Millisecond), attempts, slowest.Round(time.Millisecond))
	if slowest > failFastMax {
		t.Errorf("a Set during failover took %s, want < %s", slowest, failFastMax)
	}

	sc := goredis.NewSentinelClient(&goredis.Options{Addr: addrs[0], DialTimeout: time.Second, ReadTimeout: time.Second})
	defer sc.Close()
	if a, err := sc.GetMasterAddrByName(ctx, masterName).Result(); err != nil || len(a) != 2 || a[1] != strconv.Itoa(replica.Port) {
		t.Errorf("master after failover = %v, %v; want port %d", a, err, replica.Port)
	}
	if v, ver, found, err := s.Get(ctx, "before"); err != nil || !found || ver != 1 || string(v) != "v1" {
		t.Errorf("Get(before) after failover = %q, %d, %v, %v; want the replicated v1", v, ver, found, err)
	}
	// The subscriber follows the master too.
	testenv.WaitFor(t, 10*time.Second, "invalidation through the new master", func() bool {
		_ = s.Publish(ctx, "after-failover")
		select {
		case k := <-keys:
			return k == "after-failover"
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})

	warnings, err := CheckSentinel(ctx, addrs, masterName)
	if err != nil || !containsWarning(warnings, "replica 127.0.0.1:"+strconv.Itoa(master.Port)) ||
		!containsWarning(warnings, "none of 1 replicas is healthy") {
		t.Errorf("CheckSentinel after failover = %q, %v; want warnings about the dead old master", warnings, err)
	}
	t.Logf("CheckSentinel after failover: %q", warnings)
}

func checkSentinelQuorum(t *testing.T, addrs []string) {
	ctx := context.Background()
	warnings, err := CheckSentinel(ctx, addrs, masterName)
	if err != nil || len(warnings) != 0 {
		t.Errorf("CheckSentinel(quorum 2 of 3) = %q, %v; want no warnings", warnings, err)
	}
	setQuorum(t, addrs, 3)
	warnings, err = CheckSentinel(ctx, addrs, masterName)
	if err != nil || !containsWarning(warnings, "quorum 3 of 3") {
		t.Errorf("CheckSentinel(quorum 3 of 3) = %q, %v; want a quorum warning", warnings, err)
	}
	t.Logf("CheckSentinel with quorum 3 of 3: %q", warnings)
	setQuorum(t, addrs, 2)

	dead := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	warnings, err = CheckSentinel(ctx, append(addrs[:2:2], dead), masterName)
	if err != nil || !containsWarning(warnings, dead+": unreachable") {
		t.Errorf("CheckSentinel with one dead sentinel = %q, %v; want an unreachable warning", warnings, err)
	}
	if _, err := CheckSentinel(ctx, []string{dead}, masterName); err == nil {
		t.Errorf("CheckSentinel with no sentinel reachable = nil error, want error")
	}
	if _, err := CheckSentinel(ctx, addrs, "nosuchmaster"); err == nil {
		t.Errorf("CheckSentinel(unknown master) = nil error, want error")
	}
}

func setQuorum(t *testing.T, addrs []string, q int) {
	t.Helper()
	for _, a := range addrs {
		if _, err := redistest.Command(a, "SENTINEL", "SET", masterName, "quorum", strconv.Itoa(q)); err != nil {
			t.Fatalf("SENTINEL SET quorum %d on %s: %v", q, a, err)
		}
	}
}

func containsWarning(ws []string, sub string) bool {
	for _, w := range ws {
		if strings.Contains(w, sub) {
			return true
		}
	}
	return false
}
