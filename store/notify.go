package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/outlast/outlast"
)

// ApplyNotifications applies a batch in one transaction; see
// outlast.NotificationService. At most BatchMax notifications per call.
func (db *DB) ApplyNotifications(ctx context.Context, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
	if len(ns) > BatchMax {
		return nil, outlast.Errorf(outlast.EINVALID, "at most %d notifications per batch", BatchMax)
	}
	if len(ns) == 0 {
		return nil, nil
	}
	var results []outlast.ApplyResult
	err := db.write(ctx, "apply_notifications", func(tx *sql.Tx) error {
		var err error
		results, err = db.newApplier(tx).applyAll(ctx, ns)
		return err
	})
	if err != nil {
		return nil, err
	}
	countOutcomes(results)
	return results, nil
}

func countOutcomes(results []outlast.ApplyResult) {
	for _, r := range results {
		notificationsTotal.WithLabelValues(string(r.Outcome)).Inc()
	}
}

// applier changes payout states inside one write transaction: the one
// code path for notifications (log and inbox) and the dispatcher's marks
// and rejections.
//
// It works in three steps so a batch costs a few round trips rather than
// several per notification: lock every payout involved (in id order), then
// decide and apply each change in memory, then flush all writes. Locks are
// taken in one global order, payouts by id and then accounts by id, so
// concurrent transactions on PostgreSQL do not deadlock each other.
type applier struct {
	db       *DB
	tx       *sql.Tx
	nowNanos int64

	payouts map[string]*payoutState // locked payouts by id
	deltas  map[string]*bucketDelta // account bucket changes by account id
	journal [][]any                 // journal rows: account, payout, bucket, amount, created
	records [][]any                 // notifications rows
	clashes [][]any                 // conflicts rows
	dequeue []string                // payout ids leaving the outbox
}

// payoutState is a payout as loaded (and locked) and as changed since.
type payoutState struct {
	loadedVersion int64
	cur           *outlast.Payout
}

// bucketDelta is what a transaction changes in one account's buckets.
type bucketDelta struct{ available, held, paidOut int64 }

var errRecordedConcurrently = errors.New("notification recorded by a concurrent transaction")

// noteKey is the deduplication key of a notification.
type noteKey struct{ channel, eventID string }

func (db *DB) newApplier(tx *sql.Tx) *applier {
	return &applier{
		db: db, tx: tx, nowNanos: db.now().UnixNano(),
		payouts: make(map[string]*payoutState), deltas: make(map[string]*bucketDelta),
	}
}

// applyAll applies ns in order and flushes. The results line up with ns.
func (ap *applier) applyAll(ctx context.Context, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
	results := make([]outlast.ApplyResult, len(ns))
	var ids []string
	var keys []noteKey
	for i, n := range ns {
		if err := n.Validate(); err != nil {
			results[i] = outlast.ApplyResult{Outcome: outlast.OutcomeRejected, Reason: outlast.ErrorMessage(err)}
			continue
		}
		ids = append(ids, n.PayoutID)
		keys = append(keys, noteKey{n.Channel, n.EventID})
	}
	if err := ap.lockPayouts(ctx, ids); err != nil {
		return nil, err
	}
	// Read after the payout locks: a concurrent transaction carrying the
	// same report of the same payout has committed by now.
	seen, err := ap.seen(ctx, keys)
	if err != nil {
		return nil, err
	}
	for i, n := range ns {
		if results[i].Outcome != "" {
			continue
		}
		k := noteKey{n.Channel, n.EventID}
		if seen[k] {
			results[i] = outlast.ApplyResult{Outcome: outlast.OutcomeDuplicate, Payout: ap.snapshot(n.PayoutID)}
			continue
		}
		seen[k] = true
		results[i] = ap.applyOne(n)
	}
	if err := ap.flush(ctx); err != nil {
		return nil, err
	}
	return results, nil
}

