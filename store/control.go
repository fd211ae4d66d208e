package store

import (
	"context"
	"database/sql"
	"encoding/json"

	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outlast/outlast"
)

// ControlConfig returns the current config document; see
// outlast.ControlStore.
func (db *DB) ControlConfig(ctx context.Context) (*outlast.ControlConfig, error) {
	var version int64
	var doc string
	err := db.controlRead().QueryRowContext(ctx, "SELECT version, doc FROM control_config WHERE id = 1").Scan(&version, &doc)
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
	err := db.controlRead().QueryRowContext(ctx, "SELECT version FROM control_config WHERE id = 1").Scan(&version)
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
	err := db.writeOn(ctx, db.controlWrite(), "put_control_config", func(tx *sql.Tx) error {
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
		if err != nil || db.pgConfig == nil {
			return err
		}
		// The hint every instance LISTENs for, sent on commit.
		_, err = tx.ExecContext(ctx, "SELECT pg_notify($1, $2)", controlChannel, strconv.FormatInt(next.Version, 10))
		return err
	})
	if err != nil {
		return nil, err
	}
	db.watchers.signal(next.Version)
	return next, nil
}

// ControlHistory lists up to limit config changes, newest first; see
// outlast.ControlStore.
func (db *DB) ControlHistory(ctx context.Context, limit int) ([]outlast.ConfigChange, error) {
	if limit <= 0 || limit > outlast.ControlHistoryMax {
		limit = outlast.ControlHistoryMax
	}
	rows, err := db.controlRead().QueryContext(ctx, `SELECT version, at_ns, actor, reason, before_doc, after_doc
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

// The control plane's connections to PostgreSQL.
const (
	// controlConnsMax is the control plane's own pool: a poll, a
	// heartbeat and an operator's change at once.
	controlConnsMax = 3
	// controlAppName names the control plane's connections in
	// pg_stat_activity; the LISTEN connection is controlListenAppName.
	controlAppName       = "outlast-control"
	controlListenAppName = "outlast-control-listen"
	// controlChannel is the NOTIFY channel of config changes; the payload
	// is the new version.
	controlChannel = "outlast_control"
	// listenPingTimeout bounds the ping of a silent LISTEN connection.
	listenPingTimeout = 3 * time.Second
)

// listenPingAfter is the silence after which the LISTEN connection is
// pinged; a variable for tests.
var listenPingAfter = 15 * time.Second

// afterListenPing, if set (by tests), runs after each successful ping of
// the LISTEN connection.
var afterListenPing func()

// controlRead is the pool the control plane reads from.
func (db *DB) controlRead() *sql.DB {
	if db.control != nil {
		return db.control
	}
	return db.r
}

// controlWrite is the pool the control plane writes through.
func (db *DB) controlWrite() *sql.DB {
	if db.control != nil {
		return db.control
	}
	return db.w
}

// WatchControl calls hint with the new version of every config change, as
// soon as it commits, until ctx is done or the watch breaks: it is a hint
// that makes instances apply a change at once, and polling
// ControlVersion stays the safety net. On PostgreSQL it LISTENs on a
// connection of its own (application_name outlast-control-listen) and
// returns the error that broke it, for the caller to watch again; on
// SQLite, where one process owns the file, it hears the changes made
// through this DB and returns nil when ctx is done. The connection is
// open, and the first hint can arrive, once ready is called.
func (db *DB) WatchControl(ctx context.Context, ready func(), hint func(version int64)) error {
	if db.pgConfig == nil {
		ch, stop := db.watchers.add()
		defer stop()
		ready()
		for {
			select {
			case <-ctx.Done():
				return nil
			case v := <-ch:
				hint(v)
			}
		}
	}
	cfg := db.pgConfig.Copy()
	cfg.RuntimeParams["application_name"] = controlListenAppName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fail("control_listen", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+controlChannel); err != nil {
		return fail("control_listen", err)
	}
	ready()
	for {
		// A connection lost without a word (a partition) would wait
		// forever: after listenPingAfter of silence it is pinged, and a
		// ping that fails ends the watch.
		wctx, cancel := context.WithTimeout(ctx, listenPingAfter)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && wctx.Err() != nil && !conn.IsClosed() {
			pctx, cancel := context.WithTimeout(ctx, listenPingTimeout)
			err = conn.Ping(pctx)
			cancel()
			if err == nil {
				if afterListenPing != nil {
					afterListenPing()
				}
				continue
			}
		}
		if err != nil {
			return fail("control_listen", err)
		}
		v, err := strconv.ParseInt(n.Payload, 10, 64)
		if err != nil {
			return fail("control_listen", fmt.Errorf("notification %q: %w", n.Payload, err))
		}
		hint(v)
	}
}

// watchers are the in-process subscribers of config changes.
type watchers struct {
	mu   sync.Mutex
	subs map[chan int64]struct{}
}

// add subscribes; stop unsubscribes.
func (w *watchers) add() (ch chan int64, stop func()) {
	// One slot: a hint not yet taken is enough, since the watcher reads
	// the latest version anyway.
	ch = make(chan int64, 1)
	w.mu.Lock()
	if w.subs == nil {
		w.subs = map[chan int64]struct{}{}
	}
	w.subs[ch] = struct{}{}
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		delete(w.subs, ch)
		w.mu.Unlock()
	}
}

// signal hints every subscriber, never blocking.
func (w *watchers) signal(version int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.subs {
		select {
		case ch <- version:
		default:
		}
	}
}

// PutInstance records an instance's heartbeat; see outlast.InstanceStore.
func (db *DB) PutInstance(ctx context.Context, s *outlast.InstanceStatus) error {
	if s == nil || s.ID == "" {
		return outlast.Errorf(outlast.EVALIDATION, "an instance needs an id")
	}
	if len(s.ID) > instanceIDBytesMax {
		return outlast.Errorf(outlast.EVALIDATION, "an instance id must be at most %d bytes", instanceIDBytesMax)
	}
	now := db.now()
	cp := *s
	cp.SeenAt = now
	doc, err := json.Marshal(&cp)
	if err != nil {
		return err
	}
	return db.writeOn(ctx, db.controlWrite(), "put_instance", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO control_instances (id, seen_ns, doc) VALUES ($1, $2, $3)
			ON CONFLICT (id) DO UPDATE SET seen_ns = excluded.seen_ns, doc = excluded.doc`,
			s.ID, now.UnixNano(), string(doc)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "DELETE FROM control_instances WHERE seen_ns < $1",
			now.Add(-outlast.InstanceForgetAfter).UnixNano())
		return err
	})
}

// instanceIDBytesMax bounds an instance id.
const instanceIDBytesMax = 256

// Instances lists the instances' heartbeats; see outlast.InstanceStore.
func (db *DB) Instances(ctx context.Context) ([]*outlast.InstanceStatus, error) {
	rows, err := db.controlRead().QueryContext(ctx, `SELECT id, seen_ns, doc FROM (
		SELECT id, seen_ns, doc FROM control_instances ORDER BY seen_ns DESC LIMIT $1) recent ORDER BY id`, outlast.InstancesMax)
	if err != nil {
		return nil, fail("instances", err)
	}
	defer rows.Close()
	var out []*outlast.InstanceStatus
	for rows.Next() {
		var id, doc string
		var seen int64
		if err := rows.Scan(&id, &seen, &doc); err != nil {
			return nil, fail("instances", err)
		}
		var s outlast.InstanceStatus
		if err := json.Unmarshal([]byte(doc), &s); err != nil {
			return nil, fail("instances", fmt.Errorf("instance %q: %w", id, err))
		}
		s.ID, s.SeenAt = id, fromNanos(seen)
		out = append(out, &s)
	}
	return out, fail("instances", rows.Err())
}
