package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outlast/outlast"
)

// OpenExisting opens the ledger named by dsn, as Open does, for a reader
// that must not create or change one: it never creates a SQLite file or
// migrates a schema. A SQLite file or PostgreSQL database that does not
// exist, or one without the ledger's schema, is ENOTFOUND. A schema behind
// this version (an operator auditing before an upgrade) opens as it is;
// PendingMigrations says what it lacks. If ctx has no deadline, 10 s is
// used.
func OpenExisting(ctx context.Context, dsn string) (*DB, error) {
	ctx, cancel := withOpenTimeout(ctx)
	defer cancel()
	if !IsPostgres(dsn) {
		file := sqliteFile(sqlitePath(dsn))
		if file == "" {
			return nil, outlast.Errorf(outlast.EINVALID, "cannot tell which file the sqlite dsn names")
		}
		if _, err := os.Stat(file); err != nil {
			return nil, outlast.Errorf(outlast.ENOTFOUND, "no ledger at %s: %v", file, err)
		}
	}
	db, err := open(ctx, dsn)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "3D000" { // invalid_catalog_name
		return nil, outlast.Errorf(outlast.ENOTFOUND, "no ledger: %s", pe.Message)
	}
	if err != nil {
		return nil, err
	}
	if db.pending, err = db.checkSchema(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// PendingMigrations lists the embedded migrations a ledger opened with
// OpenExisting has not applied (serve applies them at start); nil for a
// ledger opened with Open.
func (db *DB) PendingMigrations() []string { return db.pending }

// checkSchema says whether the ledger's schema is there, and which
// embedded migrations it lacks.
func (db *DB) checkSchema(ctx context.Context) ([]string, error) {
	var n int
	if err := db.r.QueryRowContext(ctx, db.d.tableExists, "schema_migrations").Scan(&n); err != nil {
		return nil, fail("check_schema", err)
	}
	if n == 0 {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "the database holds no ledger (no schema_migrations table)")
	}
	rows, err := db.r.QueryContext(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return nil, fail("check_schema", err)
	}
	defer rows.Close()
	applied := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, fail("check_schema", err)
		}
		applied[v] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fail("check_schema", err)
	}
	if len(applied) == 0 {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "the database holds no ledger (no migration applied)")
	}
	names, err := migrationNames()
	if err != nil {
		return nil, err
	}
	var pending []string
	for _, name := range names {
		v, err := migrationVersion(name)
		if err != nil {
			return nil, err
		}
		if !applied[v] {
			pending = append(pending, name)
		}
	}
	return pending, nil
}

// migrationVersion is the number a migration's file name starts with.
func migrationVersion(name string) (int, error) {
	v, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
	if err != nil {
		return 0, fmt.Errorf("migration %s: name must start with a number: %w", name, err)
	}
	return v, nil
}