// applyOne decides and applies one new notification in memory.
func (ap *applier) applyOne(n *outlast.Notification) outlast.ApplyResult {
	var r outlast.ApplyResult
	st := ap.payouts[n.PayoutID]
	if st == nil {
		r = outlast.ApplyResult{Outcome: outlast.OutcomeRejected, Reason: "unknown payout"}
	} else {
		r = decide(st.cur, n)
		switch r.Outcome {
		case outlast.OutcomeApplied:
			ap.transition(st.cur, n.Status, n.Channel, n.PartnerRef, n.Reason)
		case outlast.OutcomeConflict:
			ap.clashes = append(ap.clashes, []any{st.cur.ID, n.Channel, n.EventID,
				string(st.cur.Status), string(n.Status), ap.nowNanos})
		}
		r.Payout = ap.snapshot(n.PayoutID)
	}
	received := ap.nowNanos
	if !n.ReceivedAt.IsZero() {
		received = n.ReceivedAt.UnixNano()
	}
	ap.records = append(ap.records, []any{n.Channel, n.EventID, n.PayoutID, n.PartnerRef, string(n.Status),
		cleanText(n.Reason, outlast.ReasonBytesMax), n.OccurredAt.UnixNano(), received,
		string(r.Outcome), r.Reason, ap.nowNanos})
	return r
}

// decide is the outcome of n on p.
func decide(p *outlast.Payout, n *outlast.Notification) outlast.ApplyResult {
	if p.Channel != "" && p.Channel != n.Channel {
		return outlast.ApplyResult{Outcome: outlast.OutcomeRejected, Reason: "channel mismatch"}
	}
	switch outlast.NextTransition(p.Status, n.Status) {
	case outlast.TransitionApply:
		return outlast.ApplyResult{Outcome: outlast.OutcomeApplied}
	case outlast.TransitionStale:
		return outlast.ApplyResult{Outcome: outlast.OutcomeStale}
	case outlast.TransitionConflict:
		return outlast.ApplyResult{Outcome: outlast.OutcomeConflict,
			Reason: fmt.Sprintf("payout is %s, partner reported %s", p.Status, n.Status)}
	}
	return outlast.ApplyResult{Outcome: outlast.OutcomeRejected,
		Reason: fmt.Sprintf("invalid transition from %s to %s", p.Status, n.Status)}
}

// snapshot copies a locked payout's current state, or nil if unknown.
func (ap *applier) snapshot(id string) *outlast.Payout {
	st := ap.payouts[id]
	if st == nil {
		return nil
	}
	p := *st.cur
	return &p
}

// lockPayouts loads and locks the payouts with these ids, in id order.
func (ap *applier) lockPayouts(ctx context.Context, ids []string) error {
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	for chunk := range slices.Chunk(ids, rowsPerStatement) {
		ps, err := queryPayouts(ctx, ap.tx, "SELECT "+payoutColumns+" FROM payouts WHERE id IN ("+
			placeholders(1, len(chunk))+") ORDER BY id"+ap.db.d.forUpdate, anys(chunk)...)
		if err != nil {
			return err
		}
		for _, p := range ps {
			ap.track(p)
		}
	}
	return nil
}

// track adds a payout the caller has loaded and locked.
func (ap *applier) track(p *outlast.Payout) {
	ap.payouts[p.ID] = &payoutState{loadedVersion: p.Version, cur: p}
}

// seen returns which keys the ledger has already recorded.
func (ap *applier) seen(ctx context.Context, keys []noteKey) (map[noteKey]bool, error) {
	byChannel := make(map[string][]string)
	for _, k := range keys {
		byChannel[k.channel] = append(byChannel[k.channel], k.eventID)
	}
	seen := make(map[noteKey]bool)
	for channel, events := range byChannel {
		for chunk := range slices.Chunk(events, rowsPerStatement) {
			// One channel per query keeps the lookup on the primary key.
			rows, err := ap.tx.QueryContext(ctx, "SELECT event_id FROM notifications WHERE channel = $1 AND event_id IN ("+
				placeholders(2, len(chunk))+")", append([]any{channel}, anys(chunk)...)...)
			if err != nil {
				return nil, err
			}
			for rows.Next() {
				var e string
				if err := rows.Scan(&e); err != nil {
					rows.Close()
					return nil, err
				}
				seen[noteKey{channel, e}] = true
			}
			if err := rows.Close(); err != nil {
				return nil, err
			}
		}
	}
	return seen, nil
}

