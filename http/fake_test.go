package http

import (
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/outlast/outlast"
)

// fakeStore is an in-memory, goroutine-safe AccountService and
// PayoutService with the same error codes as the real store.
type fakeStore struct {
	mu       sync.Mutex
	clients  map[string]*outlast.Client
	keys     map[string]string // hex key hash → client id
	accounts map[string]*outlast.Account
	payouts  []*outlast.Payout
	idem     map[string]idemEntry // client id + "\x00" + key → payout
	keyReads int                  // ClientByKeyHash calls
	failWith error                // if set, every call fails with it
}

type idemEntry struct {
	payout      *outlast.Payout
	fingerprint string
}

var (
	_ outlast.AccountService = (*fakeStore)(nil)
	_ outlast.PayoutService  = (*fakeStore)(nil)
)

func newFakeStore() *fakeStore {
	return &fakeStore{
		clients:  make(map[string]*outlast.Client),
		keys:     make(map[string]string),
		accounts: make(map[string]*outlast.Account),
		idem:     make(map[string]idemEntry),
	}
}

func (f *fakeStore) CreateClient(ctx context.Context, c *outlast.Client, keyHash []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failWith != nil {
		return f.failWith
	}
	if _, ok := f.clients[c.ID]; ok {
		return outlast.Errorf(outlast.ECONFLICT, "client %q exists", c.ID)
	}
	cp := *c
	f.clients[c.ID] = &cp
	f.keys[hex.EncodeToString(keyHash)] = c.ID
	return nil
}

func (f *fakeStore) ClientByKeyHash(ctx context.Context, keyHash []byte) (*outlast.Client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keyReads++
	if f.failWith != nil {
		return nil, f.failWith
	}
	id, ok := f.keys[hex.EncodeToString(keyHash)]
	if !ok {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "no such key")
	}
	cp := *f.clients[id]
	return &cp, nil
}

func (f *fakeStore) CreateAccount(ctx context.Context, a *outlast.Account) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failWith != nil {
		return f.failWith
	}
	if _, ok := f.clients[a.ClientID]; !ok {
		return outlast.Errorf(outlast.EVALIDATION, "unknown client %q", a.ClientID)
	}
	if _, ok := f.accounts[a.ID]; ok {
		return outlast.Errorf(outlast.ECONFLICT, "account %q exists", a.ID)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a.Version, a.CreatedAt, a.UpdatedAt = 1, now, now
	cp := *a
	f.accounts[a.ID] = &cp
	return nil
}

func (f *fakeStore) FundAccount(ctx context.Context, id string, amount int64) (*outlast.Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.accounts[id]
	if !ok {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "account %q not found", id)
	}
	a.Funded += amount
	a.Available += amount
	a.Version++
	cp := *a
	return &cp, nil
}

func (f *fakeStore) Account(ctx context.Context, id string) (*outlast.Account, outlast.Freshness, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failWith != nil {
		return nil, outlast.Freshness{}, f.failWith
	}
	a, ok := f.accounts[id]
	if !ok {
		return nil, outlast.Freshness{}, outlast.Errorf(outlast.ENOTFOUND, "store says: no account row %q", id)
	}
	cp := *a
	return &cp, outlast.Freshness{Source: outlast.SourceDatabase}, nil
}

func (f *fakeStore) SetAccountFlags(ctx context.Context, id string, flags outlast.AccountFlags) (*outlast.Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.accounts[id]
	if !ok {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "account %q not found", id)
	}
	a.Flags = flags
	a.Version++
	cp := *a
	return &cp, nil
}

func (f *fakeStore) CreatePayout(ctx context.Context, req *outlast.PayoutRequest) (*outlast.Payout, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failWith != nil {
		return nil, false, f.failWith
	}
	k := req.ClientID + "\x00" + req.IdempotencyKey
	if e, ok := f.idem[k]; ok {
		if e.fingerprint != req.Fingerprint() {
			return nil, false, outlast.Errorf(outlast.EIDEMPOTENCY, "Idempotency-Key was used with a different request")
		}
		cp := *e.payout
		return &cp, false, nil
	}
	a, ok := f.accounts[req.AccountID]
	switch {
	case !ok || a.ClientID != req.ClientID:
		return nil, false, outlast.Errorf(outlast.EVALIDATION, "unknown account %q", req.AccountID)
	case a.Currency != req.Currency:
		return nil, false, outlast.Errorf(outlast.EVALIDATION, "account currency is %s", a.Currency)
	case a.Available < req.Amount:
		return nil, false, outlast.Errorf(outlast.EINSUFFICIENT, "available balance is %d", a.Available)
	}
	a.Available -= req.Amount
	a.Held += req.Amount
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := &outlast.Payout{
		ID: fmt.Sprintf("p%04d", len(f.payouts)+1), ClientID: req.ClientID, AccountID: req.AccountID,
		Amount: req.Amount, Currency: req.Currency, Destination: req.Destination,
		Status: outlast.StatusPending, Channel: req.Channel, IdempotencyKey: req.IdempotencyKey,
		Version: 1, CreatedAt: now, UpdatedAt: now,
	}
	f.payouts = append(f.payouts, p)
	f.idem[k] = idemEntry{payout: p, fingerprint: req.Fingerprint()}
	cp := *p
	return &cp, true, nil
}

func (f *fakeStore) Payout(ctx context.Context, id string) (*outlast.Payout, outlast.Freshness, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.payouts {
		if p.ID == id {
			cp := *p
			return &cp, outlast.Freshness{Source: outlast.SourceDatabase}, nil
		}
	}
	return nil, outlast.Freshness{}, outlast.Errorf(outlast.ENOTFOUND, "no payout row %q", id)
}

