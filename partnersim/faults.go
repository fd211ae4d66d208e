package partnersim

import (
	"encoding/json"
	"flag"
	"fmt"
	"time"
)

// LatencyMax bounds Faults.Latency so a typo cannot park every request for
// hours.
const LatencyMax = time.Minute

// Faults are the bank's misbehaviours, changeable while it runs (SetFaults,
// PUT /faults). Every rate is a probability in [0, 1]; the zero value is a
// well-behaved bank.
type Faults struct {
	// ErrorRate is the share of POST /payouts answered 503 without
	// accepting the payout.
	ErrorRate float64 `json:"error_rate"`
	// AmbiguousRate is the share of POST /payouts that are accepted but
	// answered 504, so the caller cannot tell whether they were.
	AmbiguousRate float64 `json:"ambiguous_rate"`
	// Latency is added to every protocol call (not /faults or /healthz).
	// In JSON it is a Go duration string ("250ms"); a number of
	// nanoseconds is accepted too.
	Latency time.Duration `json:"latency"`
	// Down refuses every protocol call with 503. Settlement and webhooks
	// keep running: the bank's back office is not its API.
	Down bool `json:"down"`
	// DropRate is the share of payouts whose final (succeeded or failed)
	// webhook is never sent; Bank.DroppedPayouts lists them. The optional
	// "dispatched" webhook is never dropped, so that list is exactly the
	// payouts only a reconciler can resolve.
	DropRate float64 `json:"drop_rate"`
	// DuplicateRate is the share of webhooks sent a second time, with the
	// same event id, after the first was acknowledged.
	DuplicateRate float64 `json:"duplicate_rate"`
	// ReorderRate is the share of payouts whose "dispatched" webhook is
	// held back and sent only after the final one was acknowledged.
	ReorderRate float64 `json:"reorder_rate"`
	// RejectRate is the share of new POST /payouts refused definitively
	// with 422; a rejected payout id stays rejected.
	RejectRate float64 `json:"reject_rate"`
	// RefuseRepeatRate is the share of repeated POST /payouts of a payout
	// the bank accepted that are answered with a 4xx error in the bank's
	// own JSON (400, 407, 413, 421, 422, 431 in turn) although the bank
	// holds the payout and pays it: after an ambiguous first attempt, a
	// caller that trusts the refusal fails a payout the bank pays.
	RefuseRepeatRate float64 `json:"refuse_repeat_rate"`
}

// Validate reports the first out-of-range field.
func (f Faults) Validate() error {
	rates := []struct {
		name string
		v    float64
	}{
		{"error_rate", f.ErrorRate}, {"ambiguous_rate", f.AmbiguousRate},
		{"drop_rate", f.DropRate}, {"duplicate_rate", f.DuplicateRate},
		{"reorder_rate", f.ReorderRate}, {"reject_rate", f.RejectRate},
		{"refuse_repeat_rate", f.RefuseRepeatRate},
	}
	for _, r := range rates {
		if !(r.v >= 0 && r.v <= 1) { // also catches NaN
			return fmt.Errorf("%s must be in [0, 1], got %v", r.name, r.v)
		}
	}
	if f.Latency < 0 || f.Latency > LatencyMax {
		return fmt.Errorf("latency must be in [0, %s], got %s", LatencyMax, f.Latency)
	}
	return nil
}

// clamp brings every field into range, for callers that cannot return an
// error (SetFaults).
func (f Faults) clamp() Faults {
	for _, p := range []*float64{&f.ErrorRate, &f.AmbiguousRate, &f.DropRate, &f.DuplicateRate, &f.ReorderRate, &f.RejectRate, &f.RefuseRepeatRate} {
		switch {
		case !(*p >= 0): // negative or NaN
			*p = 0
		case *p > 1:
			*p = 1
		}
	}
	f.Latency = min(max(f.Latency, 0), LatencyMax)
	return f
}