// transition moves p, locked by this transaction, to status to, which
// NextTransition allowed: journal rows, the account change and the outbox
// entry, which goes once a partner has the payout or it is final. A
// non-empty channel or partnerRef replaces the payout's. The rows are
// written at flush.
func (ap *applier) transition(p *outlast.Payout, to outlast.PayoutStatus, channel, partnerRef, reason string) {
	p.Status, p.Version, p.UpdatedAt = to, p.Version+1, fromNanos(ap.nowNanos)
	if channel != "" {
		p.Channel = channel
	}
	if partnerRef != "" {
		p.PartnerRef = partnerRef
	}
	if to == outlast.StatusFailed {
		p.FailureReason = cleanText(reason, outlast.ReasonBytesMax)
	}
	// Every transition ends in dispatched or a final state: either way
	// the payout is no longer the dispatcher's to send.
	ap.dequeue = append(ap.dequeue, p.ID)
	d := ap.deltas[p.AccountID]
	if d == nil {
		d = &bucketDelta{}
		ap.deltas[p.AccountID] = d
	}
	switch to {
	case outlast.StatusSucceeded:
		d.held -= p.Amount
		d.paidOut += p.Amount
		ap.journal = append(ap.journal,
			[]any{p.AccountID, p.ID, string(outlast.BucketHeld), -p.Amount, ap.nowNanos},
			[]any{p.AccountID, p.ID, string(outlast.BucketPaidOut), p.Amount, ap.nowNanos})
	case outlast.StatusFailed:
		d.held -= p.Amount
		d.available += p.Amount
		ap.journal = append(ap.journal,
			[]any{p.AccountID, p.ID, string(outlast.BucketHeld), -p.Amount, ap.nowNanos},
			[]any{p.AccountID, p.ID, string(outlast.BucketAvailable), p.Amount, ap.nowNanos})
	}
}

// flush writes everything decided: payouts in id order, the notification,
// journal and conflict rows, the outbox removals, then the accounts in id
// order, re-checking each touched account's invariant.
func (ap *applier) flush(ctx context.Context) error {
	if err := ap.flushPayouts(ctx); err != nil {
		return err
	}
	n, err := insertRows(ctx, ap.tx, `INSERT INTO notifications (channel, event_id, payout_id, partner_ref,
		status, reason, occurred_ns, received_ns, outcome, outcome_reason, applied_ns) VALUES `,
		" ON CONFLICT DO NOTHING", ap.records)
	if err != nil {
		return err
	}
	if n != int64(len(ap.records)) {
		// A concurrent transaction recorded one of these events after we
		// looked; retrying the batch will see it as a duplicate.
		return outlast.Unavailable(errRecordedConcurrently, 0, "notification recorded concurrently; retry")
	}
	if _, err := insertRows(ctx, ap.tx, "INSERT INTO journal (account_id, payout_id, bucket, amount, created_ns) VALUES ",
		"", ap.journal); err != nil {
		return err
	}
	if _, err := insertRows(ctx, ap.tx, `INSERT INTO conflicts (payout_id, channel, event_id, payout_status,
		reported_status, created_ns) VALUES `, "", ap.clashes); err != nil {
		return err
	}
	for chunk := range slices.Chunk(ap.dequeue, rowsPerStatement) {
		if _, err := ap.tx.ExecContext(ctx, "DELETE FROM outbox WHERE payout_id IN ("+
			placeholders(1, len(chunk))+")", anys(chunk)...); err != nil {
			return err
		}
	}
	if err := ap.flushAccounts(ctx); err != nil {
		return err
	}
	ap.records, ap.journal, ap.clashes, ap.dequeue = nil, nil, nil, nil
	return nil
}

