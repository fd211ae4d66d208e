package http

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
)

// fakeStore is the ledger the HTTP tests run over: ledgertest.Memory,
// which passes the ledger conformance suite and so answers as the store
// does, with the faults and counts these tests need. Every method is
// written out, so none reaches the ledger around them.
type fakeStore struct {
	mem *ledgertest.Memory

	mu       sync.Mutex // guards keyReads, failWith
	keyReads int        // ClientByKeyHash calls
	failWith error      // if set, every call fails with it
}

var (
	_ outlast.AccountService = (*fakeStore)(nil)
	_ outlast.PayoutService  = (*fakeStore)(nil)
)

// newFakeStore numbers payouts p0001, p0002, … so that tests can name
// them; the numbers order as the payouts were created, as UUIDv7s do.
func newFakeStore() *fakeStore {
	mem := ledgertest.NewMemory()
	n := 0
	mem.NewID = func() string { n++; return fmt.Sprintf("p%04d", n) } // called with mem locked
	return &fakeStore{mem: mem}
}

// fault returns the error every call fails with, if one is set.
func (f *fakeStore) fault() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failWith
}

func (f *fakeStore) CreateClient(ctx context.Context, c *outlast.Client, keyHash []byte) error {
	if err := f.fault(); err != nil {
		return err
	}
	return f.mem.CreateClient(ctx, c, keyHash)
}

func (f *fakeStore) ClientByKeyHash(ctx context.Context, keyHash []byte) (*outlast.Client, error) {
	f.mu.Lock()
	f.keyReads++
	f.mu.Unlock()
	if err := f.fault(); err != nil {
		return nil, err
	}
	return f.mem.ClientByKeyHash(ctx, keyHash)
}

func (f *fakeStore) CreateAccount(ctx context.Context, a *outlast.Account) error {
	if err := f.fault(); err != nil {
		return err
	}
	return f.mem.CreateAccount(ctx, a)
}

func (f *fakeStore) FundAccount(ctx context.Context, id string, amount int64, idempotencyKey string) (*outlast.Account, bool, error) {
	if err := f.fault(); err != nil {
		return nil, false, err
	}
	return f.mem.FundAccount(ctx, id, amount, idempotencyKey)
}

func (f *fakeStore) Account(ctx context.Context, id string) (*outlast.Account, outlast.Freshness, error) {
	if err := f.fault(); err != nil {
		return nil, outlast.Freshness{}, err
	}
	return f.mem.Account(ctx, id)
}

func (f *fakeStore) SetAccountFlags(ctx context.Context, id string, flags outlast.AccountFlags) (*outlast.Account, error) {
	if err := f.fault(); err != nil {
		return nil, err
	}
	return f.mem.SetAccountFlags(ctx, id, flags)
}

func (f *fakeStore) CreatePayout(ctx context.Context, req *outlast.PayoutRequest) (*outlast.Payout, bool, error) {
	if err := f.fault(); err != nil {
		return nil, false, err
	}
	return f.mem.CreatePayout(ctx, req)
}

func (f *fakeStore) Payout(ctx context.Context, id string) (*outlast.Payout, outlast.Freshness, error) {
	if err := f.fault(); err != nil {
		return nil, outlast.Freshness{}, err
	}
	return f.mem.Payout(ctx, id)
}

func (f *fakeStore) Payouts(ctx context.Context, flt outlast.PayoutFilter) ([]*outlast.Payout, string, error) {
	if err := f.fault(); err != nil {
		return nil, "", err
	}
	return f.mem.Payouts(ctx, flt)
}

// snapshot describes everything the ledger holds, to assert that a
// refused request changed nothing.
func (f *fakeStore) snapshot() string { return f.mem.Snapshot() }

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
