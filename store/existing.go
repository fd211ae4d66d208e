package store

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/outlast/outlast"
)

// OpenExisting opens the ledger named by dsn, as Open does, for a reader
// that must not create one: it never creates a SQLite file or migrates a
// schema. A SQLite file that does not exist, or a database without the
// ledger's schema, is ENOTFOUND; a schema missing a migration this version
// has is ECONFLICT (start this version's serve on it first). If ctx has no
// deadline, 10 s is used.
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
	if err != nil {
		return nil, err
	}
	if err := db.checkSchema(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// checkSchema says whether the ledger's schema is there with every
// embedded migration applied.
func (db *DB) checkSchema(ctx context.Context) error {
	var n int
	if err := db.r.QueryRowContext(ctx, db.d.tableExists, "schema_migrations").Scan(&n); err != nil {
		return fail("check_schema", err)
	}
	if n == 0 {
		return outlast.Errorf(outlast.ENOTFOUND, "the database holds no ledger (no schema_migrations table)")
	}
	rows, err := db.r.QueryContext(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return fail("check_schema", err)
	}
	defer rows.Close()
	applied := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return fail("check_schema", err)
		}
		applied[v] = true
	}
	if err := rows.Err(); err != nil {
		return fail("check_schema", err)
	}
	if len(applied) == 0 {
		return outlast.Errorf(outlast.ENOTFOUND, "the database holds no ledger (no migration applied)")
	}
	names, err := migrationNames()
	if err != nil {
		return err
	}
	for _, name := range names {
		v, err := migrationVersion(name)
		if err != nil {
			return err
		}
		if !applied[v] {
			return outlast.Errorf(outlast.ECONFLICT, "the ledger's schema is older than this outlast (migration %s not applied): start this version's outlast serve on it first", name)
		}
	}
	return nil
}

// migrationVersion is the number a migration's file name starts with.
func migrationVersion(name string) (int, error) {
	v, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
	if err != nil {
		return 0, fmt.Errorf("migration %s: name must start with a number: %w", name, err)
	}
	return v, nil
}
