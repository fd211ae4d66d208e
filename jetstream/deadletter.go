package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outlast/outlast"
)

const (
	// deadLettersMax bounds one DeadLetters call.
	deadLettersMax = 1000
	// rawBytesMax bounds the undecodable body kept in a dead letter.
	rawBytesMax = 256 << 10
	// reasonHeaderBytesMax bounds the reason copied into a header for
	// operators browsing the stream; the body holds it whole.
	reasonHeaderBytesMax = 512
)

// DeadLetter is a notification the committer gave up on.
type DeadLetter struct {
	// Seq is the entry's sequence in the dead-letter stream.
	Seq uint64 `json:"-"`
	// Notification is nil when the batch message could not be decoded;
	// Raw then holds (up to 256 KiB of) its body.
	Notification *outlast.Notification `json:"notification,omitempty"`
	Raw          []byte                `json:"raw,omitempty"`
	// Reason is why: "rejected: <apply's reason>", "apply failed: <error>"
	// or "undecodable: <error>".
	Reason string `json:"reason"`
	// Deliveries is how many times the batch message had been delivered.
	Deliveries uint64 `json:"deliveries"`
	// SourceSeq and Index locate the notification in the notifications
	// stream: the batch message's sequence and its position in it.
	SourceSeq uint64 `json:"source_seq"`
	Index     int    `json:"index"`
	// At is when it was dead-lettered.
	At time.Time `json:"at"`
}

// deadLetter publishes the notifications of it at idx, with their reasons.
// Each has a message id derived from its source position, so dead-lettering
// the same message again (a lost ack) stores it once.
func (l *Log) deadLetter(ctx context.Context, it *item, idx []int, reasons []string) error {
	for j, i := range idx {
		n := it.ns[i]
		dl := DeadLetter{
			Notification: n, Reason: reasons[j], Deliveries: it.deliveries,
			SourceSeq: it.seq, Index: i, At: time.Now().UTC(),
		}
		if err := l.publishDead(ctx, subjectToken(n.Channel), &dl); err != nil {
			return err
		}
		l.log.Warn("notification dead-lettered", "channel", n.Channel, "event_id", n.EventID,
			"payout_id", n.PayoutID, "reason", dl.Reason, "deliveries", dl.Deliveries)
	}
	return nil
}

// deadLetterRaw publishes a batch message that could not be decoded.
func (l *Log) deadLetterRaw(ctx context.Context, it *item, reason string) error {
	raw := it.msg.Data()
	if len(raw) > rawBytesMax {
		raw = raw[:rawBytesMax]
	}
	dl := DeadLetter{
		Raw: raw, Reason: "undecodable: " + reason, Deliveries: it.deliveries,
		SourceSeq: it.seq, At: time.Now().UTC(),
	}
	return l.publishDead(ctx, "_undecodable", &dl)
}

func (l *Log) publishDead(ctx context.Context, token string, dl *DeadLetter) error {
	body, err := json.Marshal(dl)
	if err != nil {
		return fmt.Errorf("encode dead letter: %w", err)
	}
	msg := nats.NewMsg(l.subjectBase + ".dead." + token)
	msg.Data = body
	msg.Header.Set("Outlast-Reason", headerValue(dl.Reason))
	msg.Header.Set("Outlast-Deliveries", strconv.FormatUint(dl.Deliveries, 10))
	msg.Header.Set("Outlast-Source-Seq", strconv.FormatUint(dl.SourceSeq, 10))
	// Dead-lettering must finish even while Consume is being stopped:
	// otherwise the message is redelivered and judged all over again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.AckTimeout)
	defer cancel()
	id := fmt.Sprintf("%s:%d:%d", l.streamName, dl.SourceSeq, dl.Index)
	if _, err := l.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(l.deadName)); err != nil {
		return fmt.Errorf("publish dead letter: %w", err)
	}
	deadLettersTotal.Inc()
	l.stats.deadLetters.Add(1)
	return nil
}

// headerValue makes s safe for a NATS header: one line, bounded.
func headerValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
	if len(s) > reasonHeaderBytesMax {
		s = s[:reasonHeaderBytesMax]
	}
	return s
}

// DeadLetters returns up to limit of the most recent dead letters, oldest
// first. If limit <= 0, 100 is used; at most 1000 are returned.
func (l *Log) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, deadLettersMax)
	info, err := l.dead.Info(ctx)
	if err != nil {
		return nil, outlast.Unavailable(err, retryAfter, "notification log unavailable")
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	var out []DeadLetter
	// Deleted entries leave gaps; bound the scan so a sparse stream cannot
	// turn one call into an unbounded walk.
	for seq, tries := last, 0; seq >= first && seq > 0 && len(out) < limit && tries < 4*limit; seq, tries = seq-1, tries+1 {
		raw, err := l.dead.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, outlast.Unavailable(err, retryAfter, "notification log unavailable")
		}
		var dl DeadLetter
		if err := json.Unmarshal(raw.Data, &dl); err != nil {
			return nil, fmt.Errorf("jetstream: decode dead letter %d: %w", seq, err)
		}
		dl.Seq = raw.Sequence
		out = append(out, dl)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}
