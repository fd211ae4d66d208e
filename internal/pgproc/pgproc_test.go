package pgproc_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outlast/outlast/internal/pgproc"
	"github.com/outlast/outlast/internal/testenv"
)

// TestCrashAndRestart: a committed row survives a crash, Restart comes
// back on the same address, and Stop removes the data.
func TestCrashAndRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := pgproc.Start(ctx, pgproc.Options{})
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, pgproc.ErrNoUser) {
		testenv.Missing(t, "PostgreSQL server binaries", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	exec := func(sql string) error {
		c, err := pgx.Connect(ctx, s.DSN())
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, sql)
		return err
	}
	if err := exec("CREATE TABLE t (v int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := s.Crash(); err != nil {
		t.Fatalf("Crash: %v", err)
	}
	if err := exec("SELECT 1"); err == nil {
		t.Fatal("a crashed server took a query")
	}
	addr := s.Addr()
	if err := s.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if s.Addr() != addr {
		t.Errorf("Addr() after Restart = %s, want %s", s.Addr(), addr)
	}
	if err := exec("DO $$ BEGIN IF (SELECT count(*) FROM t WHERE v = 1) <> 1 THEN RAISE 'row lost'; END IF; END $$"); err != nil {
		t.Fatalf("the table after a crash: %v", err)
	}
	dir := s.Dir()
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := s.Process().Err(); err != nil {
		t.Errorf("exit after Stop = %v, want a fast shutdown's 0", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Stat(%s) after Stop = %v, want not exist", dir, err)
	}
}
