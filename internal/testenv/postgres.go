package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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
// stop and start the database; the shared server is never stopped.
type Postgres struct {
	t       testing.TB
	dir     string // data directory
	port    int
	cred    *syscall.Credential // the server's user when tests run as root
	pgCtl   string
	logFile string
}

// StartPostgres initialises a data directory with initdb, starts a server
// on a free port with pg_ctl and stops it (immediately) when t ends. It
// skips t, or fails it under CI, if the PostgreSQL binaries are missing.
// PostgreSQL refuses to run as root, so under root the server runs as the
// "postgres" user.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	initdb, err := exec.LookPath("initdb")
	if err != nil {
		Missing(t, "initdb (PostgreSQL server binaries)", err)
		return nil
	}
	pgCtl, err := exec.LookPath("pg_ctl")
	if err != nil {
		Missing(t, "pg_ctl (PostgreSQL server binaries)", err)
		return nil
	}
	p := &Postgres{t: t, port: FreePort(t), pgCtl: pgCtl}
	base, err := os.MkdirTemp("", "outlast-pg-")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	p.dir, p.logFile = filepath.Join(base, "data"), filepath.Join(base, "server.log")
	if os.Geteuid() == 0 {
		p.cred = postgresUser(t)
		if err := os.Chown(base, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			t.Fatalf("chown %s: %v", base, err)
		}
	}
	p.run("initdb", initdb, "-D", p.dir, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
	p.Start()
	t.Cleanup(func() {
		if p.running() {
			p.ctl("stop", "-m", "immediate")
		}
	})
	return p
}

// DSN is the server's postgres database.
func (p *Postgres) DSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// Start starts the (stopped) server and waits until it takes connections.
func (p *Postgres) Start() {
	p.t.Helper()
	// fsync stays on: the ledger's durability is what is under test.
	p.ctl("start", "-w", "-t", "60", "-l", p.logFile,
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", p.port, filepath.Dir(p.dir)))
}

// Stop stops the server at once, as a crash would: sessions are cut and
// the server recovers from its WAL on the next Start.
func (p *Postgres) Stop() {
	p.t.Helper()
	p.ctl("stop", "-m", "immediate", "-w")
}

func (p *Postgres) running() bool {
	cmd := exec.Command(p.pgCtl, "status", "-D", p.dir)
	p.setUser(cmd)
	return cmd.Run() == nil
}

func (p *Postgres) ctl(args ...string) {
	p.t.Helper()
	p.run("pg_ctl "+args[0], p.pgCtl, append(args, "-D", p.dir)...)
}

func (p *Postgres) run(what, bin string, args ...string) {
	p.t.Helper()
	cmd := exec.Command(bin, args...)
	p.setUser(cmd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(p.logFile)
		p.t.Fatalf("%s: %v\n%s\nserver log:\n%s", what, err, out, log)
	}
}

func (p *Postgres) setUser(cmd *exec.Cmd) {
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
		cmd.Dir = "/"
	}
}

func postgresUser(t testing.TB) *syscall.Credential {
	t.Helper()
	u, err := user.Lookup("postgres")
	if err != nil {
		Missing(t, `a "postgres" user to run a private PostgreSQL as (tests run as root)`, err)
		return nil
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}