// faultsWire is Faults with Latency left raw, so it can be a string or a
// number on the wire.
type faultsWire struct {
	ErrorRate     float64         `json:"error_rate"`
	AmbiguousRate float64         `json:"ambiguous_rate"`
	Latency       json.RawMessage `json:"latency,omitempty"`
	Down          bool            `json:"down"`
	DropRate      float64         `json:"drop_rate"`
	DuplicateRate float64         `json:"duplicate_rate"`
	ReorderRate   float64         `json:"reorder_rate"`
	RejectRate    float64         `json:"reject_rate"`
	RefuseRepeat  float64         `json:"refuse_repeat_rate"`
}

// MarshalJSON writes Latency as a duration string, readable by operators.
func (f Faults) MarshalJSON() ([]byte, error) {
	lat, err := json.Marshal(f.Latency.String())
	if err != nil {
		return nil, err
	}
	return json.Marshal(faultsWire{
		ErrorRate: f.ErrorRate, AmbiguousRate: f.AmbiguousRate, Latency: lat, Down: f.Down,
		DropRate: f.DropRate, DuplicateRate: f.DuplicateRate, ReorderRate: f.ReorderRate, RejectRate: f.RejectRate,
		RefuseRepeat: f.RefuseRepeatRate,
	})
}

// UnmarshalJSON accepts Latency as a duration string or as nanoseconds.
func (f *Faults) UnmarshalJSON(b []byte) error {
	var w faultsWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	var lat time.Duration
	if len(w.Latency) > 0 && string(w.Latency) != "null" {
		var s string
		if err := json.Unmarshal(w.Latency, &s); err == nil {
			d, err := time.ParseDuration(s)
			if err != nil {
				return fmt.Errorf("latency: %w", err)
			}
			lat = d
		} else if err := json.Unmarshal(w.Latency, &lat); err != nil {
			return fmt.Errorf("latency must be a duration string or nanoseconds: %w", err)
		}
	}
	*f = Faults{
		ErrorRate: w.ErrorRate, AmbiguousRate: w.AmbiguousRate, Latency: lat, Down: w.Down,
		DropRate: w.DropRate, DuplicateRate: w.DuplicateRate, ReorderRate: w.ReorderRate, RejectRate: w.RejectRate,
		RefuseRepeatRate: w.RefuseRepeat,
	}
	return nil
}

// RegisterFlags binds f's fields to flags named prefix + "error-rate",
// "ambiguous-rate", "latency", "down", "drop-rate", "duplicate-rate",
// "reorder-rate", "reject-rate" and "refuse-repeat-rate", with f's current values as defaults.
// Check the result with Validate after parsing.
func (f *Faults) RegisterFlags(fs *flag.FlagSet, prefix string) {
	fs.Float64Var(&f.ErrorRate, prefix+"error-rate", f.ErrorRate, "share of POST /payouts answered 503 without accepting")
	fs.Float64Var(&f.AmbiguousRate, prefix+"ambiguous-rate", f.AmbiguousRate, "share of POST /payouts accepted but answered 504")
	fs.DurationVar(&f.Latency, prefix+"latency", f.Latency, "latency added to every partner call")
	fs.BoolVar(&f.Down, prefix+"down", f.Down, "refuse every partner call with 503")
	fs.Float64Var(&f.DropRate, prefix+"drop-rate", f.DropRate, "share of payouts whose final webhook is never sent")
	fs.Float64Var(&f.DuplicateRate, prefix+"duplicate-rate", f.DuplicateRate, "share of webhooks sent twice with the same event id")
	fs.Float64Var(&f.ReorderRate, prefix+"reorder-rate", f.ReorderRate, "share of payouts whose dispatched webhook comes after the final one")
	fs.Float64Var(&f.RejectRate, prefix+"reject-rate", f.RejectRate, "share of new payouts refused with 422")
	fs.Float64Var(&f.RefuseRepeatRate, prefix+"refuse-repeat-rate", f.RefuseRepeatRate, "share of repeated POST /payouts of an accepted payout answered with a 4xx although the bank pays it")
}
