// Package outlast is the domain of the Outlast payout service: accounts,
// payouts and their state machine, the journal, partner notifications, error
// codes and the interfaces the adapters (store, jetstream, channel, http)
// implement. It imports only the standard library; a test keeps it that way.
//
// Money is always int64 minor units of an ISO 4217 currency. A payout moves
// money between an account's buckets (available → held → paid_out, or back to
// available when it fails); every move is a pair of journal rows that sum to
// zero, so balances can always be recomputed from the journal.
package outlast

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"
)

// Limits that are part of the contract; adapters validate against them.
const (
	// IDBytesMax bounds every identifier: account, client, payout, event ids,
	// idempotency keys, partner refs and channel names.
	IDBytesMax = 128
	// DestinationBytesMax bounds a payout's destination (an account number,
	// IBAN or similar opaque string).
	DestinationBytesMax = 256
	// AmountMax bounds a single amount in minor units, so that sums over many
	// payouts stay far from int64 overflow.
	AmountMax = int64(1) << 50
	// IDRule says what ValidID accepts, for the messages that refuse an id.
	IDRule = "1-128 characters of [A-Za-z0-9._:-], not only dots"
)

// NewID returns a time-ordered UUIDv7 string (RFC 9562): 48 bits of unix
// milliseconds, a 12-bit counter, then random bits. The counter (RFC 9562
// §6.2 method 1) keeps ids strictly increasing within one process even for
// several ids in the same millisecond, so pages of payouts ordered by id are
// in creation order; time order keeps index inserts appending.
func NewID() string {
	ms, seq := idClock.next(time.Now().UnixMilli())
	return newUUIDv7(ms, seq)
}

// idClock hands out (millisecond, counter) pairs that always increase.
var idClock monotonic

type monotonic struct {
	mu     sync.Mutex // guards ms, seq
	ms     int64
	seq    uint16 // 12 bits used
	seeded bool
}

// next returns a pair greater than the last one. A new millisecond starts
// the counter at a random value in its lower half, leaving room to count
// up; a counter that runs out borrows the next millisecond.
func (m *monotonic) next(nowMs int64) (int64, uint16) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.seeded || nowMs > m.ms {
		var b [2]byte
		_, _ = rand.Read(b[:])
		m.ms, m.seq, m.seeded = nowMs, (uint16(b[0])<<8|uint16(b[1]))&0x7ff, true
		return m.ms, m.seq
	}
	m.seq++
	if m.seq > 0xfff {
		m.ms, m.seq = m.ms+1, 0
	}
	return m.ms, m.seq
}

func newUUIDv7(ms int64, seq uint16) string {
	var b [16]byte
	if _, err := rand.Read(b[8:]); err != nil {
		// crypto/rand never fails on supported platforms (Go 1.24+ panics
		// inside Read itself); keep the branch for older toolchains.
		panic(err)
	}
	b[0] = byte(ms >> 40)
	b[1] = byte(ms >> 32)
	b[2] = byte(ms >> 24)
	b[3] = byte(ms >> 16)
	b[4] = byte(ms >> 8)
	b[5] = byte(ms)
	b[6] = 0x70 | byte(seq>>8)&0x0f // version 7, counter high bits
	b[7] = byte(seq)
	b[8] = 0x80 | (b[8] & 0x3f) // variant 10
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// validID reports whether s is a usable identifier: 1..IDBytesMax bytes of
// printable ASCII without spaces or path separators, so ids are safe in URLs,
// log lines and NATS subjects. An id is not only dots: "." and ".." are
// path segments, so /v1/accounts/.. names another resource, and an
// account made with such an id could never be read or funded. Refusing
// every all-dot id keeps the rule one sentence.
func validID(s string) bool {
	if len(s) == 0 || len(s) > IDBytesMax {
		return false
	}
	dots := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.':
			dots++
		case c == '-' || c == '_' || c == ':':
		default:
			return false
		}
	}
	return dots < len(s)
}

// ValidID reports whether s is a valid identifier (see IDRule).
func ValidID(s string) bool { return validID(s) }
