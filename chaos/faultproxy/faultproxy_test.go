package faultproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// echo serves TCP connections that echo each line back, until the test
// ends.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func start(t *testing.T) *Proxy {
	t.Helper()
	p, err := Start("echo", echo(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// roundTrip sends a line through addr and reads it back within wait; it
// returns how long that took.
func roundTrip(addr string, wait time.Duration) (time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	start := time.Now()
	_ = c.SetDeadline(start.Add(wait))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return 0, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0, err
	}
	if line != "ping\n" {
		return 0, errors.New("echoed " + line)
	}
	return time.Since(start), nil
}

func mustRoundTrip(t *testing.T, p *Proxy, what string) time.Duration {
	t.Helper()
	d, err := roundTrip(p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("%s: round trip through %s: %v", what, p.Addr(), err)
	}
	return d
}

// Each fault does what it says to a real TCP round trip, and Heal undoes
// it on the same address.
func TestFaults(t *testing.T) {
	p := start(t)
	mustRoundTrip(t, p, "no fault")

	if err := p.Latency(200*time.Millisecond, 0); err != nil {
		t.Fatal(err)
	}
	if d := mustRoundTrip(t, p, "latency"); d < 200*time.Millisecond {
		t.Errorf("round trip with 200 ms latency took %v", d)
	}

	if err := p.Hang(); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(p.Addr(), 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("round trip while hung = %v, want the caller's deadline", err)
	}

	if err := p.Heal(); err != nil {
		t.Fatal(err)
	}
	if d := mustRoundTrip(t, p, "healed"); d >= 200*time.Millisecond {
		t.Errorf("round trip after Heal took %v: the latency is still there", d)
	}

	if err := p.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(p.Addr(), 2*time.Second); err == nil {
		t.Error("round trip through a resetting proxy succeeded")
	}
	if err := p.Heal(); err != nil {
		t.Fatal(err)
	}

	addr := p.Addr()
	if err := p.Partition(); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(addr, time.Second); err == nil {
		t.Error("round trip through a partition succeeded")
	}
	if err := p.Heal(); err != nil {
		t.Fatal(err)
	}
	if p.Addr() != addr {
		t.Errorf("healed partition listens on %s, was %s", p.Addr(), addr)
	}
	mustRoundTrip(t, p, "partition healed")
}

// Setting a fault again replaces it instead of failing.
func TestFaultReplaced(t *testing.T) {
	p := start(t)
	if err := p.Latency(time.Second, 0); err != nil {
		t.Fatal(err)
	}
	if err := p.Latency(0, 0); err != nil {
		t.Fatalf("second Latency: %v", err)
	}
	if d := mustRoundTrip(t, p, "latency replaced"); d >= time.Second {
		t.Errorf("round trip took %v: the first latency is still there", d)
	}
}
