package partnersim

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/backoff"
)

// Request body limits.
const (
	submitBodyBytesMax = 64 << 10
	faultsBodyBytesMax = 4 << 10
)

// submitRequest is the body of POST /payouts.
type submitRequest struct {
	PayoutID    string `json:"payout_id"`
	Amount      int64  `json:"amount"`
	Currency    string `json:"currency"`
	Destination string `json:"destination"`
}

type submitResponse struct {
	PartnerRef string `json:"partner_ref"`
	Status     string `json:"status"`
}

type statusResponse struct {
	PayoutID   string `json:"payout_id"`
	PartnerRef string `json:"partner_ref"`
	Status     string `json:"status"`
	Reason     string `json:"reason,omitempty"`
}

type errorResponse struct {
	Error string `json:"error"`
}

func (b *Bank) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /payouts", b.handleSubmit)
	mux.HandleFunc("GET /payouts/{payout_id}", b.handleStatus)
	mux.HandleFunc("GET /records", b.handleRecords)
	mux.HandleFunc("GET /faults", b.handleGetFaults)
	mux.HandleFunc("PUT /faults", b.handlePutFaults)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return mux
}

// gate applies Faults.Down and Faults.Latency to a protocol call and
// reports whether to go on.
func (b *Bank) gate(w http.ResponseWriter, r *http.Request) bool {
	f := b.Faults()
	if f.Latency > 0 && !backoff.Sleep(r.Context(), f.Latency) {
		return false
	}
	if f.Down {
		writeUnavailable(w, "bank is down")
		return false
	}
	return true
}

func (b *Bank) handleSubmit(w http.ResponseWriter, r *http.Request) {
	if !b.gate(w, r) {
		return
	}
	var req submitRequest
	if err := decodeJSON(w, r, submitBodyBytesMax, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: "malformed request: " + err.Error()})
		return
	}
	status, body := b.submit(&req)
	if status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, body)
}

// submit decides POST /payouts. Repeats of a known payout id never change
// what the bank decided the first time.
func (b *Bank) submit(req *submitRequest) (int, any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.faults
	if p, ok := b.payouts[req.PayoutID]; ok {
		return b.repeatLocked(p, req, f)
	}
	if b.chance(f.ErrorRate) {
		return http.StatusServiceUnavailable, errorResponse{Error: "temporarily unavailable, nothing accepted"}
	}
	if !outlast.ValidID(req.PayoutID) {
		return http.StatusUnprocessableEntity, errorResponse{Error: "invalid payout_id"}
	}
	if len(b.payouts) >= b.cfg.PayoutsMax {
		return http.StatusServiceUnavailable, errorResponse{Error: "bank at capacity, nothing accepted"}
	}
	if reason := invalidReason(req); reason != "" {
		b.rejectLocked(req, reason)
		return http.StatusUnprocessableEntity, errorResponse{Error: reason}
	}
	if b.chance(f.RejectRate) {
		const reason = "destination account closed"
		b.rejectLocked(req, reason)
		return http.StatusUnprocessableEntity, errorResponse{Error: reason}
	}
	p := b.acceptLocked(req, f)
	if b.chance(f.AmbiguousRate) {
		return http.StatusGatewayTimeout, errorResponse{Error: "upstream timeout"}
	}
	return http.StatusAccepted, submitResponse{PartnerRef: p.ref, Status: bankAccepted}
}

func (b *Bank) repeatLocked(p *payout, req *submitRequest, f Faults) (int, any) {
	if p.amount != req.Amount || p.currency != req.Currency || p.destination != req.Destination {
		return http.StatusConflict, errorResponse{Error: "payout_id already used with a different amount, currency or destination"}
	}
	if b.chance(f.ErrorRate) {
		return http.StatusServiceUnavailable, errorResponse{Error: "temporarily unavailable"}
	}
	if p.status == bankRejected {
		return http.StatusUnprocessableEntity, errorResponse{Error: p.reason}
	}
	if b.chance(f.RefuseRepeatRate) {
		code := refusedRepeatCodes[b.stats.RefusedRepeats%int64(len(refusedRepeatCodes))]
		b.stats.RefusedRepeats++
		return code, errorResponse{Error: "refused: " + strings.ToLower(http.StatusText(code))}
	}
	if b.chance(f.AmbiguousRate) {
		return http.StatusGatewayTimeout, errorResponse{Error: "upstream timeout"}
	}
	return http.StatusAccepted, submitResponse{PartnerRef: p.ref, Status: bankAccepted}
}

