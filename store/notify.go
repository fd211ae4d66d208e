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

	"github.com/outlast/outlast"
)

// Apply applies a batch in one transaction; see outlast.Ledger. At most
// BatchMax notifications per call. The store records no metric and makes
// no retry decision: package ledger does both, once for every source.
func (db *DB) Apply(ctx context.Context, source outlast.Source, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
	if len(ns) > BatchMax {
		return nil, outlast.Errorf(outlast.EINVALID, "at most %d notifications per batch", BatchMax)
	}
	if len(ns) == 0 {
		return nil, nil
	}
	var results []outlast.ApplyResult
	err := db.write(ctx, "apply_notifications", func(tx *sql.Tx) error {
		var err error
		ap := db.newApplier(tx)
		ap.source = source
		results, err = ap.applyAll(ctx, ns)
		return err
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// applier changes payout states inside one write transaction: the one
// code path for notifications (log and inbox) and the dispatcher's marks
// and rejections.
//
// It works in three steps so a batch costs a fixed handful of statements
// whatever its size: lock every payout involved (in id order), then decide
// and apply each change in memory, then flush all writes with one
// statement per table (see rowset). Locks are taken in one global order,
// payouts by id and then accounts by id, so concurrent transactions on
// PostgreSQL do not deadlock each other.
type applier struct {
	db       *DB
	tx       *sql.Tx
	nowNanos int64

	payouts map[string]*payoutState // locked payouts by id
	deltas  map[string]*bucketDelta // account bucket changes by account id
	journal *rowset                 // journal rows; created_ns is nowNanos
	records *rowset                 // notifications rows; applied_ns is nowNanos
	clashes *rowset                 // conflicts rows; created_ns is nowNanos
	dequeue []string                // payout ids leaving the outbox

	// source brought the notifications; filings are the exceptions their
	// conflicts file once the accounts are written, each with the index
	// of its result.
	source  outlast.Source
	filings []filing
}

// filing is an exception a conflict files, for results[result].
type filing struct {
	result    int
	exception *outlast.Exception
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
		journal: newRowset("account_id text", "payout_id text", "bucket text", "amount bigint"),
		records: newRowset("channel text", "event_id text", "payout_id text", "partner_ref text",
			"status text", "reason text", "occurred_ns bigint", "received_ns bigint",
			"outcome text", "outcome_reason text"),
		clashes: newRowset("payout_id text", "channel text", "event_id text",
			"payout_status text", "reported_status text", "exception_key text"),
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
	if setup := ap.db.d.batchSetup; setup != "" {
		if _, err := ap.tx.ExecContext(ctx, setup); err != nil {
			return nil, err
		}
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
		results[i] = ap.applyOne(n)
		switch st := ap.payouts[n.PayoutID]; {
		case results[i].Outcome == outlast.OutcomeConflict:
			ap.conflict(i, n)
		case results[i].Outcome == outlast.OutcomeRejected && st != nil && n.Validate() == nil:
			if e := outlast.OtherChannelException(st.cur, n, ap.source); e != nil {
				ap.filings = append(ap.filings, filing{result: i, exception: e})
			}
		}
		// Rejected is not seen (principle 9): a repeat of it, here or in a
		// later delivery, is judged again rather than acked as a duplicate.
		seen[k] = results[i].Outcome != outlast.OutcomeRejected
	}
	if err := ap.flush(ctx); err != nil {
		return nil, err
	}
	if err := ap.file(ctx, results); err != nil {
		return nil, err
	}
	return results, nil
}

// conflict records that ns[i], n, contradicted its payout, which it left
// as it was: a conflicts row and the exception to file.
func (ap *applier) conflict(i int, n *outlast.Notification) {
	p := ap.payouts[n.PayoutID].cur
	e := outlast.ConflictException(p, n, ap.source)
	ap.clashes.add(p.ID, n.Channel, n.EventID, string(p.Status), string(n.Status), e.Key)
	ap.filings = append(ap.filings, filing{result: i, exception: e})
}

// file files the conflicts' exceptions, after flush has locked their
// accounts (in id order, with the others), so a claim holds from the
// balance the batch left.
func (ap *applier) file(ctx context.Context, results []outlast.ApplyResult) error {
	for _, f := range ap.filings {
		e, filed, err := fileException(ctx, ap.tx, f.exception, ap.nowNanos)
		if err != nil {
			return err
		}
		if filed {
			results[f.result].Filed = e
		}
	}
	ap.filings = ap.filings[:0]
	return nil
}

// applyOne decides and applies one new notification in memory and
// records it, unless it is rejected.
func (ap *applier) applyOne(n *outlast.Notification) outlast.ApplyResult {
	st := ap.payouts[n.PayoutID]
	if st == nil {
		// Perhaps not yet visible here: the caller retries it later.
		return outlast.ApplyResult{Outcome: outlast.OutcomeRejected, Reason: "unknown payout"}
	}
	r := outlast.Decide(st.cur, n)
	switch r.Outcome {
	case outlast.OutcomeApplied:
		ap.transition(st.cur, n.Status, n.Channel, n.PartnerRef, n.Reason)
	}
	r.Payout = ap.snapshot(n.PayoutID)
	if r.Outcome == outlast.OutcomeRejected {
		// Not recorded: only what was applied or judged (stale,
		// conflict) is remembered as seen.
		return r
	}
	received := ap.nowNanos
	if !n.ReceivedAt.IsZero() {
		received = n.ReceivedAt.UnixNano()
	}
	ap.records.add(n.Channel, n.EventID, n.PayoutID, n.PartnerRef, string(n.Status),
		outlast.CleanText(n.Reason, outlast.ReasonBytesMax), n.OccurredAt.UnixNano(), received,
		string(r.Outcome), r.Reason)
	return r
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
	if len(ids) == 0 {
		return nil
	}
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	rb := ap.db.d.rows
	ps, err := queryPayouts(ctx, ap.tx, "SELECT "+payoutColumns+" FROM payouts WHERE id "+rb.in(1, "text")+
		" ORDER BY id"+ap.db.d.forUpdate, rb.list(ids))
	if err != nil {
		return err
	}
	for _, p := range ps {
		ap.track(p)
	}
	return nil
}

// track adds a payout the caller has loaded and locked.
func (ap *applier) track(p *outlast.Payout) {
	ap.payouts[p.ID] = &payoutState{loadedVersion: p.Version, cur: p}
}

// seen returns which keys the ledger has already recorded.
func (ap *applier) seen(ctx context.Context, keys []noteKey) (map[noteKey]bool, error) {
	seen := make(map[noteKey]bool)
	if len(keys) == 0 {
		return seen, nil
	}
	batch := newRowset("channel text", "event_id text")
	for _, k := range keys {
		batch.add(k.channel, k.eventID)
	}
	rb := ap.db.d.rows
	rows, err := ap.tx.QueryContext(ctx, "SELECT n.channel, n.event_id FROM "+rb.from(batch, 1)+
		" JOIN notifications n ON n.channel = v.channel AND n.event_id = v.event_id", rb.args(batch)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var k noteKey
		if err := rows.Scan(&k.channel, &k.eventID); err != nil {
			return nil, err
		}
		seen[k] = true
	}
	return seen, rows.Err()
}

// transition moves p, locked by this transaction, to status to, which
// NextTransition allowed: journal rows, the account change and the outbox
// entry, which goes once a partner has the payout or it is final. A
// non-empty channel or partnerRef replaces the payout's. The rows are
// written at flush.
func (ap *applier) transition(p *outlast.Payout, to outlast.PayoutStatus, channel, partnerRef, reason string) {
	p.MoveTo(to, channel, partnerRef, reason, fromNanos(ap.nowNanos))
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
		ap.journal.add(p.AccountID, p.ID, string(outlast.BucketHeld), -p.Amount)
		ap.journal.add(p.AccountID, p.ID, string(outlast.BucketPaidOut), p.Amount)
	case outlast.StatusFailed:
		d.held -= p.Amount
		d.available += p.Amount
		ap.journal.add(p.AccountID, p.ID, string(outlast.BucketHeld), -p.Amount)
		ap.journal.add(p.AccountID, p.ID, string(outlast.BucketAvailable), p.Amount)
	}
}

// flush writes everything decided: payouts in id order, the notification,
// journal and conflict rows, the outbox removals, then the accounts in id
// order, re-checking each touched account's invariant.
func (ap *applier) flush(ctx context.Context) error {
	if err := ap.flushPayouts(ctx); err != nil {
		return err
	}
	n, err := ap.insert(ctx, `INSERT INTO notifications (channel, event_id, payout_id, partner_ref, status,
		reason, occurred_ns, received_ns, outcome, outcome_reason, applied_ns)`, ap.records, " ON CONFLICT DO NOTHING")
	if err != nil {
		return err
	}
	if n != int64(ap.records.n) {
		// A concurrent transaction recorded one of these events after we
		// looked; retrying the batch will see it as a duplicate.
		return outlast.Unavailable(errRecordedConcurrently, 0, "notification recorded concurrently; retry")
	}
	if _, err := ap.insert(ctx, "INSERT INTO journal (account_id, payout_id, bucket, amount, created_ns)",
		ap.journal, ""); err != nil {
		return err
	}
	if _, err := ap.insert(ctx, `INSERT INTO conflicts (payout_id, channel, event_id, payout_status,
		reported_status, exception_key, created_ns)`, ap.clashes, ""); err != nil {
		return err
	}
	if len(ap.dequeue) > 0 {
		rb := ap.db.d.rows
		if _, err := ap.tx.ExecContext(ctx, "DELETE FROM outbox WHERE payout_id "+rb.in(1, "text"),
			rb.list(ap.dequeue)); err != nil {
			return err
		}
	}
	if err := ap.flushAccounts(ctx); err != nil {
		return err
	}
	ap.records.reset()
	ap.journal.reset()
	ap.clashes.reset()
	ap.dequeue = ap.dequeue[:0]
	return nil
}

// insert writes rs's rows, each followed by the transaction's time, into
// the columns named by into, and returns how many rows were inserted.
func (ap *applier) insert(ctx context.Context, into string, rs *rowset, suffix string) (int64, error) {
	if rs.n == 0 {
		return 0, nil
	}
	rb := ap.db.d.rows
	// "WHERE true" tells SQLite's parser that ON CONFLICT belongs to the
	// INSERT, not to a join in the SELECT.
	res, err := ap.tx.ExecContext(ctx, into+" SELECT "+strings.Join(prefixedNames("v.", rs.names), ", ")+
		", $1 FROM "+rb.from(rs, 2)+" WHERE true"+suffix, append([]any{ap.nowNanos}, rb.args(rs)...)...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// flushPayouts writes the changed payouts with one UPDATE ... FROM, each
// row checked against the version it was loaded at.
func (ap *applier) flushPayouts(ctx context.Context) error {
	ids := make([]string, 0, len(ap.payouts))
	for id, st := range ap.payouts {
		if st.cur.Version != st.loadedVersion {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	sort.Strings(ids)
	changed := newRowset("id text", "status text", "version bigint", "channel text", "partner_ref text",
		"failure_reason text", "loaded_version bigint")
	for _, id := range ids {
		st := ap.payouts[id]
		p := st.cur
		changed.add(p.ID, string(p.Status), p.Version, p.Channel, p.PartnerRef, p.FailureReason, st.loadedVersion)
	}
	rb := ap.db.d.rows
	res, err := ap.tx.ExecContext(ctx, `UPDATE payouts SET status = v.status, version = v.version,
		channel = v.channel, partner_ref = v.partner_ref, failure_reason = v.failure_reason, updated_ns = $1
		FROM `+rb.from(changed, 2)+` WHERE payouts.id = v.id AND payouts.version = v.loaded_version`,
		append([]any{ap.nowNanos}, rb.args(changed)...)...)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n != int64(len(ids)) {
		// The row locks should make this impossible; if another writer
		// got there first anyway, the whole batch is retried.
		return outlast.Errorf(outlast.ECONFLICT, "payouts changed concurrently; retry")
	}
	for _, id := range ids {
		st := ap.payouts[id]
		st.loadedVersion = st.cur.Version
	}
	return nil
}

// flushAccounts adds the deltas to the accounts with one UPDATE and checks
// the invariant on each account as the UPDATE left it (RETURNING), rather
// than reading each one back.
func (ap *applier) flushAccounts(ctx context.Context) error {
	deltas := newRowset("id text", "available bigint", "held bigint", "paid_out bigint")
	ids := make([]string, 0, len(ap.deltas))
	for id, d := range ap.deltas {
		if *d != (bucketDelta{}) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		d := ap.deltas[id]
		deltas.add(id, d.available, d.held, d.paidOut)
	}
	clear(ap.deltas)
	// The accounts the conflicts' exceptions may hold from are locked
	// with the rest, in one id order.
	locks := slices.Clone(ids)
	for _, f := range ap.filings {
		locks = append(locks, f.exception.AccountID)
	}
	if err := ap.lockAccounts(ctx, slices.Compact(slices.Sorted(slices.Values(locks)))); err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	rb := ap.db.d.rows
	rows, err := ap.tx.QueryContext(ctx, `UPDATE accounts SET available = accounts.available + v.available,
		held = accounts.held + v.held, paid_out = accounts.paid_out + v.paid_out,
		version = accounts.version + 1, updated_ns = $1
		FROM `+rb.from(deltas, 2)+` WHERE accounts.id = v.id
		RETURNING accounts.id, accounts.funded, accounts.available, accounts.held, accounts.paid_out`,
		append([]any{ap.nowNanos}, rb.args(deltas)...)...)
	if err != nil {
		return err
	}
	defer rows.Close()
	updated := 0
	for rows.Next() {
		var a outlast.Account
		if err := rows.Scan(&a.ID, &a.Funded, &a.Available, &a.Held, &a.PaidOut); err != nil {
			return err
		}
		mustHold(&a)
		updated++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if updated != len(ids) {
		return fmt.Errorf("update accounts: %d of %d rows: %w", updated, len(ids), errNoRow)
	}
	return nil
}

// lockAccounts locks the accounts with these sorted ids in id order
// before one UPDATE changes them all: the UPDATE alone would lock them in
// whatever order its plan visits them, and two batches locking in
// different orders can deadlock. SQLite has no row locks to take.
func (ap *applier) lockAccounts(ctx context.Context, ids []string) error {
	if ap.db.d.forNoKeyUpdate == "" || len(ids) == 0 {
		return nil
	}
	rb := ap.db.d.rows
	rows, err := ap.tx.QueryContext(ctx, "SELECT id FROM accounts WHERE id "+rb.in(1, "text")+
		" ORDER BY id"+ap.db.d.forNoKeyUpdate, rb.list(ids))
	if err != nil {
		return err
	}
	return rows.Close()
}

// rowsPerStatement bounds the rows of one multi-row VALUES statement,
// keeping the bound parameters far below both backends' limits.
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
