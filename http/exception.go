package http

import (
	"context"
	nethttp "net/http"
	"net/url"
	"strconv"

	"github.com/outlast/outlast"
)

// exceptionsLimitDefault is the page size of a listing without ?limit=.
const exceptionsLimitDefault = 100

// exceptionPage is GET /admin/v1/exceptions: a page of exceptions, newest
// first, and how many of each kind wait for a human overall, so one call
// answers both "what is this page" and "how much is left".
type exceptionPage struct {
	Exceptions []*outlast.Exception `json:"exceptions"`
	// NextBefore is the before= of the next page; absent on the last.
	NextBefore int64                         `json:"next_before,omitempty"`
	Open       map[outlast.ExceptionKind]int `json:"open"`
}

// resolvedJSON is what POST /admin/v1/exceptions/{id}/resolve answers:
// the exception with its resolution, and the account after the money
// moved (absent for an exception about a payout Outlast does not know).
type resolvedJSON struct {
	Exception *outlast.Exception `json:"exception"`
	Account   *accountJSON       `json:"account,omitempty"`
}

// listExceptions answers a page of exceptions: open ones unless ?status=
// says otherwise.
func (s *Server) listExceptions(w nethttp.ResponseWriter, r *nethttp.Request) {
	if err := s.requireExceptions(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	f, err := exceptionFilter(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	page, err := s.exceptionPage(r.Context(), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, nethttp.StatusOK, page)
}

// exceptionPage reads one page for f and the open counts. A full page
// names the next one even when nothing follows it: telling the two apart
// would cost a second query, and an empty last page is harmless.
func (s *Server) exceptionPage(ctx context.Context, f outlast.ExceptionFilter) (*exceptionPage, error) {
	es, err := s.svc.Exceptions.Exceptions(ctx, f)
	if err != nil {
		return nil, err
	}
	open, err := s.svc.Exceptions.OpenExceptions(ctx)
	if err != nil {
		return nil, err
	}
	page := &exceptionPage{Exceptions: make([]*outlast.Exception, 0, len(es)), Open: open}
	for _, e := range es {
		page.Exceptions = append(page.Exceptions, toExceptionJSON(e))
	}
	if len(es) > 0 && len(es) == f.Limit {
		page.NextBefore = es[len(es)-1].ID
	}
	return page, nil
}

// exceptionFilter reads the listing's query; a value it cannot use is
// refused rather than ignored, since an ignored filter lists more than
// the operator asked about.
func exceptionFilter(q url.Values) (outlast.ExceptionFilter, error) {
	f := outlast.ExceptionFilter{Kind: outlast.ExceptionKind(q.Get("kind")),
		PayoutID: q.Get("payout_id"), AccountID: q.Get("account_id")}
	switch q.Get("status") {
	case "", "open":
		f.Open = true
	case "resolved":
		f.Resolved = true
	case "all":
	default:
		return f, outlast.Errorf(outlast.EINVALID, "status must be open, resolved or all; %q is not", q.Get("status"))
	}
	switch {
	case f.Kind != "" && !f.Kind.Valid():
		return f, outlast.Errorf(outlast.EINVALID, "kind %q is not one of %v", f.Kind, outlast.ExceptionKinds)
	case f.PayoutID != "" && !outlast.ValidID(f.PayoutID):
		return f, outlast.Errorf(outlast.EINVALID, "payout_id must be %s", outlast.IDRule)
	case f.AccountID != "" && !outlast.ValidID(f.AccountID):
		return f, outlast.Errorf(outlast.EINVALID, "account_id must be %s", outlast.IDRule)
	}
	if v := q.Get("before"); v != "" {
		before, err := strconv.ParseInt(v, 10, 64)
		if err != nil || before < 1 {
			return f, outlast.Errorf(outlast.EINVALID, "before must be an exception id (a positive integer), as next_before gives it")
		}
		f.Before = before
	}
	limit, err := queryLimit(q, outlast.ExceptionsMax)
	if limit == 0 {
		limit = exceptionsLimitDefault
	}
	f.Limit = limit
	return f, err
}

// getException answers one exception with its evidence and resolution.
func (s *Server) getException(w nethttp.ResponseWriter, r *nethttp.Request) {
	id, err := s.exceptionRoute(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	e, err := s.svc.Exceptions.Exception(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, nethttp.StatusOK, toExceptionJSON(e))
}

// resolveException records an operator's decision about an exception and
// moves its money by journal rows; the ledger refuses a second decision
// (409), so a retried request cannot move the money twice.
func (s *Server) resolveException(w nethttp.ResponseWriter, r *nethttp.Request) {
	id, err := s.exceptionRoute(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var in struct {
		Action outlast.ResolveAction `json:"action"`
		Amount int64                 `json:"amount"`
		Payout outlast.PayoutStatus  `json:"payout"`
		Reason string                `json:"reason"`
	}
	if err := s.decodeBody(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	out, err := s.resolve(r.Context(), id, &outlast.Resolution{Action: in.Action, Amount: in.Amount, Payout: in.Payout,
		Reason: in.Reason, By: adminActor(r)})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, nethttp.StatusOK, out)
}

// resolve resolves exception id as res says and logs the decision: it
// is one about money, and the log is where an operator looks first. The
// API and the console both resolve through it.
func (s *Server) resolve(ctx context.Context, id int64, res *outlast.Resolution) (*resolvedJSON, error) {
	if err := res.Validate(); err != nil {
		return nil, err
	}
	e, a, err := s.svc.Exceptions.ResolveException(ctx, id, res)
	if err != nil {
		return nil, err
	}
	got := e.Resolution
	s.log.Info("exception resolved", "id", e.ID, "kind", e.Kind, "payout", e.PayoutID, "action", got.Action,
		"amount", got.Amount, "advanced", got.Advanced, "by", got.By, "reason", got.Reason)
	out := &resolvedJSON{Exception: toExceptionJSON(e)}
	if a != nil {
		aj := toAccountJSON(a)
		out.Account = &aj
	}
	return out, nil
}

// requireExceptions checks the admin token and that this server keeps
// exceptions.
func (s *Server) requireExceptions(r *nethttp.Request) error {
	if err := s.requireAdmin(r); err != nil {
		return err
	}
	if s.svc.Exceptions == nil {
		return errNoExceptions
	}
	return nil
}

var errNoExceptions = outlast.Errorf(outlast.ENOTFOUND, "this server keeps no exceptions")

// exceptionRoute admits a request to /admin/v1/exceptions/{id}... and
// reads its {id}.
func (s *Server) exceptionRoute(r *nethttp.Request) (int64, error) {
	if err := s.requireExceptions(r); err != nil {
		return 0, err
	}
	return exceptionID(r)
}

// exceptionID reads the {id} of an exception's route, API or console;
// one that is not an id names no exception (404).
func exceptionID(r *nethttp.Request) (int64, error) {
	v := r.PathValue("id")
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id < 1 {
		return 0, notFound("exception", v)
	}
	return id, nil
}

// toExceptionJSON is e as the API shows it: times in UTC and lists as
// [] rather than null, so clients need not tell "none" from "absent".
func toExceptionJSON(e *outlast.Exception) *outlast.Exception {
	out := *e
	out.OpenedAt = e.OpenedAt.UTC()
	out.Evidence = make([]outlast.Evidence, len(e.Evidence))
	for i, ev := range e.Evidence {
		ev.At = ev.At.UTC()
		out.Evidence[i] = ev
	}
	if e.Resolution != nil {
		res := *e.Resolution
		res.At = res.At.UTC()
		if res.Moves == nil {
			res.Moves = []outlast.Move{}
		}
		out.Resolution = &res
	}
	return &out
}
