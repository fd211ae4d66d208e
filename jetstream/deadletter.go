package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outlast/outlast"
)

const (
	// rawBytesMax bounds the undecodable body kept in a dead letter.
	rawBytesMax = 256 << 10
	// reasonHeaderBytesMax bounds the reason copied into a header for
	// operators browsing the stream; the body holds it whole.
	reasonHeaderBytesMax = 512
)

var _ outlast.DeadLetters = (*Log)(nil)

// deadLetter is a notification the committer gave up on, as the body of an
// entry in the dead-letter stream.
type deadLetter struct {
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
		dl := deadLetter{
			Notification: n, Reason: reasons[j], Deliveries: it.deliveries,
			SourceSeq: it.seq, Index: i, At: time.Now().UTC(),
		}
		if err := l.publishDead(ctx, it, subjectToken(n.Channel), &dl); err != nil {
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
	dl := deadLetter{
		Raw: raw, Reason: "undecodable: " + reason, Deliveries: it.deliveries,
		SourceSeq: it.seq, At: time.Now().UTC(),
	}
	return l.publishDead(ctx, it, "_undecodable", &dl)
}

func (l *Log) publishDead(ctx context.Context, it *item, token string, dl *deadLetter) error {
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
	// The id names the source message so dead-lettering it again after a
	// lost ack stores it once. Its publish time is part of it: sequences
	// start again at 1 when the stream is recreated, and a new message
	// with an old one's sequence must not be taken for a repeat.
	id := fmt.Sprintf("%s:%d:%d:%d", l.streamName, dl.SourceSeq, it.published.UnixNano(), dl.Index)
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

// DeadLetters lists up to limit of the most recent dead letters, newest
// first; see outlast.DeadLetters. Their ids are "log:<sequence in the
// dead-letter stream>".
func (l *Log) DeadLetters(ctx context.Context, limit int) ([]outlast.DeadLetter, error) {
	entries, err := l.deadEntries(ctx, limit)
	if err != nil {
		return nil, err
	}
	out := make([]outlast.DeadLetter, len(entries))
	for i, e := range entries {
		out[i] = outlast.DeadLetter{
			ID:           outlast.DeadLetterID(outlast.FromLog, strconv.FormatUint(e.Seq, 10)),
			Notification: e.Notification, Raw: e.Raw, Reason: e.Reason,
			Deliveries: int(min(e.Deliveries, 1<<30)), At: e.At,
		}
	}
	return out, nil
}

// deadEntries returns up to limit of the most recent dead-letter entries,
// newest first.
func (l *Log) deadEntries(ctx context.Context, limit int) ([]deadLetter, error) {
	if limit <= 0 || limit > outlast.DeadLettersMax {
		limit = outlast.DeadLettersMax
	}
	info, err := l.deadInfo(ctx)
	if err != nil {
		return nil, outlast.Unavailable(err, retryAfter, "notification log unavailable")
	}
	// Replayed entries are deleted and leave gaps; skipping the known
	// ones keeps the reads to about limit however many were replayed.
	deleted := make(map[uint64]bool, len(info.State.Deleted))
	for _, seq := range info.State.Deleted {
		deleted[seq] = true
	}
	var out []deadLetter
	for seq := info.State.LastSeq; seq >= info.State.FirstSeq && seq > 0 && len(out) < limit; seq-- {
		if deleted[seq] {
			continue
		}
		dl, err := l.deadEntry(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *dl)
	}
	return out, nil
}

func (l *Log) deadInfo(ctx context.Context) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.AckTimeout)
	defer cancel()
	return l.dead.Info(ctx, jetstream.WithDeletedDetails(true))
}

func (l *Log) deleteDead(ctx context.Context, seq uint64) error {
	if l.cfg.beforeDeleteDead != nil {
		if err := l.cfg.beforeDeleteDead(); err != nil {
			return err
		}
	}
	return l.dead.DeleteMsg(ctx, seq)
}

