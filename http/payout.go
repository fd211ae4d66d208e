package http

import (
	"context"
	nethttp "net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/outlast/outlast"
)

const (
	headerIdempotencyKey = "Idempotency-Key"
	headerReplayed       = "Idempotent-Replayed"
	// chooseChannelTimeout bounds the router's choice; it reads local state
	// and should never come near this.
	chooseChannelTimeout = 2 * time.Second
)

// payoutJSON is the payout as the API shows it.
type payoutJSON struct {
	ID          string               `json:"id"`
	AccountID   string               `json:"account_id"`
	Amount      int64                `json:"amount"`
	Currency    string               `json:"currency"`
	Destination string               `json:"destination"`
	Status      outlast.PayoutStatus `json:"status"`
	Channel     string               `json:"channel"`
	PartnerRef  string               `json:"partner_ref"`
	// FailureReason appears only on failed payouts, so a client can say why.
	FailureReason string    `json:"failure_reason,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
}

func toPayoutJSON(p *outlast.Payout) payoutJSON {
	return payoutJSON{
		ID: p.ID, AccountID: p.AccountID, Amount: p.Amount, Currency: p.Currency,
		Destination: p.Destination, Status: p.Status, Channel: p.Channel, PartnerRef: p.PartnerRef,
		FailureReason: p.FailureReason, CreatedAt: p.CreatedAt.UTC(), UpdatedAt: p.UpdatedAt.UTC(),
	}
}

// createPayout answers 201 once the payout is committed, or 200 with the
// original payout when the Idempotency-Key was seen before. During
// maintenance it answers 503 with the operators' message and Retry-After,
// replays included: a client keeps its key and comes back.
func (s *Server) createPayout(w nethttp.ResponseWriter, r *nethttp.Request) {
	ctx := r.Context()
	// First, before anything that needs the database: maintenance must
	// refuse payouts whatever else is down.
	if s.svc.Local != nil {
		if err := s.svc.Local.Maintenance(); err != nil {
			maintenanceRefusedTotal.Inc()
			routeFrom(r).maintenance = true
			s.writeError(w, r, err)
			return
		}
	}
	c, err := s.requireClient(ctx, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	key, err := idempotencyKey(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var in struct {
		AccountID   string `json:"account_id"`
		Amount      int64  `json:"amount"`
		Currency    string `json:"currency"`
		Destination string `json:"destination"`
	}
	if err := s.decodeBody(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	req := &outlast.PayoutRequest{ClientID: c.ID, IdempotencyKey: key,
		AccountID: in.AccountID, Amount: in.Amount, Currency: in.Currency, Destination: in.Destination}
	if err := req.Validate(); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Channel, err = s.chooseChannel(ctx); err != nil {
		s.writeError(w, r, err)
		return
	}
	p, created, err := s.svc.Payouts.CreatePayout(ctx, req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/payouts/"+p.ID)
	if !created {
		w.Header().Set(headerReplayed, "true")
		writeJSON(w, nethttp.StatusOK, toPayoutJSON(p))
		return
	}
	writeJSON(w, nethttp.StatusCreated, toPayoutJSON(p))
}

// idempotencyKey reads the Idempotency-Key header every request that
// creates or moves money takes: a client retrying after a timeout must
// get the first answer, not a second payout or credit.
func idempotencyKey(r *nethttp.Request) (string, error) {
	key := r.Header.Get(headerIdempotencyKey)
	if key == "" {
		return "", outlast.Errorf(outlast.EINVALID, "the %s header is required", headerIdempotencyKey)
	}
	return key, outlast.ValidateIdempotencyKey(key)
}

// chooseChannel asks the router; whatever its failure, the caller may retry
// later, so it is always a 503 with Retry-After.
func (s *Server) chooseChannel(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, chooseChannelTimeout)
	defer cancel()
	ch, err := s.svc.ChooseChannel(ctx)
	if err != nil {
		msg := "no partner channel is available"
		if outlast.ErrorCode(err) == outlast.EUNAVAILABLE {
			msg = outlast.ErrorMessage(err)
		}
		return "", outlast.Unavailable(err, outlast.ErrorRetryAfter(err), "%s", msg)
	}
	if !outlast.ValidID(ch) {
		return "", outlast.Unavailable(nil, 0, "no partner channel is available")
	}
	return ch, nil
}

// getPayout answers the admin or the owning client; others get the same
// 404 as for a missing payout.
func (s *Server) getPayout(w nethttp.ResponseWriter, r *nethttp.Request) {
	pr, err := s.authenticate(r.Context(), r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	id, err := pathID(r, "id", "payout")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	p, fresh, err := s.svc.Payouts.Payout(r.Context(), id)
	if outlast.ErrorCode(err) == outlast.ENOTFOUND || (err == nil && !pr.admin && p.ClientID != pr.client.ID) {
		err = notFound("payout", id)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeFreshness(w, fresh)
	writeJSON(w, nethttp.StatusOK, toPayoutJSON(p))
}

type payoutPage struct {
	Data       []payoutJSON `json:"data"`
	NextCursor string       `json:"next_cursor"`
}

// listPayouts answers a page of the caller's payouts, newest first. The
// admin names the client with client_id; a client always sees its own.
func (s *Server) listPayouts(w nethttp.ResponseWriter, r *nethttp.Request) {
	pr, err := s.authenticate(r.Context(), r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	f, err := payoutFilter(r.URL.Query(), pr)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ps, next, err := s.svc.Payouts.Payouts(r.Context(), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	page := payoutPage{Data: make([]payoutJSON, 0, len(ps)), NextCursor: next}
	for _, p := range ps {
		page.Data = append(page.Data, toPayoutJSON(p))
	}
	writeJSON(w, nethttp.StatusOK, page)
}

func payoutFilter(q url.Values, pr principal) (outlast.PayoutFilter, error) {
	f := outlast.PayoutFilter{
		AccountID: q.Get("account_id"),
		Status:    outlast.PayoutStatus(q.Get("status")),
		Cursor:    q.Get("cursor"),
	}
	clientID := q.Get("client_id")
	switch {
	case !pr.admin && clientID != "":
		return f, outlast.Errorf(outlast.EINVALID, "client_id is accepted only with the admin token")
	case !pr.admin:
		f.ClientID = pr.client.ID
	case !outlast.ValidID(clientID):
		return f, outlast.Errorf(outlast.EVALIDATION, "client_id is required with the admin token")
	default:
		f.ClientID = clientID
	}
	if f.AccountID != "" && !outlast.ValidID(f.AccountID) {
		return f, outlast.Errorf(outlast.EVALIDATION, "account_id must be %s", outlast.IDRule)
	}
	if f.Status != "" && !f.Status.Valid() {
		return f, outlast.Errorf(outlast.EVALIDATION, "status must be pending, dispatched, succeeded or failed")
	}
	if len(f.Cursor) > 4*outlast.IDBytesMax {
		return f, outlast.Errorf(outlast.EINVALID, "invalid cursor")
	}
	limit, err := queryLimit(q, outlast.PageLimitMax)
	f.Limit = limit
	return f, err
}

// queryLimit reads the limit query parameter: 0 if absent, else an
// integer from 1 to max.
func queryLimit(q url.Values, max int) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, outlast.Errorf(outlast.EINVALID, "limit must be an integer")
	}
	if n < 1 || n > max {
		return 0, outlast.Errorf(outlast.EVALIDATION, "limit must be between 1 and %d", max)
	}
	return n, nil
}
