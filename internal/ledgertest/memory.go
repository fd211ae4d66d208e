package ledgertest

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/outlast/outlast"
)

// Limits of Memory, the store's.
const (
	// memoryBatchMax bounds a batch of notifications and an outbox claim.
	memoryBatchMax = 1000
	// memoryLeaseDefault is the claim lease when the caller gives none.
	memoryLeaseDefault = 30 * time.Second
	// memoryPageLimitDefault is the page size when the filter sets none.
	memoryPageLimitDefault = 50
)

// Memory is an outlast.Ledger in memory for the tests of packages that
// need a ledger but not a database (http, jetstream). It keeps what the
// store keeps — clients, accounts with their buckets, payouts with holds,
// the outbox with leases, the notifications it remembered — and answers
// as the store does, error codes included; it passes the conformance
// suite, so where it would drift from the store a test says so. It has no
// journal and no audit. It is also the control plane's outlast.ControlStore,
// as the store is. It is safe for concurrent use; each call is atomic, as
// a transaction of the store is.
type Memory struct {
	// Now is the ledger's clock and NewID gives a new payout its id;
	// NewMemory sets time.Now and outlast.NewID. Set them before the
	// Memory is shared, or between calls that do not overlap. NewID is
	// called with the Memory locked.
	Now   func() time.Time
	NewID func() string

	mu       sync.Mutex // guards every field below
	clients  map[string]*outlast.Client
	keys     map[string]string // hex of the key hash → client id
	accounts map[string]*outlast.Account
	payouts  map[string]*outlast.Payout
	idem     map[idemKey]idemEntry
	outbox   map[string]*dispatchEntry // by payout id
	seen     map[noteKey]bool          // notifications remembered: applied, stale or conflict
	fundings map[fundingKey]int64      // amount credited under each key
	control  *outlast.ControlConfig    // the config document; nil is the default
	changes  []outlast.ConfigChange    // the config's history, oldest first
	// exceptions are filed exceptions, exceptions[i] with id i+1;
	// exceptionKeys finds one by its key.
	exceptions    []*outlast.Exception
	exceptionKeys map[string]*outlast.Exception
}

var (
	_ outlast.Ledger       = (*Memory)(nil)
	_ outlast.ControlStore = (*Memory)(nil)
)

type idemKey struct{ client, key string }

type idemEntry struct {
	payoutID    string
	fingerprint string
}

type noteKey struct{ channel, eventID string }

// dispatchEntry is a payout waiting in the outbox: due from next on.
type dispatchEntry struct {
	attempts  int
	next      time.Time
	lastError string
	refused   []string // channels that refused the payout, oldest first
}

// NewMemory returns an empty ledger.
func NewMemory() *Memory {
	return &Memory{
		Now: time.Now, NewID: outlast.NewID,
		clients: map[string]*outlast.Client{}, keys: map[string]string{},
		accounts: map[string]*outlast.Account{}, payouts: map[string]*outlast.Payout{},
		idem: map[idemKey]idemEntry{}, outbox: map[string]*dispatchEntry{}, seen: map[noteKey]bool{},
		fundings: map[fundingKey]int64{}, exceptionKeys: map[string]*outlast.Exception{},
	}
}

// now returns the current time in UTC; m.mu is held.
func (m *Memory) now() time.Time { return m.Now().UTC() }