// Payouts pages newest first; the cursor is the index to continue from.
func (f *fakeStore) Payouts(ctx context.Context, flt outlast.PayoutFilter) ([]*outlast.Payout, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if flt.ClientID == "" {
		return nil, "", outlast.Errorf(outlast.EINVALID, "client is required")
	}
	limit := flt.Limit
	if limit <= 0 {
		limit = 50
	}
	var match []*outlast.Payout
	for _, p := range slices.Backward(f.payouts) {
		if p.ClientID == flt.ClientID && (flt.AccountID == "" || p.AccountID == flt.AccountID) &&
			(flt.Status == "" || p.Status == flt.Status) {
			cp := *p
			match = append(match, &cp)
		}
	}
	start := 0
	if flt.Cursor != "" {
		n, err := strconv.Atoi(flt.Cursor)
		if err != nil || n < 0 || n > len(match) {
			return nil, "", outlast.Errorf(outlast.EINVALID, "invalid cursor")
		}
		start = n
	}
	end := min(start+limit, len(match))
	next := ""
	if end < len(match) {
		next = strconv.Itoa(end)
	}
	return match[start:end], next, nil
}

// counts returns how many payouts exist and the account's buckets, to
// assert that a refused request changed nothing.
func (f *fakeStore) snapshot() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := fmt.Sprintf("payouts=%d clients=%d accounts=%d", len(f.payouts), len(f.clients), len(f.accounts))
	ids := make([]string, 0, len(f.accounts))
	for id := range f.accounts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		a := f.accounts[id]
		s += fmt.Sprintf(" %s:%d/%d/%d/%d/%+v", id, a.Funded, a.Available, a.Held, a.PaidOut, a.Flags)
	}
	return s
}

// fakeLog is a goroutine-safe NotificationLog that can fail or block.
type fakeLog struct {
	mu       sync.Mutex
	appended []*outlast.Notification
	err      error
	entered  chan struct{} // if set, receives once per Append call
	release  chan struct{} // if set, Append waits for it
}

var _ outlast.NotificationLog = (*fakeLog)(nil)

func (l *fakeLog) Append(ctx context.Context, n *outlast.Notification) error {
	l.mu.Lock()
	entered, release, err := l.entered, l.release, l.err
	l.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if release != nil {
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cp := *n
	l.appended = append(l.appended, &cp)
	return nil
}

func (l *fakeLog) setErr(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.err = err
}

func (l *fakeLog) all() []*outlast.Notification {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.appended)
}

// fakeInbox is a goroutine-safe Inbox that can fail.
type fakeInbox struct {
	mu       sync.Mutex
	appended []*outlast.Notification
	err      error
}

var _ InboxAppender = (*fakeInbox)(nil)

func (b *fakeInbox) AppendInbox(ctx context.Context, ns []*outlast.Notification) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	for _, n := range ns {
		cp := *n
		b.appended = append(b.appended, &cp)
	}
	return nil
}

func (b *fakeInbox) setErr(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.err = err
}

func (b *fakeInbox) all() []*outlast.Notification {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.appended)
}

// fakeDeadLetters is a goroutine-safe outlast.DeadLetters of one source
// that can fail, with the real stores' rules: ids "<source>:<n>", missing
// ones skipped, one without a notification refused.
type fakeDeadLetters struct {
	source outlast.Source
	mu     sync.Mutex
	dead   map[int64]outlast.DeadLetter
	next   int64
	back   []*outlast.Notification // replayed, in order
	err    error                   // if set, every call fails with it
}

var _ outlast.DeadLetters = (*fakeDeadLetters)(nil)

func newFakeDeadLetters(source outlast.Source) *fakeDeadLetters {
	return &fakeDeadLetters{source: source, dead: map[int64]outlast.DeadLetter{}}
}

// add dead-letters n (nil: an undecodable message) at at and returns its id.
func (f *fakeDeadLetters) add(n *outlast.Notification, reason string, at time.Time) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	d := outlast.DeadLetter{ID: outlast.DeadLetterID(f.source, strconv.FormatInt(f.next, 10)),
		Notification: n, Reason: reason, Deliveries: 3, At: at}
	if n == nil {
		d.Raw = []byte("not json")
	}
	f.dead[f.next] = d
	return d.ID
}

func (f *fakeDeadLetters) DeadLetters(ctx context.Context, limit int) ([]outlast.DeadLetter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if limit <= 0 || limit > outlast.DeadLettersMax {
		limit = outlast.DeadLettersMax
	}
	keys := slices.Sorted(maps.Keys(f.dead))
	slices.Reverse(keys)
	var out []outlast.DeadLetter
	for _, k := range keys[:min(limit, len(keys))] {
		out = append(out, f.dead[k])
	}
	return out, nil
}

func (f *fakeDeadLetters) ReplayDeadLetters(ctx context.Context, ids []string) (int, error) {
	keys, err := outlast.DeadLetterKeys(f.source, ids)
	if err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	for _, k := range keys {
		if d, ok := f.dead[k]; ok && d.Notification == nil {
			return 0, outlast.Errorf(outlast.EVALIDATION, "cannot replay %s (undecodable)", d.ID)
		}
	}
	n := 0
	for _, k := range keys {
		if d, ok := f.dead[k]; ok {
			f.back = append(f.back, d.Notification)
			delete(f.dead, k)
			n++
		}
	}
	return n, nil
}

func (f *fakeDeadLetters) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeDeadLetters) replayed() []*outlast.Notification {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.back)
}
