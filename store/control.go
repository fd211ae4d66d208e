package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/outlast/outlast"
)

// ControlConfig returns the current config document; see
// outlast.ControlStore.
func (db *DB) ControlConfig(ctx context.Context) (*outlast.ControlConfig, error) {
	var version int64
	var doc string
	err := db.r.QueryRowContext(ctx, "SELECT version, doc FROM control_config WHERE id = 1").Scan(&version, &doc)
	if err != nil {
		return nil, fail("control_config", err)
	}
	c, err := decodeControl(version, doc)
	return c, fail("control_config", err)
}

// ControlVersion returns the current config document's version, reading
// one narrow row: instances poll it every second.
func (db *DB) ControlVersion(ctx context.Context) (int64, error) {
	var version int64
	err := db.r.QueryRowContext(ctx, "SELECT version FROM control_config WHERE id = 1").Scan(&version)
	return version, fail("control_version", err)
}

// PutControlConfig stores c as the next version if the current one is
// ifVersion, with its change row, in one transaction; see
// outlast.ControlStore. The config row is locked before its version is
// compared, so of two puts with the same ifVersion the second waits for
// the first and then sees its version: on PostgreSQL by FOR NO KEY UPDATE,
// on SQLite by the write lock every write transaction takes first.
func (db *DB) PutControlConfig(ctx context.Context, c *outlast.ControlConfig, ifVersion int64, actor, reason string) (*outlast.ControlConfig, error) {
	if err := outlast.ValidateControlChange(c, actor, reason); err != nil {
		return nil, err
	}
	var next *outlast.ControlConfig
	err := db.write(ctx, "put_control_config", func(tx *sql.Tx) error {
		var version int64
		var before string
		err := tx.QueryRowContext(ctx, "SELECT version, doc FROM control_config WHERE id = 1"+db.d.forNoKeyUpdate).
			Scan(&version, &before)
		if err != nil {
			return err
		}
		if version != ifVersion {
			return outlast.StaleConfig(version, ifVersion)
		}
		now := db.now()
		next = c.Clone()
		next.Version, next.UpdatedAt, next.UpdatedBy = version+1, now, actor
		after, err := json.Marshal(next)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE control_config SET version = $1, doc = $2, updated_ns = $3 WHERE id = 1",
			next.Version, string(after), now.UnixNano()); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO control_changes (version, at_ns, actor, reason, before_doc, after_doc)
			VALUES ($1, $2, $3, $4, $5, $6)`, next.Version, now.UnixNano(), actor, reason, before, string(after))
		return err
	})
	if err != nil {
		return nil, err
	}
	return next, nil
}

// ControlHistory lists up to limit config changes, newest first; see
// outlast.ControlStore.
func (db *DB) ControlHistory(ctx context.Context, limit int) ([]outlast.ConfigChange, error) {
	if limit <= 0 || limit > outlast.ControlHistoryMax {
		limit = outlast.ControlHistoryMax
	}
	rows, err := db.r.QueryContext(ctx, `SELECT version, at_ns, actor, reason, before_doc, after_doc
		FROM control_changes ORDER BY version DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fail("control_history", err)
	}
	defer rows.Close()
	var out []outlast.ConfigChange
	for rows.Next() {
		ch, err := scanConfigChange(rows)
		if err != nil {
			return nil, fail("control_history", err)
		}
		out = append(out, ch)
	}
	if err := rows.Err(); err != nil {
		return nil, fail("control_history", err)
	}
	return out, nil
}

func scanConfigChange(rows *sql.Rows) (outlast.ConfigChange, error) {
	var ch outlast.ConfigChange
	var atNs int64
	var before, after string
	if err := rows.Scan(&ch.Version, &atNs, &ch.Actor, &ch.Reason, &before, &after); err != nil {
		return ch, err
	}
	ch.At = fromNanos(atNs)
	var err error
	if ch.Before, err = decodeControl(ch.Version-1, before); err != nil {
		return ch, err
	}
	ch.After, err = decodeControl(ch.Version, after)
	return ch, err
}

// decodeControl reads a stored document at version. The version column,
// not the document, is the truth: the seeded default ('{}') has none.
func decodeControl(version int64, doc string) (*outlast.ControlConfig, error) {
	var c outlast.ControlConfig
	if err := json.Unmarshal([]byte(doc), &c); err != nil {
		return nil, fmt.Errorf("config version %d: %w", version, err)
	}
	c.Version = version
	return c.Clone(), nil
}
