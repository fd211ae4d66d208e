package outlast

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// DeadLettersMax bounds one listing of dead letters and one replay.
const DeadLettersMax = 1000

// DeadLetter is a notification that could never be applied (principle 9):
// rejected until the ledger's bound, or a log message that could not be
// decoded. It waits, with its reason, until an operator mends the cause and
// replays it.
type DeadLetter struct {
	// ID says which store holds it and where: "<source>:<key>", the source
	// being the path that brought the notification ("log:42" is entry 42
	// of the log's dead-letter stream, "inbox:7" row 7 of the database's
	// dead letters). See DeadLetterID.
	ID string
	// Notification is nil when the log message could not be decoded; Raw
	// then holds (a bounded prefix of) its body, and it cannot be replayed.
	Notification *Notification
	Raw          []byte
	// Reason is why it was given up on.
	Reason string
	// Deliveries is how many times it had been handed to Apply.
	Deliveries int
	// At is when it was dead-lettered.
	At time.Time
}

// DeadLetters is a store of dead letters: the log's dead-letter stream and
// the database's table each implement it.
type DeadLetters interface {
	// DeadLetters lists up to limit dead letters, newest first. If limit
	// <= 0 or > DeadLettersMax, DeadLettersMax is used.
	DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error)
	// ReplayDeadLetters hands the notifications of the dead letters with
	// these ids (at most DeadLettersMax) back to the path they came by —
	// the log, or the database inbox — and returns how many it handed
	// back. There they are judged again through Apply like any other
	// delivery: rejected is not seen, so a notification applies once its
	// cause is mended (the payout exists now) and, if it is still
	// rejected, dead-letters again after the bound.
	//
	// A dead letter leaves this store only once its notification is
	// durably back in the log or the inbox: a failure part way leaves it
	// in both places, never in neither, and the copy is a duplicate the
	// ledger ignores by (channel, event id). An id that is no longer here
	// (replayed already) is skipped, so replaying again is safe.
	// EVALIDATION, and nothing is replayed, if an id is not one of this
	// store's or names a dead letter with no notification to replay.
	ReplayDeadLetters(ctx context.Context, ids []string) (int, error)
}

// DeadLetterID returns the id of the dead letter at key in source's store.
func DeadLetterID(source Source, key string) string { return string(source) + ":" + key }

// SplitDeadLetterID is DeadLetterID's inverse; ok is false for an id
// without a source or a key.
func SplitDeadLetterID(id string) (source Source, key string, ok bool) {
	s, k, ok := strings.Cut(id, ":")
	if !ok || s == "" || k == "" {
		return "", "", false
	}
	return Source(s), k, true
}

// DeadLetterKeys returns the keys of ids, for a store of source whose keys
// are positive integers (a stream sequence, a row id). EVALIDATION naming
// the first id that is not one of source's, or if there are more than
// DeadLettersMax.
func DeadLetterKeys(source Source, ids []string) ([]int64, error) {
	if len(ids) > DeadLettersMax {
		return nil, Errorf(EVALIDATION, "at most %d dead letters per replay", DeadLettersMax)
	}
	keys := make([]int64, len(ids))
	for i, id := range ids {
		s, key, ok := SplitDeadLetterID(id)
		n, err := strconv.ParseInt(key, 10, 64)
		if !ok || s != source || err != nil || n <= 0 {
			return nil, Errorf(EVALIDATION, "%q is not a dead letter of the %s (want %s)", id, source, DeadLetterID(source, "<number>"))
		}
		keys[i] = n
	}
	return keys, nil
}
