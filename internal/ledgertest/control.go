package ledgertest

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/outlast/outlast"
)

// needControl returns h's config store, or skips t without one.
func needControl(t *testing.T, h *Harness) outlast.ControlStore {
	t.Helper()
	if h.Control == nil {
		t.Skip("the harness has no Control")
	}
	return h.Control
}

// channelsConfig is a valid document: tcb active, acb behind it.
func channelsConfig() *outlast.ControlConfig {
	return &outlast.ControlConfig{
		Channels:      map[string]outlast.ChannelConfig{"tcb": {Enabled: true}, "acb": {Enabled: true}},
		ActiveChannel: "tcb",
		Fallback:      []string{"acb"},
	}
}

// wantControl fails t unless the store holds want, read both ways.
func wantControl(t *testing.T, s outlast.ControlStore, what string, want *outlast.ControlConfig) {
	t.Helper()
	ctx := context.Background()
	got, err := s.ControlConfig(ctx)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: ControlConfig = %+v, %v; want %+v", what, got, err, want)
	}
	if v, err := s.ControlVersion(ctx); err != nil || v != want.Version {
		t.Fatalf("%s: ControlVersion = %d, %v; want %d", what, v, err, want.Version)
	}
}

// testControlConfig: the default before any change, an optimistic put,
// stale and invalid puts that change nothing, and the history.
func testControlConfig(t *testing.T, h *Harness) {
	s := needControl(t, h)
	ctx := context.Background()
	def := &outlast.ControlConfig{Channels: map[string]outlast.ChannelConfig{}, Fallback: []string{}}
	wantControl(t, s, "before any change", def)
	if hs, err := s.ControlHistory(ctx, 10); err != nil || len(hs) != 0 {
		t.Fatalf("ControlHistory before any change = %+v, %v; want none", hs, err)
	}

	in := channelsConfig()
	in.Version, in.UpdatedBy = 7, "mallory" // the store's to set
	v1, err := s.PutControlConfig(ctx, in, 0, "alice", "set up the channels")
	if err != nil || v1.Version != 1 || v1.UpdatedBy != "alice" || v1.UpdatedAt.IsZero() {
		t.Fatalf("PutControlConfig(if 0) = %+v, %v; want version 1 updated by alice", v1, err)
	}
	if h.Clock != nil && !v1.UpdatedAt.Equal(h.Clock.Now()) {
		t.Fatalf("UpdatedAt = %v, want the ledger's clock %v", v1.UpdatedAt, h.Clock.Now())
	}
	if in.Version != 7 || in.UpdatedBy != "mallory" {
		t.Fatalf("PutControlConfig changed its argument: %+v", in)
	}
	want := channelsConfig()
	want.Version, want.UpdatedAt, want.UpdatedBy = 1, v1.UpdatedAt, "alice"
	if !reflect.DeepEqual(v1, want) {
		t.Fatalf("PutControlConfig = %+v, want %+v", v1, want)
	}
	v1.Channels["tcb"] = outlast.ChannelConfig{} // the caller's copy
	wantControl(t, s, "after the first put", want)

	for _, stale := range []int64{0, 2, -1} {
		_, err := s.PutControlConfig(ctx, channelsConfig(), stale, "bob", "")
		WantCode(t, fmt.Sprintf("PutControlConfig(if %d at version 1)", stale), err, outlast.EPRECONDITION)
	}
	wantControl(t, s, "after stale puts", want)
	testControlInvalid(t, s)
	wantControl(t, s, "after invalid puts", want)

	down := want.Clone()
	down.Maintenance = outlast.Maintenance{On: true, Message: "tcb is down"}
	down.Channels["tcb"] = outlast.ChannelConfig{Enabled: false}
	down.ActiveChannel, down.Fallback = "acb", []string{"tcb"}
	v2, err := s.PutControlConfig(ctx, down, 1, "bob", "tcb outage")
	if err != nil || v2.Version != 2 {
		t.Fatalf("PutControlConfig(if 1) = %+v, %v; want version 2", v2, err)
	}
	wantControl(t, s, "after the second put", v2)
	testControlHistory(t, s, def, want, v2)
}

