package http

import (
	"context"
	"fmt"
	nethttp "net/http"
	"strconv"
	"strings"

	"github.com/outlast/outlast"
)

// Bounds of the console's exceptions page: it is for deciding, one
// exception at a time, not for browsing history (the API pages that).
const (
	consoleOpenExceptionsMax     = 200
	consoleResolvedExceptionsMax = 20
)

// resolveOption is one action of the console's resolve form.
type resolveOption struct {
	Value outlast.ResolveAction
	Label string
}

// resolveOptions are the resolve form's actions, the one that moves no
// money first so that an unconsidered submit moves none.
var resolveOptions = []resolveOption{
	{outlast.ResolveNoMoney, "no_money: nothing moves; any hold goes back to available"},
	{outlast.ResolveBookPaid, "book_paid: the bank's payment stands; book it as paid out"},
	{outlast.ResolveReversePaid, "reverse_paid: the bank did not pay; give it back to available"},
}

// resolveForm is what a refused resolve form held, shown again in that
// exception's form so the operator need not type the reason twice.
type resolveForm struct {
	ID                             int64
	Action, Amount, Payout, Reason string
}

// consoleExceptions lists the open exceptions, each with its resolve
// form, and the ones resolved last. ?resolved= names an exception just
// resolved, whose resolution the page then states (from the ledger,
// never from the query's text).
func (s *Server) consoleExceptions(w nethttp.ResponseWriter, r *nethttp.Request) {
	if !s.requireSession(w, r) {
		return
	}
	v := s.gatherExceptions(r.Context())
	if id, err := strconv.ParseInt(r.URL.Query().Get("resolved"), 10, 64); err == nil {
		v.Notice = s.resolvedNotice(r.Context(), id)
	}
	s.render(w, nethttp.StatusOK, "exceptions", v)
}

// gatherExceptions reads what the exceptions page shows within
// consoleReadTimeout; if it cannot, DBDown says why.
func (s *Server) gatherExceptions(ctx context.Context) *consoleView {
	v := &consoleView{Page: "exceptions", ResolveOptions: resolveOptions}
	if s.svc.Exceptions == nil {
		v.DBDown = outlast.ErrorMessage(errNoExceptions)
		return v
	}
	ctx, cancel := context.WithTimeout(ctx, consoleReadTimeout)
	defer cancel()
	var err error
	v.OpenExceptions, err = s.svc.Exceptions.Exceptions(ctx, outlast.ExceptionFilter{Open: true, Limit: consoleOpenExceptionsMax})
	if err == nil {
		v.ResolvedExceptions, err = s.svc.Exceptions.Exceptions(ctx, outlast.ExceptionFilter{Resolved: true, Limit: consoleResolvedExceptionsMax})
	}
	if err == nil {
		v.OpenCounts, err = s.svc.Exceptions.OpenExceptions(ctx)
	}
	if err != nil {
		v.DBDown = s.unreachable(err)
	}
	for _, n := range v.OpenCounts {
		v.OpenTotal += n
	}
	return v
}

// resolvedNotice states how exception id was resolved; "" if it cannot
// be read or is not resolved.
func (s *Server) resolvedNotice(ctx context.Context, id int64) string {
	if s.svc.Exceptions == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, consoleReadTimeout)
	defer cancel()
	e, err := s.svc.Exceptions.Exception(ctx, id)
	if err != nil || e.Open() {
		return ""
	}
	res := e.Resolution
	notice := fmt.Sprintf("Exception %d (%s, payout %s) is resolved as %s. Moved: %s.", e.ID, e.Kind, e.PayoutID, res.Action, outlast.DescribeMoves(res.Moves))
	if res.Advanced > 0 {
		notice += fmt.Sprintf(" Advanced to the account: %d %s (neither the hold nor available covered it).", res.Advanced, e.Currency)
	}
	if res.Payout != "" {
		notice += fmt.Sprintf(" Payout %s settled as %s.", e.PayoutID, res.Payout)
	}
	return notice
}

// consoleResolve resolves one exception from its form, as the API does
// with the console's operator as who decided.
func (s *Server) consoleResolve(w nethttp.ResponseWriter, r *nethttp.Request) {
	if !s.consoleForm(w, r, true) {
		return
	}
	form := resolveForm{Action: r.PostForm.Get("action"), Amount: strings.TrimSpace(r.PostForm.Get("amount")),
		Payout: r.PostForm.Get("payout"), Reason: r.PostForm.Get("reason")}
	id, err := exceptionID(r)
	if err == nil {
		form.ID = id
		err = s.resolveFromForm(r.Context(), form, "console: "+adminActor(r))
	}
	if err != nil {
		s.consoleResolveRefused(w, r, form, err)
		return
	}
	nethttp.Redirect(w, r, "/admin/exceptions?resolved="+strconv.FormatInt(id, 10), nethttp.StatusSeeOther)
}

// resolveFromForm reads the form's amount (empty: from the claim) and
// resolves.
func (s *Server) resolveFromForm(ctx context.Context, form resolveForm, by string) error {
	if s.svc.Exceptions == nil {
		return errNoExceptions
	}
	var amount int64
	if form.Amount != "" {
		var err error
		if amount, err = strconv.ParseInt(form.Amount, 10, 64); err != nil {
			return outlast.Errorf(outlast.EINVALID, "amount must be a whole number of minor units, or empty to take it from the claim")
		}
	}
	_, err := s.resolve(ctx, form.ID, &outlast.Resolution{Action: outlast.ResolveAction(form.Action), Amount: amount,
		Payout: outlast.PayoutStatus(form.Payout), Reason: form.Reason, By: by})
	return err
}

// consoleResolveRefused answers a resolution that did not take with the
// page as it is now, why, and the form as it was sent, under the status
// the API would give.
func (s *Server) consoleResolveRefused(w nethttp.ResponseWriter, r *nethttp.Request, form resolveForm, err error) {
	status := statusOf(outlast.ErrorCode(err))
	v := s.gatherExceptions(r.Context())
	v.ResolveForm = form
	v.Problem = fmt.Sprintf("Exception %s was not resolved; no money moved: %s", r.PathValue("id"), outlast.ErrorMessage(err))
	if status == nethttp.StatusInternalServerError || status == nethttp.StatusServiceUnavailable {
		// A failed commit may still have committed: say only what the
		// page below, read after it, can show.
		v.Problem = fmt.Sprintf("Exception %s could not be resolved now (%s). The lists below are as the ledger has it since: check it before trying again.",
			r.PathValue("id"), s.unreachable(err))
	}
	s.render(w, status, "exceptions", v)
}
