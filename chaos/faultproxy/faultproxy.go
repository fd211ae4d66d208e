// Package faultproxy puts a TCP proxy in front of a dependency so that the
// chaos lab, tests and benchmarks can fault it on demand: latency, a hang
// (bytes stop, connections stay open), connection resets, a bandwidth
// limit, a partition (new connections refused, open ones closed), and
// healing. It runs Shopify's toxiproxy in-process, as a library, so a
// scenario needs no extra binary and no HTTP control API: each fault is a
// method call, and every method returns an error rather than failing a
// test.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Proxy forwards connections from Addr to an upstream address, with the
// faults set on it. It is safe for concurrent use.
type Proxy struct {
	mu          sync.Mutex // serialises fault changes
	p           *toxiproxy.Proxy
	partitioned bool
}

var (
	serverOnce sync.Once
	server     *toxiproxy.ApiServer
)

// apiServer is the one toxiproxy server every Proxy of this process
// hangs off; it never listens (faults are set by method calls), and its
// metrics go to a registry of its own, so that they never collide with
// the service's.
func apiServer() *toxiproxy.ApiServer {
	serverOnce.Do(func() {
		server = toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	})
	return server
}

// Start starts a proxy named name (for messages) on a free loopback port
// in front of upstream (host:port).
func Start(name, upstream string) (*Proxy, error) {
	p := toxiproxy.NewProxy(apiServer(), name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("fault proxy %s: %w", name, err)
	}
	return &Proxy{p: p}, nil
}

// Addr is where clients connect instead of the upstream.
func (x *Proxy) Addr() string {
	x.p.Lock()
	defer x.p.Unlock()
	return x.p.Listen
}

// Upstream is the address the proxy forwards to.
func (x *Proxy) Upstream() string { return x.p.Upstream }

// Latency delays every chunk of data in both directions by d, give or
// take jitter.
func (x *Proxy) Latency(d, jitter time.Duration) error {
	attrs := fmt.Sprintf(`{"latency": %d, "jitter": %d}`, d.Milliseconds(), jitter.Milliseconds())
	return x.both("latency", attrs)
}

// Hang stops all data in both directions while keeping connections open,
// as a hung process or a black-holed network does: callers see their
// requests go unanswered until their own timeouts.
func (x *Proxy) Hang() error { return x.both("timeout", `{"timeout": 0}`) }

// Reset answers every connection's data with a TCP reset, as a crashing
// process or a middlebox killing flows does.
func (x *Proxy) Reset() error { return x.both("reset_peer", `{"timeout": 0}`) }

// Bandwidth limits each direction to kbps kilobytes a second.
func (x *Proxy) Bandwidth(kbps int64) error {
	return x.both("bandwidth", fmt.Sprintf(`{"rate": %d}`, kbps))
}

// Partition cuts the dependency off: open connections are closed and new
// ones refused, until Heal.
func (x *Proxy) Partition() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.partitioned {
		x.p.Stop()
		x.partitioned = true
	}
	return nil
}

// Heal removes every fault: the toxics go and a partition ends, on the
// same address.
func (x *Proxy) Heal() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.p.Toxics.ResetToxics(context.Background())
	if x.partitioned {
		if err := x.p.Start(); err != nil {
			return fmt.Errorf("fault proxy %s: heal partition: %w", x.p.Name, err)
		}
		x.partitioned = false
	}
	return nil
}

// Close stops the proxy and closes its connections.
func (x *Proxy) Close() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.p.Stop()
}

// both adds toxic typ with attrs to each direction, replacing the same
// toxic set before.
func (x *Proxy) both(typ, attrs string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	var errs []error
	for _, stream := range []string{"upstream", "downstream"} {
		name := typ + "_" + stream
		if x.p.Toxics.GetToxic(name) != nil {
			if err := x.p.Toxics.RemoveToxic(context.Background(), name); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		body := fmt.Sprintf(`{"name": %q, "type": %q, "stream": %q, "toxicity": 1, "attributes": %s}`, name, typ, stream, attrs)
		if _, err := x.p.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
			errs = append(errs, fmt.Errorf("fault proxy %s: %s %s: %w", x.p.Name, typ, stream, err))
		}
	}
	return errors.Join(errs...)
}
