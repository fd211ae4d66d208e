package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
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
	// forNoKeyUpdate locks rows that an UPDATE of non-key columns will
	// change. Unlike forUpdate it does not conflict with the key-share
	// locks that foreign-key checks take, so a transaction that inserted
	// rows referencing an account (journal) can still lock that account
	// without deadlocking another one that did the same.
	forNoKeyUpdate string
	// batchSetup runs first in a transaction that applies a batch. On
	// PostgreSQL it lets the foreign-key checks of the batch's inserts
	// (one per row and key, internally prepared statements) reuse their
	// plans: the connection's plan_cache_mode=force_custom_plan would
	// re-plan each one, which made inserting the journal rows 3-4 times
	// slower. The batch's own statements have a fixed text and array
	// parameters, so their generic plans are index lookups too.
	batchSetup string
	// skipLockedOf, formatted with a table name, lets several dispatchers
	// share the outbox: each claims rows no other transaction holds, and
	// locks only that table's rows of a join.
	skipLockedOf string
	// serial is the migrations' auto-increment primary key.
	serial string
	// snapshot reads several queries from one consistent state (audit).
	snapshot *sql.TxOptions
	// rows binds a rowset or an id list as a fixed number of parameters.
	rows rowBinder
	// tableExists counts the tables named $1 in the current schema: 0 or 1.
	tableExists string
}

var (
	sqliteDialect = dialect{
		name:     "sqlite",
		serial:   "INTEGER PRIMARY KEY",
		snapshot: &sql.TxOptions{ReadOnly: true}, // a WAL read transaction is a snapshot
		rows:     jsonRows{},

		tableExists: "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
	}
	postgresDialect = dialect{
		name:           "postgres",
		forUpdate:      " FOR UPDATE",
		forNoKeyUpdate: " FOR NO KEY UPDATE",
		batchSetup:     "SET LOCAL plan_cache_mode = auto",
		skipLockedOf:   " FOR UPDATE OF %s SKIP LOCKED",
		serial:         "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
		snapshot:       &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true},
		rows:           arrayRows{},

		tableExists: "SELECT CASE WHEN to_regclass($1) IS NULL THEN 0 ELSE 1 END",
	}
)

// skipLocked is the row-locking clause for a queue read of table.
func (d dialect) skipLocked(table string) string {
	if d.skipLockedOf == "" {
		return ""
	}
	return fmt.Sprintf(d.skipLockedOf, table)
}

// rowBinder turns a batch into statement text that does not depend on the
// batch's size, and the arguments to bind to it.
type rowBinder interface {
	// from is a FROM item named v with rs's columns, bound at $first.
	from(rs *rowset, first int) string
	// args are what from binds, in parameter order.
	args(rs *rowset) []any
	// in is "IN (the values bound at $param)" for a WHERE clause; typ is
	// the values' type, "text" or "bigint".
	in(param int, typ string) string
	// list is the argument that in binds: values is a []string or an
	// []int64.
	list(values any) any
}

// jsonRows binds a rowset to SQLite as one JSON array of row arrays: one
// parameter, whatever the number of rows. jsonb_each hands each row to the
// column extractions as parsed JSONB, so the row's text is not parsed
// again for every column (measured: about a fifth less CPU per batch than
// json_each).
type jsonRows struct{}

func (jsonRows) from(rs *rowset, first int) string {
	var b strings.Builder
	b.WriteString("(SELECT ")
	for i, name := range rs.names {
		if i > 0 {
			b.WriteString(", ")
		}
		// ->> yields SQL TEXT for JSON strings and INTEGER for JSON
		// integers, which hold any int64 exactly.
		fmt.Fprintf(&b, "value->>%d AS %s", i, name)
	}
	fmt.Fprintf(&b, " FROM jsonb_each($%d)) AS v", first)
	return b.String()
}

func (jsonRows) args(rs *rowset) []any {
	b := make([]byte, 0, 64*rs.n*len(rs.names))
	b = append(b, '[')
	for r := range rs.n {
		if r > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		for c := range rs.names {
			if c > 0 {
				b = append(b, ',')
			}
			if rs.ints[c] {
				b = strconv.AppendInt(b, rs.nums[c][r], 10)
			} else {
				b = appendJSONString(b, rs.text[c][r])
			}
		}
		b = append(b, ']')
	}
	return []any{string(append(b, ']'))}
}

