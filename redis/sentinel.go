package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Thresholds of CheckSentinel.
const (
	// sentinelsMin: with fewer, a majority cannot survive the loss of one.
	sentinelsMin = 3
	// downAfterMax: past this, a dead master goes unnoticed (and the cache
	// runs degraded) for longer than the 10 s an operator would accept.
	downAfterMax = 10 * time.Second
	// sentinelTimeout bounds each SENTINEL command; a doctor can wait
	// longer than the cache path, but not forever.
	sentinelTimeout  = 500 * time.Millisecond
	sentinelAddrsMax = 16
)

// CheckSentinel asks every sentinel in addrs about master (SENTINEL MASTER,
// SENTINELS, REPLICAS, CKQUORUM) and returns human-readable warnings about a
// setup that will not fail over when it must: a quorum equal to the number
// of sentinels (seed 002: quorum 3 of 3 blocked the failover when one
// sentinel was partitioned), fewer than 3 sentinels, no healthy replica, a
// down-after-milliseconds over 10 s, a sentinel or replica that is down.
// Identical warnings from several sentinels are merged. An unreachable
// sentinel is a warning; the error is for when none answers.
func CheckSentinel(ctx context.Context, addrs []string, master string) ([]string, error) {
	if len(addrs) == 0 || len(addrs) > sentinelAddrsMax {
		return nil, fmt.Errorf("redis check sentinel: %d addresses, want 1 to %d", len(addrs), sentinelAddrsMax)
	}
	var (
		order   []string                // warnings in order of first appearance
		sources = map[string][]string{} // warning -> sentinels that gave it
		errs    []error
	)
	for _, addr := range addrs {
		ws, err := checkOneSentinel(ctx, addr, master, len(addrs))
		if err != nil {
			errs = append(errs, fmt.Errorf("sentinel %s: %w", addr, err))
			ws = []string{fmt.Sprintf("unreachable or not monitoring %q: %v", master, err)}
		}
		for _, w := range ws {
			if _, seen := sources[w]; !seen {
				order = append(order, w)
			}
			sources[w] = append(sources[w], addr)
		}
	}
	if len(errs) == len(addrs) {
		return nil, fmt.Errorf("redis check sentinel: %w", errors.Join(errs...))
	}
	warnings := make([]string, 0, len(order))
	for _, w := range order {
		warnings = append(warnings, fmt.Sprintf("sentinel %s: %s", strings.Join(sources[w], ", "), w))
	}
	return warnings, nil
}

func checkOneSentinel(ctx context.Context, addr, master string, given int) ([]string, error) {
	c := goredis.NewSentinelClient(&goredis.Options{
		Addr:                     addr,
		DialTimeout:              DefaultDialTimeout,
		DialerRetries:            1,
		ReadTimeout:              sentinelTimeout,
		WriteTimeout:             sentinelTimeout,
		MaxRetries:               -1,
		PoolSize:                 1,
		MaintNotificationsConfig: disabledMaintNotifications,
	})
	defer c.Close()
	m, err := c.Master(ctx, master).Result()
	if err != nil {
		return nil, err
	}
	sentinels, err := c.Sentinels(ctx, master).Result()
	if err != nil {
		return nil, err
	}
	replicas, err := c.Replicas(ctx, master).Result()
	if err != nil {
		return nil, err
	}
	ws := masterWarnings(m, len(sentinels)+1, given)
	ws = append(ws, peerWarnings("sentinel", sentinels)...)
	ws = append(ws, replicaWarnings(replicas)...)
	if err := c.CkQuorum(ctx, master).Err(); err != nil {
		ws = append(ws, fmt.Sprintf("SENTINEL CKQUORUM fails: %v", err))
	}
	return ws, nil
}

func masterWarnings(m map[string]string, known, given int) []string {
	var ws []string
	quorum, _ := strconv.Atoi(m["quorum"])
	majority := known/2 + 1
	switch {
	case quorum > known:
		ws = append(ws, fmt.Sprintf("quorum %d but only %d sentinels: failover is impossible; set quorum to %d", quorum, known, majority))
	case quorum == known && known > 1:
		ws = append(ws, fmt.Sprintf("quorum %d of %d sentinels: losing any one sentinel blocks failover (seed 002); set quorum to %d", quorum, known, majority))
	}
	if known < sentinelsMin {
		ws = append(ws, fmt.Sprintf("%d sentinel(s) monitor the master: fewer than %d cannot lose one and still elect a leader", known, sentinelsMin))
	}
	if known < given {
		ws = append(ws, fmt.Sprintf("knows %d sentinels but %d were given: discovery incomplete (is the __sentinel__:hello channel reachable?)", known, given))
	}
	if n, _ := strconv.Atoi(m["num-slaves"]); n == 0 {
		ws = append(ws, "master has 0 replicas: there is nothing to fail over to")
	}
	if ms, err := strconv.ParseInt(m["down-after-milliseconds"], 10, 64); err == nil && time.Duration(ms)*time.Millisecond > downAfterMax {
		ws = append(ws, fmt.Sprintf("down-after-milliseconds %d: a dead master goes unnoticed for more than %s", ms, downAfterMax))
	}
	if f := m["flags"]; strings.Contains(f, "s_down") || strings.Contains(f, "o_down") {
		ws = append(ws, fmt.Sprintf("master %s:%s is down now (flags %s)", m["ip"], m["port"], f))
	}
	return ws
}

func peerWarnings(kind string, peers []map[string]string) []string {
	var ws []string
	for _, p := range peers {
		switch f := p["flags"]; {
		case strings.Contains(f, "s_down"):
			ws = append(ws, fmt.Sprintf("%s %s:%s is down (flags %s)", kind, p["ip"], p["port"], f))
		case strings.Contains(f, "disconnected"):
			ws = append(ws, fmt.Sprintf("%s %s:%s is not connected (flags %s)", kind, p["ip"], p["port"], f))
		}
	}
	return ws
}

func replicaWarnings(replicas []map[string]string) []string {
	ws := peerWarnings("replica", replicas)
	healthy := 0
	for _, r := range replicas {
		if f := r["flags"]; strings.Contains(f, "s_down") || strings.Contains(f, "disconnected") {
			continue // already warned; its link status is stale
		}
		if link := r["master-link-status"]; link != "" && link != "ok" {
			ws = append(ws, fmt.Sprintf("replica %s:%s has master-link-status %s", r["ip"], r["port"], link))
			continue
		}
		healthy++
	}
	if len(replicas) > 0 && healthy == 0 {
		ws = append(ws, fmt.Sprintf("none of %d replicas is healthy: a failover has no candidate", len(replicas)))
	}
	return ws
}