// refusedRepeatCodes are what Faults.RefuseRepeatRate answers a repeat
// with: a protocol rejection (400, 422) or what a proxy in front of the
// bank might say (407, 413, 421, 431) — none of them proves the bank does
// not hold the payout.
var refusedRepeatCodes = []int{
	http.StatusBadRequest, http.StatusProxyAuthRequired, http.StatusRequestEntityTooLarge,
	http.StatusMisdirectedRequest, http.StatusUnprocessableEntity, http.StatusRequestHeaderFieldsTooLarge,
}

// invalidReason is the bank's own validation; "" means acceptable.
func invalidReason(req *submitRequest) string {
	switch {
	case req.Amount <= 0 || req.Amount > outlast.AmountMax:
		return "invalid amount"
	case !outlast.ValidCurrency(req.Currency):
		return "unsupported currency"
	case req.Destination == "" || len(req.Destination) > outlast.DestinationBytesMax:
		return "invalid destination"
	case strings.HasPrefix(req.Destination, "REJECT"):
		return "invalid destination"
	}
	return ""
}

// rejectLocked remembers a rejection so the same payout id is refused
// again: a bank that refused and later accepted would pay money the
// service already released.
func (b *Bank) rejectLocked(req *submitRequest, reason string) {
	b.payouts[req.PayoutID] = &payout{
		id: req.PayoutID, amount: req.Amount, currency: req.Currency,
		destination: req.Destination, status: bankRejected, reason: reason,
	}
	b.stats.Rejected++
}

func (b *Bank) acceptLocked(req *submitRequest, f Faults) *payout {
	now := b.now()
	p := &payout{
		id: req.PayoutID, ref: b.cfg.Name + "-" + outlast.NewID(), amount: req.Amount,
		currency: req.Currency, destination: req.Destination, status: bankAccepted,
		acceptedAt: now, settleAt: now.Add(b.cfg.PayDelay),
	}
	b.payouts[p.id] = p
	b.unsettled = append(b.unsettled, p.id)
	b.stats.Accepted++
	if !b.webhooksOn() {
		return p
	}
	p.reorder = b.chance(f.ReorderRate)
	if p.reorder {
		return p
	}
	if b.live+2 > b.cfg.WebhookQueueMax {
		b.stats.WebhooksSkipped++ // optional; the final webhook still comes
		return p
	}
	p.dispatched = b.newDeliveryLocked(p, bankDispatchedEvent, now, f)
	b.pushLocked(p.dispatched, now)
	return p
}

func (b *Bank) handleStatus(w http.ResponseWriter, r *http.Request) {
	if !b.gate(w, r) {
		return
	}
	id := r.PathValue("payout_id")
	b.mu.Lock()
	p, ok := b.payouts[id]
	var resp statusResponse
	if ok {
		resp = statusResponse{PayoutID: p.id, PartnerRef: p.ref, Status: p.status, Reason: p.reason}
	}
	b.mu.Unlock()
	if !ok || resp.Status == bankRejected {
		writeJSON(w, http.StatusNotFound, errorResponse{Error: "payout not found"})
		return
	}
	if resp.Status != bankFailed {
		resp.Reason = ""
	}
	writeJSON(w, http.StatusOK, resp)
}

func (b *Bank) handleRecords(w http.ResponseWriter, r *http.Request) {
	if !b.gate(w, r) {
		return
	}
	writeJSON(w, http.StatusOK, b.Records())
}

func (b *Bank) handleGetFaults(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, b.Faults())
}

func (b *Bank) handlePutFaults(w http.ResponseWriter, r *http.Request) {
	var f Faults
	if err := decodeJSON(w, r, faultsBodyBytesMax, &f); err != nil {
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: "malformed faults: " + err.Error()})
		return
	}
	if err := f.Validate(); err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, errorResponse{Error: err.Error()})
		return
	}
	b.SetFaults(f)
	b.log.Info("faults changed", "faults", f)
	writeJSON(w, http.StatusOK, b.Faults())
}

// decodeJSON reads one JSON value of at most maxBytes.
func decodeJSON(w http.ResponseWriter, r *http.Request, maxBytes int64, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBytes))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

func writeUnavailable(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusServiceUnavailable, errorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The status line is out; an encoding error here can only be a
	// client that went away.
	_ = json.NewEncoder(w).Encode(v)
}
