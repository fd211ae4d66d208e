package ledgertest_test

import (
	"testing"
	"time"

	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
)

// TestMemory runs the conformance suite on the in-memory ledger the other
// packages' tests use.
func TestMemory(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T) *ledgertest.Harness {
		m := ledgertest.NewMemory()
		clock := testenv.NewClock(time.Now().UTC())
		m.Now = clock.Now
		return &ledgertest.Harness{Ledger: m, Clock: clock, Control: m,
			SetNewID: func(newID func() string) { m.NewID = newID }}
	})
}
