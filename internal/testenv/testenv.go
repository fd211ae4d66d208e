// Package testenv gives tests the servers they need the same way everywhere:
// the shared PostgreSQL, Redis and NATS on the development machine, a fresh
// database per test, free ports, and waiting on conditions with deadlines.
//
// A missing server skips the test on a developer's laptop; under CI=true it
// fails, so CI can never pass by skipping.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// Addresses of the shared servers; OUTLAST_TEST_* override them.
var (
	PostgresAddr = env("OUTLAST_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	RedisAddr    = env("OUTLAST_TEST_REDIS", "127.0.0.1:6379")
	NATSURL      = env("OUTLAST_TEST_NATS", "nats://127.0.0.1:4222")
)

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// CI reports whether the tests run under CI (CI=true), where a missing
// server is a failure rather than a skip.
func CI() bool { return os.Getenv("CI") == "true" }

// Missing skips t (or fails it under CI) because server is not reachable.
func Missing(t testing.TB, server string, err error) {
	t.Helper()
	if CI() {
		t.Fatalf("%s is required under CI=true but is not reachable: %v", server, err)
	}
	t.Skipf("skipping: %s is not reachable (%v); start it or run under CI=true to make this a failure", server, err)
}

// RequireTCP checks that something listens on addr (host:port).
func RequireTCP(t testing.TB, server, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		Missing(t, server, err)
		return
	}
	c.Close()
}

// PostgresDSN creates a fresh, uniquely named database on the shared
// PostgreSQL server, drops it when t ends, and returns its DSN.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	admin, err := sql.Open("pgx", PostgresAddr)
	if err != nil {
		Missing(t, "PostgreSQL", err)
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		admin.Close()
		Missing(t, "PostgreSQL at "+PostgresAddr, err)
		return ""
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "outlast_test_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", hostPort(PostgresAddr), name)
}

// EachDatabase runs fn as the subtests "sqlite" and "postgres", each with
// the DSN of a fresh, empty ledger database: a SQLite file in a temporary
// directory, or a database of its own on the shared PostgreSQL server.
func EachDatabase(t *testing.T, fn func(t *testing.T, dsn string)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, "sqlite:"+t.TempDir()+"/ledger.db") })
	t.Run("postgres", func(t *testing.T) { fn(t, PostgresDSN(t)) })
}

// hostPort pulls host:port out of a postgres:// URL.
func hostPort(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" {
		return "127.0.0.1:5432"
	}
	return u.Host
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitFor polls cond every 10 ms until it returns true or timeout passes,
// then fails t with what. It is the replacement for sleeping in tests.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Start runs loop in a goroutine with a context that stop cancels; stop then
// waits up to 30 s for loop to return and fails t if it returned an error or
// did not return. stop is idempotent and also runs at t's cleanup.
func Start(t testing.TB, name string, loop func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- loop(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s = %v, want nil", name, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("%s did not return within 30s of cancel", name)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// Clock is an injectable, goroutine-safe clock for Now seams.
type Clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

// NewClock returns a Clock standing at now.
func NewClock(now time.Time) *Clock { return &Clock{now: now} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