// testControlInvalid: a document that does not validate is refused
// whole, even with the right version.
func testControlInvalid(t *testing.T, s outlast.ControlStore) {
	t.Helper()
	for _, tc := range []struct {
		name   string
		change func(c *outlast.ControlConfig)
	}{
		{"active channel not configured", func(c *outlast.ControlConfig) { c.ActiveChannel = "bidv" }},
		{"duplicate fallback", func(c *outlast.ControlConfig) {
			c.Channels["vcb"] = outlast.ChannelConfig{}
			c.Fallback = []string{"acb", "vcb", "acb"}
		}},
		{"disabled active channel", func(c *outlast.ControlConfig) { c.Channels["tcb"] = outlast.ChannelConfig{} }},
		{"bad channel name", func(c *outlast.ControlConfig) { c.Channels["a/b"] = outlast.ChannelConfig{Enabled: true} }},
		{"control character in the message", func(c *outlast.ControlConfig) { c.Maintenance.Message = "a\rb" }},
	} {
		c := channelsConfig()
		tc.change(c)
		_, err := s.PutControlConfig(context.Background(), c, 1, "bob", "")
		WantCode(t, "PutControlConfig("+tc.name+")", err, outlast.EVALIDATION)
	}
	_, err := s.PutControlConfig(context.Background(), channelsConfig(), 1, "", "")
	WantCode(t, "PutControlConfig(no actor)", err, outlast.EVALIDATION)
}

// testControlHistory: each change with who, why and the documents
// before and after, newest first, and limit bounds the listing.
func testControlHistory(t *testing.T, s outlast.ControlStore, v0, v1, v2 *outlast.ControlConfig) {
	t.Helper()
	hs, err := s.ControlHistory(context.Background(), 10)
	if err != nil || len(hs) != 2 {
		t.Fatalf("ControlHistory = %d changes, %v; want 2", len(hs), err)
	}
	for i, want := range []outlast.ConfigChange{
		{Version: 2, At: v2.UpdatedAt, Actor: "bob", Reason: "tcb outage", Before: v1, After: v2},
		{Version: 1, At: v1.UpdatedAt, Actor: "alice", Reason: "set up the channels", Before: v0, After: v1},
	} {
		got := hs[i]
		if got.Version != want.Version || !got.At.Equal(want.At) || got.Actor != want.Actor || got.Reason != want.Reason ||
			!reflect.DeepEqual(got.Before, want.Before) || !reflect.DeepEqual(got.After, want.After) {
			t.Fatalf("ControlHistory[%d] = %+v\n(before %+v, after %+v)\nwant %+v\n(before %+v, after %+v)",
				i, got, got.Before, got.After, want, want.Before, want.After)
		}
	}
	if hs, err := s.ControlHistory(context.Background(), 1); err != nil || len(hs) != 1 || hs[0].Version != 2 {
		t.Fatalf("ControlHistory(1) = %+v, %v; want the newest change alone", hs, err)
	}
}

// testControlConcurrentPuts: of puts racing from the same version,
// exactly one wins; the others are told the version moved. It races
// several rounds: in the first, a store's new connections may be slow
// enough to let one put finish before the others start.
func testControlConcurrentPuts(t *testing.T, h *Harness) {
	s := needControl(t, h)
	const rounds = 4
	for version := range int64(rounds) {
		winner := racePuts(t, s, version)
		c, err := s.ControlConfig(context.Background())
		if err != nil || c.Version != version+1 || c.UpdatedBy != winner {
			t.Fatalf("ControlConfig = %+v, %v; want version %d by %s", c, err, version+1, winner)
		}
		hs, err := s.ControlHistory(context.Background(), 0)
		if err != nil || len(hs) != int(version+1) || hs[0].Actor != winner {
			t.Fatalf("ControlHistory = %+v, %v; want %d changes, the newest by %s", hs, err, version+1, winner)
		}
	}
}

// racePuts makes concurrent puts from version, fails t unless exactly one
// wins and the others get EPRECONDITION, and returns the winner's actor.
func racePuts(t *testing.T, s outlast.ControlStore, version int64) string {
	t.Helper()
	const puts = 8
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		wins   []string
		others []error
		start  = make(chan struct{}) // so that the puts overlap
	)
	for i := range puts {
		actor := fmt.Sprintf("admin-%d-%d", version, i)
		wg.Go(func() {
			<-start
			_, err := s.PutControlConfig(context.Background(), channelsConfig(), version, actor, "race")
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				wins = append(wins, actor)
			} else if outlast.ErrorCode(err) != outlast.EPRECONDITION {
				others = append(others, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(wins) != 1 || len(others) > 0 {
		t.Fatalf("%d concurrent puts from version %d: winners %v, errors other than %s %v; want one winner",
			puts, version, wins, outlast.EPRECONDITION, others)
	}
	return wins[0]
}