// flushPayouts writes the changed payouts with one UPDATE ... FROM
// (VALUES ...) per chunk, each row checked against the version it was
// loaded at.
func (ap *applier) flushPayouts(ctx context.Context) error {
	ids := make([]string, 0, len(ap.payouts))
	for id, st := range ap.payouts {
		if st.cur.Version != st.loadedVersion {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for chunk := range slices.Chunk(ids, rowsPerStatement) {
		var b strings.Builder
		args := []any{ap.nowNanos}
		for i, id := range chunk {
			st := ap.payouts[id]
			p := st.cur
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(" + placeholders(len(args)+1, 7) + ")")
			// Numbers go as text: PostgreSQL types untyped VALUES columns
			// as text, and the CASTs below turn them back on both backends.
			args = append(args, p.ID, string(p.Status), strconv.FormatInt(p.Version, 10), p.Channel,
				p.PartnerRef, p.FailureReason, strconv.FormatInt(st.loadedVersion, 10))
		}
		// VALUES columns are named column1..columnN on both backends.
		res, err := ap.tx.ExecContext(ctx, `UPDATE payouts SET status = v.column2,
			version = CAST(v.column3 AS BIGINT), channel = v.column4, partner_ref = v.column5,
			failure_reason = v.column6, updated_ns = $1
			FROM (VALUES `+b.String()+`) AS v
			WHERE payouts.id = v.column1 AND payouts.version = CAST(v.column7 AS BIGINT)`, args...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != int64(len(chunk)) {
			// The row locks should make this impossible; if another writer
			// got there first anyway, the whole batch is retried.
			return outlast.Errorf(outlast.ECONFLICT, "payouts changed concurrently; retry")
		}
		for _, id := range chunk {
			st := ap.payouts[id]
			st.loadedVersion = st.cur.Version
		}
	}
	return nil
}

func (ap *applier) flushAccounts(ctx context.Context) error {
	ids := make([]string, 0, len(ap.deltas))
	for id := range ap.deltas {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		d := ap.deltas[id]
		if *d == (bucketDelta{}) {
			continue
		}
		res, err := ap.tx.ExecContext(ctx, `UPDATE accounts SET available = available + $1, held = held + $2,
			paid_out = paid_out + $3, version = version + 1, updated_ns = $4 WHERE id = $5`,
			d.available, d.held, d.paidOut, ap.nowNanos, id)
		if err != nil {
			return err
		}
		if err := oneRow(res); err != nil {
			return fmt.Errorf("update account %s: %w", id, err)
		}
		a, err := loadAccount(ctx, ap.tx, id, "")
		if err != nil {
			return err
		}
		mustHold(a)
	}
	clear(ap.deltas)
	return nil
}

// rowsPerStatement bounds the rows of one multi-row statement, keeping
// the bound parameters far below both backends' limits.
const rowsPerStatement = 200

// insertRows inserts rows (all of one width) with multi-row VALUES
// statements and returns how many rows were inserted.
func insertRows(ctx context.Context, tx *sql.Tx, prefix, suffix string, rows [][]any) (int64, error) {
	var inserted int64
	for chunk := range slices.Chunk(rows, rowsPerStatement) {
		var b strings.Builder
		b.WriteString(prefix)
		args := make([]any, 0, len(chunk)*len(chunk[0]))
		for i, row := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(" + placeholders(len(args)+1, len(row)) + ")")
			args = append(args, row...)
		}
		b.WriteString(suffix)
		res, err := tx.ExecContext(ctx, b.String(), args...)
		if err != nil {
			return inserted, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return inserted, err
		}
		inserted += n
	}
	return inserted, nil
}

// placeholders returns "$first, ..., $(first+n-1)".
func placeholders(first, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(first+i))
	}
	return b.String()
}

func anys[T any](xs []T) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

// cleanText makes s storable as TEXT on both backends (valid UTF-8, no
// NUL) and cuts it to at most maxBytes on a character boundary.
func cleanText(s string, maxBytes int) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
	if len(s) <= maxBytes {
		return s
	}
	cut := maxBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
