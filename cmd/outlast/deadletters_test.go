package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/store"
)

// TestDeadLetterReplayFromLog: a notification for a payout that does not
// exist yet is rejected up to the bound, ends in the log's dead letters,
// is listed by `outlast deadletters list`, and once the payout exists,
// `outlast deadletters replay` makes it apply.
func TestDeadLetterReplayFromLog(t *testing.T) {
	testDeadLetterReplay(t, outlast.FromLog, nil)
}

// TestDeadLetterReplayFromInbox: the same through the database inbox, with
// an external broker that is down; the listing says the log could not be
// read and still shows the inbox's dead letters.
func TestDeadLetterReplayFromInbox(t *testing.T) {
	natsPort := testenv.FreePort(t)
	testDeadLetterReplay(t, outlast.FromInbox, func(m *Main) {
		m.Config.NATS = fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	})
}

func testDeadLetterReplay(t *testing.T, source outlast.Source, opt func(*Main)) {
	payoutID := outlast.NewID() // the id the store gives the payout, once it is created
	s := startTestService(t, "", func(m *Main) {
		m.Config.RejectDeliveriesMax = 2
		// The operator replays here: the reconciler, which replays mended
		// dead letters by itself, must not take this one first.
		m.Config.ReconcileEvery = time.Hour
		m.storeOpened = func(db *store.DB) { db.NewID = func() string { return payoutID } }
		if opt != nil {
			opt(m)
		}
	})
	ctx := context.Background()
	key, accounts, err := demoSetup(ctx, s.admin, "client-a", 1)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"event_id": "ev-early", "payout_id": payoutID,
		"status": "succeeded", "occurred_at": time.Now().UTC().Format(time.RFC3339Nano)})
	if st, code := raw(t, "POST", s.admin.BaseURL()+"/v1/partners/tcb/notifications", signedHeaders(s.secret, time.Now(), body), body); st != 200 {
		t.Fatalf("webhook = %d %s, want 200", st, code)
	}
	dl := waitDeadLetter(t, s)
	if n := dl.Notification; dl.Source != string(source) || !strings.HasPrefix(dl.ID, string(source)+":") ||
		n == nil || n.EventID != "ev-early" || n.PayoutID != payoutID || dl.Deliveries != 2 || !strings.Contains(dl.Reason, "unknown payout") {
		t.Fatalf("dead letter = %+v, want ev-early from the %s, unknown payout, after 2 deliveries", dl, source)
	}

	admin := []string{"--url", s.admin.BaseURL(), "--admin-token", "test-admin"}
	out, errOut := cli(t, append([]string{"deadletters", "list"}, admin...)...)
	for _, want := range []string{dl.ID, "ev-early", payoutID, "unknown payout", "1 dead letter\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("deadletters list printed\n%s\nwant %q in it", out, want)
		}
	}
	if logDown := strings.Contains(errOut, "dead letters of the log could not be read"); logDown != (source == outlast.FromInbox) {
		t.Errorf("deadletters list warned %q; want a warning about the log exactly when the broker is down", errOut)
	}
	out, _ = cli(t, append([]string{"deadletters", "list", "--json", "--limit", "5"}, admin...)...)
	var page client.DeadLetterPage
	if err := json.Unmarshal([]byte(out), &page); err != nil || len(page.DeadLetters) != 1 || page.DeadLetters[0].ID != dl.ID {
		t.Errorf("deadletters list --json = %s (%v), want the API's page with %s", out, err, dl.ID)
	}

	// Mend the cause: the payout exists now. Then replay.
	p, _, err := client.New(s.admin.BaseURL(), key).CreatePayout(ctx, "k1", client.PayoutRequest{AccountID: accounts[0], Amount: 100, Currency: "USD", Destination: "dest"})
	if err != nil || p.ID != payoutID {
		t.Fatalf("createPayout = %+v, %v; want payout %s", p, err, payoutID)
	}
	if out, _ := cli(t, append([]string{"deadletters", "replay", dl.ID}, admin...)...); !strings.Contains(out, "replayed 1 of 1") {
		t.Errorf("deadletters replay printed %q, want replayed 1 of 1", out)
	}
	testenv.WaitFor(t, 30*time.Second, "the replayed notification to apply", func() bool {
		got, _, err := s.DB.Payout(ctx, payoutID)
		return err == nil && got.Status == outlast.StatusSucceeded
	})
	if out, _ := cli(t, append([]string{"deadletters", "list"}, admin...)...); !strings.Contains(out, "no dead letters") {
		t.Errorf("deadletters list after the replay printed %q, want no dead letters", out)
	}
	// --all could not see the log's dead letters while the broker is down,
	// so it says it did not do all.
	var allOut bytes.Buffer
	err = run(ctx, append([]string{"deadletters", "replay", "--all"}, admin...), &allOut, &bytes.Buffer{})
	if !strings.Contains(allOut.String(), "replayed 0 dead letters") || (err != nil) != (source == outlast.FromInbox) {
		t.Errorf("deadletters replay --all with none = %q, %v; want replayed 0, and an error exactly when the log is down", allOut.String(), err)
	}
	err = run(ctx, append([]string{"deadletters", "replay", "nope"}, admin...), &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "422") || !strings.Contains(err.Error(), `"nope" is not a dead letter id`) {
		t.Errorf("deadletters replay nope = %v, want the API's 422 and its message", err)
	}
}

// waitDeadLetter waits until the service lists exactly one dead letter.
func waitDeadLetter(t *testing.T, s *testService) client.DeadLetter {
	t.Helper()
	var dl client.DeadLetter
	testenv.WaitFor(t, 30*time.Second, "the notification to be dead-lettered", func() bool {
		page, err := s.admin.DeadLetters(context.Background(), 10)
		if err != nil || len(page.DeadLetters) != 1 {
			return false
		}
		dl = page.DeadLetters[0]
		return true
	})
	return dl
}

// cli runs the outlast command with args, as the binary would, and fails t
// unless it succeeds.
func cli(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("outlast %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), errOut.String()
}
