package naive

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/outlast/outlast"
)

// bankResponseBytesMax bounds what is read of a bank's answer.
const bankResponseBytesMax = 64 << 10

// dispatchLoop sends pending payouts to their channel's bank every
// DispatchInterval until ctx ends.
func (s *Server) dispatchLoop(ctx context.Context) {
	for ctx.Err() == nil {
		s.dispatchOnce(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(s.cfg.DispatchInterval):
		}
	}
}

// dispatchOnce claims a batch and sends each payout once. A payout the
// bank neither took nor refused stays pending and is sent again once its
// lease runs out: the bank is idempotent on the payout id, so that retry
// is safe, and it is the whole retry policy.
func (s *Server) dispatchOnce(ctx context.Context) {
	ps, err := claimPending(ctx, s.db, defaultDispatchBatchMax, s.cfg.DispatchLease, time.Now())
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("naive: claim pending payouts", "err", err)
		}
		return
	}
	for _, p := range ps {
		s.dispatch(ctx, p)
	}
}

func (s *Server) dispatch(ctx context.Context, p *outlast.Payout) {
	ref, refused, err := s.submit(ctx, p)
	to, reason := outlast.StatusDispatched, ""
	switch {
	case err != nil:
		s.log.Warn("naive: payout not sent; retrying after the lease", "payout_id", p.ID, "channel", p.Channel, "err", err)
		return
	case refused != "":
		to, reason = outlast.StatusFailed, refused
	}
	moved, err := recordDispatch(ctx, s.db, p.ID, to, ref, reason, time.Now())
	if err != nil {
		s.log.Warn("naive: dispatch not recorded", "payout_id", p.ID, "err", err)
		return
	}
	s.invalidate(ctx, payoutKey(p.ID), accountKey(moved.AccountID))
}

// submit POSTs p to its bank: the partner ref when it was taken, the
// bank's reason when it refused it (400 or 422), an error otherwise.
func (s *Server) submit(ctx context.Context, p *outlast.Payout) (ref, refused string, err error) {
	base, ok := s.cfg.Channels[p.Channel]
	if !ok {
		return "", "", fmt.Errorf("channel %q is not configured", p.Channel)
	}
	body, err := json.Marshal(map[string]any{"payout_id": p.ID, "amount": p.Amount, "currency": p.Currency, "destination": p.Destination})
	if err != nil {
		return "", "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/payouts", bytes.NewReader(body))
	if err != nil {
		return "", "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", p.ID)
	resp, err := s.bank.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, bankResponseBytesMax))
	if err != nil {
		return "", "", err
	}
	var out struct {
		PartnerRef string `json:"partner_ref"`
		Error      string `json:"error"`
	}
	_ = json.Unmarshal(raw, &out) // an unreadable body leaves both empty
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299 && outlast.ValidID(out.PartnerRef):
		return out.PartnerRef, "", nil
	case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnprocessableEntity:
		if out.Error == "" {
			out.Error = fmt.Sprintf("bank answered %d", resp.StatusCode)
		}
		return "", out.Error, nil
	}
	return "", "", fmt.Errorf("bank answered %d", resp.StatusCode)
}