func (m *Memory) CreateClient(_ context.Context, c *outlast.Client, keyHash []byte) error {
	if !outlast.ValidID(c.ID) {
		return outlast.Errorf(outlast.EVALIDATION, "id must be 1-%d characters of [A-Za-z0-9._:-]", outlast.IDBytesMax)
	}
	if len(keyHash) == 0 {
		return outlast.Errorf(outlast.EVALIDATION, "key hash is required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	key := hex.EncodeToString(keyHash)
	if _, ok := m.clients[c.ID]; ok {
		return outlast.Errorf(outlast.ECONFLICT, "client %q already exists", c.ID)
	}
	if _, ok := m.keys[key]; ok {
		return outlast.Errorf(outlast.ECONFLICT, "client %q already exists", c.ID)
	}
	c.CreatedAt = m.now()
	cp := *c
	m.clients[c.ID], m.keys[key] = &cp, c.ID
	return nil
}

func (m *Memory) ClientByKeyHash(_ context.Context, keyHash []byte) (*outlast.Client, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id, ok := m.keys[hex.EncodeToString(keyHash)]
	if !ok {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "no client for this key")
	}
	cp := *m.clients[id]
	return &cp, nil
}

func (m *Memory) CreateAccount(_ context.Context, a *outlast.Account) error {
	if err := a.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.clients[a.ClientID]; !ok {
		return outlast.Errorf(outlast.EVALIDATION, "unknown client %q", a.ClientID)
	}
	if _, ok := m.accounts[a.ID]; ok {
		return outlast.Errorf(outlast.ECONFLICT, "account %q already exists", a.ID)
	}
	now := m.now()
	a.Funded, a.Available, a.Held, a.PaidOut = 0, 0, 0, 0
	a.Version, a.CreatedAt, a.UpdatedAt = 1, now, now
	cp := *a
	m.accounts[a.ID] = &cp
	return nil
}

func (m *Memory) FundAccount(_ context.Context, id string, amount int64, idempotencyKey string) (*outlast.Account, bool, error) {
	if err := outlast.ValidateAmount(amount); err != nil {
		return nil, false, err
	}
	if err := outlast.ValidateIdempotencyKey(idempotencyKey); err != nil {
		return nil, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.accounts[id]
	if !ok {
		return nil, false, outlast.Errorf(outlast.ENOTFOUND, "account %q not found", id)
	}
	key := fundingKey{id, idempotencyKey}
	if first, seen := m.fundings[key]; seen {
		if first != amount {
			return nil, false, outlast.FundingKeyReused(idempotencyKey, id, first, amount)
		}
		cp := *a
		return &cp, false, nil
	}
	if a.Funded > math.MaxInt64/2-amount { // far from int64 overflow
		return nil, false, outlast.Errorf(outlast.EVALIDATION, "account %q cannot take more funds", id)
	}
	m.fundings[key] = amount
	a.Funded += amount
	a.Available += amount
	m.changed(a, m.now())
	cp := *a
	return &cp, true, nil
}

// fundingKey is what makes a funding happen once.
type fundingKey struct{ account, idempotencyKey string }

// changed records a change of a at now; a violated invariant is a bug and
// panics, as in the store. m.mu is held.
func (m *Memory) changed(a *outlast.Account, now time.Time) {
	a.Version++
	a.UpdatedAt = now
	if err := a.CheckInvariant(); err != nil {
		panic("ledgertest: ledger invariant violated: " + err.Error())
	}
}

func (m *Memory) Account(_ context.Context, id string) (*outlast.Account, outlast.Freshness, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.accounts[id]
	if !ok {
		return nil, outlast.Freshness{}, outlast.Errorf(outlast.ENOTFOUND, "account %q not found", id)
	}
	cp := *a
	return &cp, outlast.Freshness{Source: outlast.SourceDatabase}, nil
}

func (m *Memory) SetAccountFlags(_ context.Context, id string, flags outlast.AccountFlags) (*outlast.Account, error) {
	if flags.DailyLimit < 0 {
		return nil, outlast.Errorf(outlast.EVALIDATION, "flags.daily_limit must not be negative")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.accounts[id]
	if !ok {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "account %q not found", id)
	}
	a.Flags = flags
	m.changed(a, m.now())
	cp := *a
	return &cp, nil
}

func (m *Memory) CreatePayout(_ context.Context, req *outlast.PayoutRequest) (*outlast.Payout, bool, error) {
	if err := req.Validate(); err != nil {
		return nil, false, err
	}
	if outlast.CleanText(req.Destination, outlast.DestinationBytesMax) != req.Destination {
		return nil, false, outlast.Errorf(outlast.EVALIDATION, "destination must be UTF-8 text without NUL bytes")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := idemKey{req.ClientID, req.IdempotencyKey}
	if e, ok := m.idem[k]; ok {
		if e.fingerprint != req.Fingerprint() {
			return nil, false, outlast.Errorf(outlast.EIDEMPOTENCY, "Idempotency-Key was already used with a different request")
		}
		cp := *m.payouts[e.payoutID]
		return &cp, false, nil
	}
	a, ok := m.accounts[req.AccountID]
	if !ok || a.ClientID != req.ClientID {
		// The same answer for another client's account, as the store's.
		return nil, false, outlast.Errorf(outlast.EVALIDATION, "unknown account %q", req.AccountID)
	}
	now := m.now()
	if err := m.payoutAllowed(a, req, now); err != nil {
		return nil, false, err
	}
	p := &outlast.Payout{
		ID: m.NewID(), ClientID: req.ClientID, AccountID: req.AccountID, Amount: req.Amount,
		Currency: req.Currency, Destination: req.Destination, Status: outlast.StatusPending,
		Channel: req.Channel, IdempotencyKey: req.IdempotencyKey, Version: 1, CreatedAt: now, UpdatedAt: now,
	}
	if _, ok := m.payouts[p.ID]; ok {
		return nil, false, outlast.Errorf(outlast.ECONFLICT, "payout %q already exists", p.ID)
	}
	m.payouts[p.ID] = p
	m.idem[k] = idemEntry{payoutID: p.ID, fingerprint: req.Fingerprint()}
	m.outbox[p.ID] = &dispatchEntry{next: now}
	a.Available -= p.Amount
	a.Held += p.Amount
	m.changed(a, now)
	cp := *p
	return &cp, true, nil
}

// payoutAllowed applies the account's state and flags to a request, as
// the store does. m.mu is held.
func (m *Memory) payoutAllowed(a *outlast.Account, req *outlast.PayoutRequest, now time.Time) error {
	if e := m.shortException(a.ID); e != nil {
		return outlast.PayoutsHeldByException(e)
	}
	if err := a.CheckPayout(req); err != nil || a.Flags.DailyLimit <= 0 {
		return err
	}
	dayStart := now.Truncate(24 * time.Hour) // UTC midnight
	var today int64
	for _, p := range m.payouts {
		if p.AccountID == a.ID && !p.CreatedAt.Before(dayStart) && p.Status != outlast.StatusFailed {
			today += p.Amount
		}
	}
	return a.CheckDailyLimit(today, req.Amount)
}

func (m *Memory) Payout(_ context.Context, id string) (*outlast.Payout, outlast.Freshness, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.payouts[id]
	if !ok {
		return nil, outlast.Freshness{}, outlast.Errorf(outlast.ENOTFOUND, "payout %q not found", id)
	}
	cp := *p
	return &cp, outlast.Freshness{Source: outlast.SourceDatabase}, nil
}

// Payouts pages newest first by id, as the store does; the cursor is the
// last id of the page.
func (m *Memory) Payouts(_ context.Context, f outlast.PayoutFilter) ([]*outlast.Payout, string, error) {
	if f.ClientID == "" {
		return nil, "", outlast.Errorf(outlast.EINVALID, "client is required")
	}
	if f.Status != "" && !f.Status.Valid() {
		return nil, "", outlast.Errorf(outlast.EVALIDATION, "unknown status %q", f.Status)
	}
	var after string
	if f.Cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(f.Cursor)
		if err != nil || !outlast.ValidID(string(b)) {
			return nil, "", outlast.Errorf(outlast.EINVALID, "invalid cursor")
		}
		after = string(b)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = memoryPageLimitDefault
	}
	limit = min(limit, outlast.PageLimitMax)
	m.mu.Lock()
	defer m.mu.Unlock()
	var ps []*outlast.Payout
	for _, p := range m.payouts {
		if p.ClientID == f.ClientID && (after == "" || p.ID < after) &&
			(f.AccountID == "" || p.AccountID == f.AccountID) && (f.Status == "" || p.Status == f.Status) {
			cp := *p
			ps = append(ps, &cp)
		}
	}
	slices.SortFunc(ps, func(a, b *outlast.Payout) int { return strings.Compare(b.ID, a.ID) })
	if len(ps) <= limit {
		return ps, "", nil
	}
	ps = ps[:limit]
	return ps, base64.RawURLEncoding.EncodeToString([]byte(ps[limit-1].ID)), nil
}

func (m *Memory) ClaimDispatches(_ context.Context, limit int, lease time.Duration) ([]*outlast.Dispatch, error) {
	if limit <= 0 || limit > memoryBatchMax {
		limit = memoryBatchMax
	}
	if lease <= 0 {
		lease = memoryLeaseDefault
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	var due []string
	for id, e := range m.outbox {
		if !e.next.After(now) {
			due = append(due, id)
		}
	}
	slices.SortFunc(due, func(a, b string) int {
		if c := m.outbox[a].next.Compare(m.outbox[b].next); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	ds := make([]*outlast.Dispatch, 0, min(limit, len(due)))
	for _, id := range due[:min(limit, len(due))] {
		e := m.outbox[id]
		cp := *m.payouts[id]
		e.next = now.Add(lease)
		ds = append(ds, &outlast.Dispatch{Payout: &cp, Attempts: e.attempts, Refused: slices.Clone(e.refused), Claim: e.next})
	}
	return ds, nil
}

func (m *Memory) MarkDispatched(_ context.Context, payoutID, channel, partnerRef string) (*outlast.Payout, error) {
	if !outlast.ValidID(channel) || (partnerRef != "" && !outlast.ValidID(partnerRef)) {
		return nil, outlast.Errorf(outlast.EVALIDATION, "channel and partner_ref must be 1-%d characters of [A-Za-z0-9._:-]", outlast.IDBytesMax)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.payouts[payoutID]
	if !ok {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "payout %q not found", payoutID)
	}
	if p.Status == outlast.StatusPending {
		m.settle(m.transition(p, outlast.StatusDispatched, channel, partnerRef, "", m.now()))
	}
	delete(m.outbox, payoutID)
	cp := *p
	return &cp, nil
}

func (m *Memory) RetryDispatch(_ context.Context, payoutID string, notBefore time.Time, lastError string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.outbox[payoutID]; ok {
		e.attempts++
		e.next, e.lastError = notBefore, outlast.CleanText(lastError, outlast.ReasonBytesMax)
		return nil
	}
	if _, ok := m.payouts[payoutID]; !ok {
		return outlast.Errorf(outlast.ENOTFOUND, "payout %q not found", payoutID)
	}
	return nil // no longer queued: left alone
}

func (m *Memory) RejectDispatch(_ context.Context, payoutID, channel, reason string, claim time.Time) (*outlast.Payout, error) {
	if !outlast.ValidID(channel) {
		return nil, outlast.Errorf(outlast.EVALIDATION, "channel must be 1-%d characters of [A-Za-z0-9._:-]", outlast.IDBytesMax)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.payouts[payoutID]
	switch {
	case !ok:
		return nil, outlast.Errorf(outlast.ENOTFOUND, "payout %q not found", payoutID)
	case p.Status == outlast.StatusDispatched:
		return nil, outlast.Errorf(outlast.ECONFLICT, "payout %s was already accepted by %s", p.ID, p.Channel)
	case p.Status == outlast.StatusPending:
		if e := m.outbox[payoutID]; !claim.IsZero() && !claimed(e, claim) {
			return nil, outlast.ClaimLost(payoutID)
		}
		if reason == "" {
			reason = "rejected by " + channel
		}
		m.settle(m.transition(p, outlast.StatusFailed, channel, "", reason, m.now()))
	}
	delete(m.outbox, payoutID)
	cp := *p
	return &cp, nil
}

func (m *Memory) RerouteDispatch(_ context.Context, payoutID, from, to, reason string, claim time.Time) (*outlast.Payout, error) {
	if err := outlast.ValidateReroute(from, to); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.payouts[payoutID]
	if !ok {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "payout %q not found", payoutID)
	}
	e := m.outbox[payoutID]
	if p.Status == outlast.StatusPending && (e == nil || (!claim.IsZero() && !claimed(e, claim))) {
		return nil, outlast.ClaimLost(payoutID)
	}
	var refused []string
	if e != nil {
		refused = e.refused
	}
	if err := outlast.CheckReroute(p, from, to, refused); err != nil {
		return nil, err
	}
	now := m.now()
	p.MoveTo(outlast.StatusPending, to, "", "", now)
	e.refused = append(slices.Clip(e.refused), from)
	e.attempts, e.next, e.lastError = 0, now, outlast.CleanText(reason, outlast.ReasonBytesMax)
	cp := *p
	return &cp, nil
}

// claimed reports whether outbox entry e, if any, is still claim's: its
// next attempt is the claim's lease end.
func claimed(e *dispatchEntry, claim time.Time) bool { return e != nil && e.next.Equal(claim) }

// Apply applies ns in order, atomically; see outlast.Ledger. At most
// 1000 notifications per call, as the store.
func (m *Memory) Apply(_ context.Context, source outlast.Source, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
	if len(ns) > memoryBatchMax {
		return nil, outlast.Errorf(outlast.EINVALID, "at most %d notifications per batch", memoryBatchMax)
	}
	if len(ns) == 0 {
		return nil, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	var moves []move
	results := make([]outlast.ApplyResult, len(ns))
	for i, n := range ns {
		results[i] = m.applyOne(n, now, &moves)
	}
	m.settle(moves...)
	// Conflicts, and successes another channel reported, file their
	// exceptions once the batch's moves are in: a claim holds from
	// available as the batch left it, as in the store.
	for i := range results {
		p := m.payouts[ns[i].PayoutID]
		var e *outlast.Exception
		switch {
		case results[i].Outcome == outlast.OutcomeConflict:
			e = outlast.ConflictException(p, ns[i], source)
		case results[i].Outcome == outlast.OutcomeRejected && p != nil && ns[i].Validate() == nil:
			e = outlast.OtherChannelException(p, ns[i], source)
		}
		if e != nil && m.exceptionKeys[e.Key] == nil {
			results[i].Filed = copyException(m.fileLocked(e, now))
		}
	}
	return results, nil
}

// applyOne decides and applies one notification and remembers it, unless
// it is rejected (principle 9: rejected is not seen). m.mu is held.
func (m *Memory) applyOne(n *outlast.Notification, now time.Time, moves *[]move) outlast.ApplyResult {
	if err := n.Validate(); err != nil {
		return outlast.ApplyResult{Outcome: outlast.OutcomeRejected, Reason: outlast.ErrorMessage(err)}
	}
	k := noteKey{n.Channel, n.EventID}
	p := m.payouts[n.PayoutID]
	if m.seen[k] {
		return outlast.ApplyResult{Outcome: outlast.OutcomeDuplicate, Payout: copyPayout(p)}
	}
	if p == nil {
		// Perhaps not created yet: the caller retries it later.
		return outlast.ApplyResult{Outcome: outlast.OutcomeRejected, Reason: "unknown payout"}
	}
	r := outlast.Decide(p, n)
	if r.Outcome == outlast.OutcomeApplied {
		*moves = append(*moves, m.transition(p, n.Status, n.Channel, n.PartnerRef, n.Reason, now))
	}
	r.Payout = copyPayout(p)
	if r.Outcome != outlast.OutcomeRejected {
		m.seen[k] = true
	}
	return r
}

func copyPayout(p *outlast.Payout) *outlast.Payout {
	if p == nil {
		return nil
	}
	cp := *p
	return &cp
}

// move is what one transition does to its account's buckets.
type move struct {
	account                  string
	now                      time.Time
	available, held, paidOut int64
}

// transition moves p to status to, which NextTransition allowed, as the
// store does: the payout leaves the outbox (a partner has it, or it is
// final), and the hold is paid out or released. It returns the move for settle, which
// changes the account once per call, as the store's one UPDATE per
// transaction. m.mu is held.
func (m *Memory) transition(p *outlast.Payout, to outlast.PayoutStatus, channel, partnerRef, reason string, now time.Time) move {
	p.MoveTo(to, channel, partnerRef, reason, now)
	delete(m.outbox, p.ID)
	mv := move{account: p.AccountID, now: now}
	switch to {
	case outlast.StatusSucceeded:
		mv.held, mv.paidOut = -p.Amount, p.Amount
	case outlast.StatusFailed:
		mv.held, mv.available = -p.Amount, p.Amount
	}
	return mv
}

// settle adds moves to their accounts, each account changing once. m.mu
// is held.
func (m *Memory) settle(moves ...move) {
	sum := map[string]*move{}
	for _, mv := range moves {
		s := sum[mv.account]
		if s == nil {
			s = &move{account: mv.account, now: mv.now}
			sum[mv.account] = s
		}
		s.available += mv.available
		s.held += mv.held
		s.paidOut += mv.paidOut
	}
	for id, s := range sum {
		if s.available == 0 && s.held == 0 && s.paidOut == 0 {
			continue // dispatched only: the buckets did not move
		}
		a := m.accounts[id]
		a.Available += s.available
		a.Held += s.held
		a.PaidOut += s.paidOut
		m.changed(a, s.now)
	}
}

// Snapshot describes everything m holds, sorted, so that a test can show
// that a refused request changed nothing by comparing two.
func (m *Memory) Snapshot() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var lines []string
	for id, c := range m.clients {
		lines = append(lines, fmt.Sprintf("client %s %s", id, c.CreatedAt.Format(time.RFC3339Nano)))
	}
	for key, id := range m.keys {
		lines = append(lines, fmt.Sprintf("key %s %s", key, id))
	}
	for id, a := range m.accounts {
		lines = append(lines, fmt.Sprintf("account %s %s funded %d available %d held %d paid_out %d flags %+v v%d",
			id, a.Currency, a.Funded, a.Available, a.Held, a.PaidOut, a.Flags, a.Version))
	}
	for id, p := range m.payouts {
		lines = append(lines, fmt.Sprintf("payout %s %s %d %s via %q ref %q v%d", id, p.AccountID, p.Amount, p.Status, p.Channel, p.PartnerRef, p.Version))
	}
	for id, e := range m.outbox {
		lines = append(lines, fmt.Sprintf("outbox %s attempts %d next %s", id, e.attempts, e.next.Format(time.RFC3339Nano)))
	}
	for k := range m.seen {
		lines = append(lines, fmt.Sprintf("seen %s %s", k.channel, k.eventID))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// ControlConfig returns the current config document; see
// outlast.ControlStore.
func (m *Memory) ControlConfig(_ context.Context) (*outlast.ControlConfig, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.controlLocked().Clone(), nil
}

// ControlVersion returns the current config document's version.
func (m *Memory) ControlVersion(_ context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.controlLocked().Version, nil
}

// PutControlConfig stores c as the next version if the current one is
// ifVersion, with its change; see outlast.ControlStore.
func (m *Memory) PutControlConfig(_ context.Context, c *outlast.ControlConfig, ifVersion int64, actor, reason string) (*outlast.ControlConfig, error) {
	if err := outlast.ValidateControlChange(c, actor, reason); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	before := m.controlLocked()
	if before.Version != ifVersion {
		return nil, outlast.StaleConfig(before.Version, ifVersion)
	}
	now := m.now()
	next := c.Clone()
	next.Version, next.UpdatedAt, next.UpdatedBy = ifVersion+1, now, actor
	m.control = next
	m.changes = append(m.changes, outlast.ConfigChange{Version: next.Version, At: now, Actor: actor, Reason: reason,
		Before: before, After: next.Clone()})
	return next.Clone(), nil
}

// ControlHistory lists up to limit config changes, newest first.
func (m *Memory) ControlHistory(_ context.Context, limit int) ([]outlast.ConfigChange, error) {
	if limit <= 0 || limit > outlast.ControlHistoryMax {
		limit = outlast.ControlHistoryMax
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []outlast.ConfigChange
	for _, ch := range slices.Backward(m.changes) {
		if len(out) == limit {
			break
		}
		ch.Before, ch.After = ch.Before.Clone(), ch.After.Clone()
		out = append(out, ch)
	}
	return out, nil
}

// controlLocked returns the stored document, never nil and never to be
// changed: each put stores a new one. m.mu is held.
func (m *Memory) controlLocked() *outlast.ControlConfig {
	if m.control == nil {
		return (&outlast.ControlConfig{}).Clone()
	}
	return m.control
}

// EachPayout calls fn for every payout in id order until fn errors, as
// the store's does (outlast.Auditor's), on copies taken at the call: fn
// runs unlocked and may call the ledger.
func (m *Memory) EachPayout(_ context.Context, fn func(*outlast.Payout) error) error {
	m.mu.Lock()
	ps := make([]*outlast.Payout, 0, len(m.payouts))
	for _, p := range m.payouts {
		cp := *p
		ps = append(ps, &cp)
	}
	m.mu.Unlock()
	slices.SortFunc(ps, func(a, b *outlast.Payout) int { return strings.Compare(a.ID, b.ID) })
	for _, p := range ps {
		if err := fn(p); err != nil {
			return err
		}
	}
	return nil
}
