package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/outlast/outlast"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// dialect is everything that differs between SQLite and PostgreSQL. The SQL
// elsewhere is shared: both drivers bind $1..$n placeholders by position
// (modernc.org/sqlite maps $N to the N-th argument) and both accept
// INSERT ... ON CONFLICT DO NOTHING.
type dialect struct {
	name string // "sqlite" or "postgres"
	// forUpdate locks the selected rows until commit. SQLite has no row
	// locks and needs none: its write transactions take the one write lock
	// up front (BEGIN IMMEDIATE).
	forUpdate string
	// skipLockedOf, formatted with a table name, lets several dispatchers
	// share the outbox: each claims rows no other transaction holds, and
	// locks only that table's rows of a join.
	skipLockedOf string
	// serial is the migrations' auto-increment primary key.
	serial string
	// snapshot reads several queries from one consistent state (audit).
	snapshot *sql.TxOptions
}

var (
	sqliteDialect = dialect{
		name:     "sqlite",
		serial:   "INTEGER PRIMARY KEY",
		snapshot: &sql.TxOptions{ReadOnly: true}, // a WAL read transaction is a snapshot
	}
	postgresDialect = dialect{
		name:         "postgres",
		forUpdate:    " FOR UPDATE",
		skipLockedOf: " FOR UPDATE OF %s SKIP LOCKED",
		serial:       "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
		snapshot:     &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true},
	}
)

// skipLocked is the row-locking clause for a queue read of table.
func (d dialect) skipLocked(table string) string {
	if d.skipLockedOf == "" {
		return ""
	}
	return fmt.Sprintf(d.skipLockedOf, table)
}

// migrationLockKey serialises migrations of instances starting at once on
// PostgreSQL (pg_advisory_xact_lock); any constant unique to Outlast works.
const migrationLockKey = 0x6f75746c617374 // "outlast"

// retryAfter is what callers are told when the database is unavailable.
const retryAfter = time.Second

// isUniqueViolation reports a unique or primary-key constraint violation.
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// isUnavailable reports a failure of the database rather than of the
// request: the same request may well succeed later.
func isUnavailable(err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, sql.ErrConnDone), errors.Is(err, driver.ErrBadConn),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pgUnavailable(pe.Code)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR,
			sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL,
			sqlite3.SQLITE_INTERRUPT:
			return true
		}
		return false
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	if errors.As(err, &ce) || errors.As(err, &ne) || pgconn.Timeout(err) || pgconn.SafeToRetry(err) {
		return true
	}
	// database/sql reports use after Close only as text.
	msg := err.Error()
	return strings.Contains(msg, "database is closed") || strings.Contains(msg, "conn closed") ||
		strings.Contains(msg, "database is locked")
}

// pgUnavailable reports SQLSTATEs that mean "try again": connection
// exceptions (08), serialization failures and deadlocks (40), too many
// connections (53), shutdowns and statement timeouts (57).
func pgUnavailable(code string) bool {
	switch {
	case strings.HasPrefix(code, "08"), strings.HasPrefix(code, "53"):
		return true
	case code == "40001", code == "40P01", code == "57014", code == "57P01",
		code == "57P02", code == "57P03", code == "55P03", code == "25P03":
		return true
	}
	return false
}

// fail turns a driver error into what callers see: *outlast.Error as is,
// EUNAVAILABLE with a RetryAfter for a database that is down or busy, and
// a wrapped error (EINTERNAL, message "internal error") for anything else,
// so SQL text never reaches a caller.
func fail(op string, err error) error {
	if err == nil {
		return nil
	}
	var oe *outlast.Error
	if errors.As(err, &oe) || errors.Is(err, errDuplicateKey) {
		return err
	}
	if isUnavailable(err) {
		errorsTotal.WithLabelValues(op, outlast.EUNAVAILABLE).Inc()
		return outlast.Unavailable(errWrap(op, err), retryAfter, "database unavailable")
	}
	errorsTotal.WithLabelValues(op, outlast.EINTERNAL).Inc()
	return errWrap(op, err)
}

func errWrap(op string, err error) error { return &opError{op: op, err: err} }

// opError names the store operation that failed, for the logs.
type opError struct {
	op  string
	err error
}

func (e *opError) Error() string { return "store: " + e.op + ": " + e.err.Error() }
func (e *opError) Unwrap() error { return e.err }
