package http

import (
	"context"
	"errors"
	nethttp "net/http"
	"time"

	"github.com/outlast/outlast"
)

// notificationJSON is the webhook body; the channel comes from the path,
// which the signature's secret already ties to the partner.
type notificationJSON struct {
	EventID    string               `json:"event_id"`
	PayoutID   string               `json:"payout_id"`
	PartnerRef string               `json:"partner_ref"`
	Status     outlast.PayoutStatus `json:"status"`
	Reason     string               `json:"reason"`
	OccurredAt time.Time            `json:"occurred_at"`
}

// notify takes a partner's webhook. 200 means the notification is durable
// (in the log, or in the database inbox when the log is down); nothing is
// applied here — the committer does that, once per (channel, event id), so
// a partner retrying a delivered webhook is harmless and gets 200 again.
func (s *Server) notify(w nethttp.ResponseWriter, r *nethttp.Request) {
	n, err := s.readNotification(w, r)
	if err != nil {
		if outlast.ErrorCode(err) == outlast.EUNAUTHORIZED {
			webhookRejectedTotal.WithLabelValues(n.Channel).Inc()
			w.Header().Set("WWW-Authenticate", `Outlast-Signature realm="partner-webhooks"`)
		}
		s.writeError(w, r, err)
		return
	}
	if err := s.persist(r.Context(), n); err != nil {
		webhookUnavailableTotal.WithLabelValues(n.Channel).Inc()
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, nethttp.StatusOK, struct {
		Status string `json:"status"`
	}{"accepted"})
}

// readNotification authenticates the body before parsing it, so nothing
// from an unsigned request ever reaches the JSON decoder. The returned
// notification always carries the (known) channel, even with an error.
func (s *Server) readNotification(w nethttp.ResponseWriter, r *nethttp.Request) (*outlast.Notification, error) {
	channel := r.PathValue("channel")
	secret, ok := s.cfg.ChannelSecrets[channel]
	if !ok {
		return &outlast.Notification{Channel: routeOther}, notFound("channel", channel)
	}
	n := &outlast.Notification{Channel: channel}
	body, err := s.readBody(w, r)
	if err != nil {
		return n, err
	}
	now := s.now()
	err = outlast.VerifySignature(secret, r.Header.Get(outlast.HeaderTimestamp), r.Header.Get(outlast.HeaderSignature), body, now)
	if err != nil {
		return n, err
	}
	var in notificationJSON
	if err := decodeStrict(body, &in); err != nil {
		return n, err
	}
	n.EventID, n.PayoutID, n.PartnerRef = in.EventID, in.PayoutID, in.PartnerRef
	n.Status, n.Reason = in.Status, in.Reason
	n.OccurredAt, n.ReceivedAt = in.OccurredAt.UTC(), now.UTC()
	if err := n.Validate(); err != nil {
		return n, err
	}
	// The reason is the partner's words: a stray newline is no cause to
	// refuse the news that a payout failed, so it is cleaned, not refused,
	// and the log holds it as every ledger will store it.
	n.Reason = outlast.CleanText(n.Reason, outlast.ReasonBytesMax)
	return n, nil
}

// persist makes n durable: the log first; if it is absent or fails for any
// reason, the database inbox. Only when both fail is the partner asked to
// retry. Each gets a share of WriteTimeout, so a hung log still leaves time
// for the inbox and for writing the answer.
func (s *Server) persist(ctx context.Context, n *outlast.Notification) error {
	logErr := errors.New("no notification log configured")
	if s.svc.Log != nil {
		logErr = s.appendLog(ctx, n)
		if logErr == nil {
			return nil
		}
		s.log.Warn("notification log unavailable; writing to the database inbox",
			"channel", n.Channel, "event_id", n.EventID, "err", logErr)
	}
	webhookFallbackTotal.WithLabelValues(n.Channel).Inc()
	inboxCtx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout/2)
	defer cancel()
	inboxErr := s.svc.Inbox.AppendInbox(inboxCtx, []*outlast.Notification{n})
	if inboxErr == nil {
		return nil
	}
	retryAfter := max(outlast.ErrorRetryAfter(logErr), outlast.ErrorRetryAfter(inboxErr))
	return outlast.Unavailable(errors.Join(logErr, inboxErr), retryAfter,
		"notification could not be stored; retry later")
}

func (s *Server) appendLog(ctx context.Context, n *outlast.Notification) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LogAppendTimeout)
	defer cancel()
	return s.svc.Log.Append(ctx, n)
}
