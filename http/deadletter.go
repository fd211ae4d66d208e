package http

import (
	"context"
	"fmt"
	nethttp "net/http"
	"slices"
	"strings"
	"time"

	"github.com/outlast/outlast"
)

// deadLettersLimitDefault is the page size of a listing without ?limit=.
const deadLettersLimitDefault = 100

// rawPreviewBytesMax bounds the body of an undecodable message shown in a
// listing; the whole (up to 256 KiB) stays in the dead-letter stream.
const rawPreviewBytesMax = 1024

// deadLetterJSON is a dead letter as the admin API shows it.
type deadLetterJSON struct {
	ID     string `json:"id"`
	Source string `json:"source"`
	// Notification is absent for a log message that could not be decoded;
	// Raw then holds the start of its body as text (rawPreviewBytesMax:
	// a listing of a thousand entries stays small).
	Notification *deadNotificationJSON `json:"notification,omitempty"`
	Raw          string                `json:"raw,omitempty"`
	Reason       string                `json:"reason"`
	Deliveries   int                   `json:"deliveries"`
	At           time.Time             `json:"at"`
}

type deadNotificationJSON struct {
	Channel    string               `json:"channel"`
	EventID    string               `json:"event_id"`
	PayoutID   string               `json:"payout_id"`
	PartnerRef string               `json:"partner_ref"`
	Status     outlast.PayoutStatus `json:"status"`
	Reason     string               `json:"reason,omitempty"`
	OccurredAt time.Time            `json:"occurred_at"`
	ReceivedAt time.Time            `json:"received_at"`
}

func toDeadLetterJSON(d outlast.DeadLetter) deadLetterJSON {
	source, _, _ := outlast.SplitDeadLetterID(d.ID)
	raw := d.Raw
	if len(raw) > rawPreviewBytesMax {
		raw = raw[:rawPreviewBytesMax]
	}
	out := deadLetterJSON{ID: d.ID, Source: string(source), Raw: outlast.CleanText(string(raw), rawPreviewBytesMax), Reason: d.Reason,
		Deliveries: d.Deliveries, At: d.At.UTC()}
	if n := d.Notification; n != nil {
		out.Notification = &deadNotificationJSON{Channel: n.Channel, EventID: n.EventID, PayoutID: n.PayoutID,
			PartnerRef: n.PartnerRef, Status: n.Status, Reason: n.Reason,
			OccurredAt: n.OccurredAt.UTC(), ReceivedAt: n.ReceivedAt.UTC()}
	}
	return out
}

// deadLetterPage is the listing: the newest dead letters of every source,
// and the sources that could not be read (their entries are missing).
type deadLetterPage struct {
	DeadLetters []deadLetterJSON `json:"dead_letters"`
	Unavailable []string         `json:"unavailable"`
}

// listDeadLetters answers the newest dead letters of every source. A
// source that is down does not hide the others: it is named in
// unavailable; only when every source is down is the answer a 503.
func (s *Server) listDeadLetters(w nethttp.ResponseWriter, r *nethttp.Request) {
	if err := s.requireAdmin(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	limit, err := queryLimit(r.URL.Query(), outlast.DeadLettersMax)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if limit == 0 {
		limit = deadLettersLimitDefault
	}
	page, err := s.gatherDeadLetters(r.Context(), limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, nethttp.StatusOK, page)
}

func (s *Server) gatherDeadLetters(ctx context.Context, limit int) (deadLetterPage, error) {
	page := deadLetterPage{DeadLetters: []deadLetterJSON{}, Unavailable: []string{}}
	var all []outlast.DeadLetter
	var unavailable error
	for _, source := range s.deadSources {
		dls, err := s.svc.DeadLetters[source].DeadLetters(ctx, limit)
		switch {
		case outlast.ErrorCode(err) == outlast.EUNAVAILABLE:
			s.log.Warn("dead letters unavailable", "source", source, "err", err)
			page.Unavailable = append(page.Unavailable, string(source))
			unavailable = err
		case err != nil:
			return page, err
		default:
			all = append(all, dls...)
		}
	}
	if len(s.deadSources) > 0 && len(page.Unavailable) == len(s.deadSources) {
		return page, unavailable
	}
	slices.SortStableFunc(all, func(a, b outlast.DeadLetter) int { return b.At.Compare(a.At) })
	for _, d := range all[:min(limit, len(all))] {
		page.DeadLetters = append(page.DeadLetters, toDeadLetterJSON(d))
	}
	return page, nil
}

// replayDeadLetters hands the named dead letters back to the path they
// came by, each through its own source. Retrying is safe: a dead letter
// replayed already is no longer there and is skipped.
func (s *Server) replayDeadLetters(w nethttp.ResponseWriter, r *nethttp.Request) {
	if err := s.requireAdmin(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	var in struct {
		IDs []string `json:"ids"`
	}
	if err := s.decodeBody(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	bySource, err := s.groupDeadLetterIDs(in.IDs)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	replayed := 0
	for _, source := range s.deadSources {
		if len(bySource[source]) == 0 {
			continue
		}
		n, err := s.svc.DeadLetters[source].ReplayDeadLetters(r.Context(), bySource[source])
		if err != nil {
			s.writeError(w, r, partlyReplayed(err, replayed))
			return
		}
		replayed += n
	}
	writeJSON(w, nethttp.StatusOK, struct {
		Replayed int `json:"replayed"`
	}{replayed})
}

// groupDeadLetterIDs checks ids (1 to DeadLettersMax, each of a configured
// source) and groups them by source, once each.
func (s *Server) groupDeadLetterIDs(ids []string) (map[outlast.Source][]string, error) {
	if len(ids) == 0 || len(ids) > outlast.DeadLettersMax {
		return nil, outlast.Errorf(outlast.EVALIDATION, "ids must hold 1 to %d dead letter ids", outlast.DeadLettersMax)
	}
	bySource := make(map[outlast.Source][]string)
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		source, _, ok := outlast.SplitDeadLetterID(id)
		if !ok || len(id) > outlast.IDBytesMax {
			return nil, outlast.Errorf(outlast.EVALIDATION, "%q is not a dead letter id (want <source>:<key>, as listed)", id)
		}
		if s.svc.DeadLetters[source] == nil {
			return nil, outlast.Errorf(outlast.EVALIDATION, "%q: there are no dead letters of %q here (sources: %s)", id, source, s.sourceNames())
		}
		if !seen[id] {
			seen[id] = true
			bySource[source] = append(bySource[source], id)
		}
	}
	return bySource, nil
}

// partlyReplayed adds to err's message how many dead letters other
// sources had replayed before it: the caller should know they moved.
func partlyReplayed(err error, replayed int) error {
	if replayed == 0 {
		return err
	}
	return &outlast.Error{Code: outlast.ErrorCode(err), RetryAfter: outlast.ErrorRetryAfter(err), Err: err,
		Message: fmt.Sprintf("%s (other sources had replayed %d before it)", outlast.ErrorMessage(err), replayed)}
}

func (s *Server) sourceNames() string {
	if len(s.deadSources) == 0 {
		return "none"
	}
	names := make([]string, len(s.deadSources))
	for i, source := range s.deadSources {
		names[i] = string(source)
	}
	return strings.Join(names, ", ")
}