// deadEntry reads the dead-letter entry at seq; jetstream.ErrMsgNotFound if
// there is none (any more).
func (l *Log) deadEntry(ctx context.Context, seq uint64) (*deadLetter, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.AckTimeout)
	defer cancel()
	raw, err := l.dead.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, outlast.Unavailable(err, retryAfter, "notification log unavailable")
	}
	var dl deadLetter
	if err := json.Unmarshal(raw.Data, &dl); err != nil {
		// Not one of ours (published by hand?): still listed, so an
		// operator sees it, but with nothing to replay.
		dl = deadLetter{Raw: raw.Data[:min(len(raw.Data), rawBytesMax)], Reason: "undecodable dead-letter entry: " + err.Error(), At: raw.Time}
	}
	dl.Seq = raw.Sequence
	return &dl, nil
}

// ReplayDeadLetters appends the notifications of the dead letters with
// these ids to the log again, then deletes their entries from the
// dead-letter stream: in that order, so a failure between the two leaves a
// duplicate, which the ledger ignores, never a loss; see
// outlast.DeadLetters. Each is a new message, so it gets a fresh delivery
// count. An undecodable entry has no notification and is refused.
func (l *Log) ReplayDeadLetters(ctx context.Context, ids []string) (int, error) {
	seqs, err := outlast.DeadLetterKeys(outlast.FromLog, ids)
	if err != nil || len(seqs) == 0 {
		return 0, err
	}
	entries, err := l.replayable(ctx, seqs)
	if err != nil {
		return 0, err
	}
	var replayed atomic.Int64
	errs := make([]error, len(entries))
	// As many in flight as one appended message holds: group commit then
	// stores them in a few fsyncs, not one each.
	sem := make(chan struct{}, l.cfg.BatchMax)
	var wg sync.WaitGroup
	for i, dl := range entries {
		sem <- struct{}{} // each replay ends within about 2 × AckTimeout
		wg.Go(func() {
			defer func() { <-sem }()
			if errs[i] = l.replay(ctx, dl); errs[i] == nil {
				replayed.Add(1)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return int(replayed.Load()), err
		}
	}
	return int(replayed.Load()), nil
}

// replayable reads the entries at seqs, once each, skipping those that are
// gone (replayed already). Before anything is replayed it refuses, with
// EVALIDATION naming them all, entries with no valid notification.
func (l *Log) replayable(ctx context.Context, seqs []int64) ([]*deadLetter, error) {
	var out []*deadLetter
	var refused []string
	seen := make(map[int64]bool, len(seqs))
	for _, seq := range seqs {
		if seen[seq] {
			continue
		}
		seen[seq] = true
		dl, err := l.deadEntry(ctx, uint64(seq))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			continue
		case err != nil:
			return nil, err
		case dl.Notification == nil:
			refused = append(refused, fmt.Sprintf("log:%d (undecodable: there is no notification to replay)", seq))
		default:
			if err := dl.Notification.Validate(); err != nil {
				refused = append(refused, fmt.Sprintf("log:%d (%s)", seq, outlast.ErrorMessage(err)))
				continue
			}
			out = append(out, dl)
		}
	}
	if len(refused) > 0 {
		return nil, outlast.Errorf(outlast.EVALIDATION, "cannot replay %s; no dead letter of the log was replayed", strings.Join(refused, ", "))
	}
	return out, nil
}

// replay appends dl's notification and, once it is durable, deletes dl.
func (l *Log) replay(ctx context.Context, dl *deadLetter) error {
	n := *dl.Notification
	n.Deliveries = 0
	if err := l.Append(ctx, &n); err != nil {
		return err
	}
	// The notification is in the log again: finish the delete even if the
	// caller gave up, or the entry stays behind as a duplicate to replay.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.AckTimeout)
	defer cancel()
	err := l.deleteDead(ctx, dl.Seq)
	if err == nil {
		return nil
	}
	// A concurrent replay may have deleted it first: gone is what we want.
	if _, gerr := l.dead.GetMsg(ctx, dl.Seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return outlast.Unavailable(fmt.Errorf("delete dead letter %d: %w", dl.Seq, err), retryAfter, "notification log unavailable")
}
