package testenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast/internal/pgproc"
)

// SetPostgresReadOnly makes the database of dsn (one of PostgresDSN's)
// answer every write with SQLSTATE 25006, as a primary demoted during a
// failover does, or writable again: it sets default_transaction_read_only
// on the database and ends its open sessions, so every client reconnects
// under the new setting (which itself looks like a failover: 57P01).
func SetPostgresReadOnly(t testing.TB, dsn string, readOnly bool) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parse %q: %v", dsn, err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	admin, err := sql.Open("pgx", PostgresAddr)
	if err != nil {
		t.Fatalf("open admin connection: %v", err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, fmt.Sprintf("ALTER DATABASE %s SET default_transaction_read_only = %t", name, readOnly)); err != nil {
		t.Fatalf("set %s read-only=%t: %v", name, readOnly, err)
	}
	if _, err := admin.ExecContext(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name); err != nil {
		t.Fatalf("end sessions of %s: %v", name, err)
	}
}

// Postgres is a private PostgreSQL server on a free port, for tests that
// stop and start the database; the shared server is never stopped. It is
// a thin testing.TB wrapper over internal/pgproc.
type Postgres struct {
	t   testing.TB
	srv *pgproc.Server
}

// StartPostgres initialises a data directory with initdb, starts a server
// on a free port and stops it when t ends. It skips t, or fails it under
// CI, if the PostgreSQL binaries are missing, or, when tests run as root,
// the "postgres" user PostgreSQL must run as.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	srv, err := pgproc.Start(context.Background(), pgproc.Options{})
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, pgproc.ErrNoUser) {
		Missing(t, "PostgreSQL server binaries (initdb, postgres)", err)
		return nil
	}
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	p := &Postgres{t: t, srv: srv}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("PostgreSQL %s output:\n%s", srv.Addr(), srv.Output())
		}
		if err := srv.Stop(); err != nil {
			t.Errorf("stop PostgreSQL %s: %v", srv.Addr(), err)
		}
	})
	return p
}

// DSN is the server's postgres database.
func (p *Postgres) DSN() string { return p.srv.DSN() }

// Start starts the (stopped) server and waits until it takes connections.
func (p *Postgres) Start() {
	p.t.Helper()
	if err := p.srv.Restart(context.Background()); err != nil {
		p.t.Fatalf("start PostgreSQL: %v", err)
	}
}

// Stop stops the server at once, as a crash would: sessions are cut and
// the server recovers from its WAL on the next Start.
func (p *Postgres) Stop() {
	p.t.Helper()
	if err := p.srv.Crash(); err != nil {
		p.t.Fatalf("stop PostgreSQL: %v", err)
	}
}