func (jsonRows) in(param int, typ string) string {
	return fmt.Sprintf("IN (SELECT value FROM json_each($%d))", param)
}

func (jsonRows) list(values any) any {
	var b []byte
	switch vs := values.(type) {
	case []string:
		b = make([]byte, 0, 40*len(vs)+2)
		for _, v := range vs {
			b = appendJSONString(append(b, ','), v)
		}
	case []int64:
		b = make([]byte, 0, 20*len(vs)+2)
		for _, v := range vs {
			b = strconv.AppendInt(append(b, ','), v, 10)
		}
	default:
		panic(fmt.Sprintf("store: cannot bind %T as a list", values))
	}
	if len(b) == 0 {
		return "[]"
	}
	b[0] = '[' // replaces the first value's comma
	return string(append(b, ']'))
}

// appendJSONString appends s as a JSON string. The ledger's text is valid
// UTF-8 without NUL (IDs are validated, free text goes through outlast.CleanText),
// so escaping quotes, backslashes and control characters is enough.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// arrayRows binds a rowset to PostgreSQL as one array per column, read
// back with unnest; pgx sends []string and []int64 as text[] and bigint[].
type arrayRows struct{}

func (arrayRows) from(rs *rowset, first int) string {
	var b strings.Builder
	b.WriteString("unnest(")
	for i := range rs.names {
		if i > 0 {
			b.WriteString(", ")
		}
		typ := "text"
		if rs.ints[i] {
			typ = "bigint"
		}
		fmt.Fprintf(&b, "$%d::%s[]", first+i, typ)
	}
	b.WriteString(") AS v(" + strings.Join(rs.names, ", ") + ")")
	return b.String()
}

func (arrayRows) args(rs *rowset) []any {
	args := make([]any, len(rs.names))
	for i := range rs.names {
		if rs.ints[i] {
			args[i] = rs.nums[i][:rs.n:rs.n]
		} else {
			args[i] = rs.text[i][:rs.n:rs.n]
		}
	}
	return args
}

func (arrayRows) in(param int, typ string) string {
	return fmt.Sprintf("= ANY($%d::%s[])", param, typ)
}

func (arrayRows) list(values any) any { return values }

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
		errors.Is(err, syscall.EPIPE),
		// A session the server cut while it sat in the pool: the driver
		// pings only sessions idle for over a second, so a read on one
		// used just before ends here.
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pgUnavailable(pe.Code)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		// Busy and locked (another writer), I/O, full disk, a file that
		// cannot be opened or was made read-only, out of memory: the
		// host's trouble, not the request's.
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR,
			sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL,
			sqlite3.SQLITE_INTERRUPT, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_NOMEM:
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

// pgUnavailable reports SQLSTATEs that mean "this database cannot do it
// now; the same statement may well succeed later", by meaning rather than
// by the codes seen so far:
//   - 08 connection exceptions, 53 insufficient resources (too many
//     connections, disk full, out of memory), 58000 and 58030 system and
//     I/O errors (not 58P01/58P02, a missing or duplicate file);
//   - 40001 serialization failure, 40P01 deadlock, 40003 statement
//     completion unknown (not 40002, a constraint violated at commit);
//   - 57 operator intervention: statement timeout (57014), admin or crash
//     shutdown, cannot connect now (57P01-57P03), idle session timeout
//     (57P05) — but not 57P04, a dropped database, which will not return;
//   - 25006 read-only transaction: a primary demoted during a failover
//     answers this until clients reach the new primary;
//   - 25P03 idle-in-transaction timeout, 55P03 lock not available.
//
// Everything here is retried without limit and never dead-lettered.
func pgUnavailable(code string) bool {
	switch {
	case strings.HasPrefix(code, "08"), strings.HasPrefix(code, "53"):
		return true
	case code == "58000", code == "58030", code == "40001", code == "40P01", code == "40003":
		return true
	case strings.HasPrefix(code, "57"):
		return code != "57P04"
	case code == "25006", code == "25P03", code == "55P03":
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
