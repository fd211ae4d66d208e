package http

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/outlast/outlast"
)

// TestConfigReadChangeAndHistory: an operator reads the config, changes it
// under the version read, and a second operator working from the same
// read is refused with 412 rather than overwriting the change.
func TestConfigReadChangeAndHistory(t *testing.T) {
	h := newHarness(t)
	rec := h.do("GET", "/admin/v1/config", adminToken, "")
	h.mustStatus(rec, 200)
	if got := rec.Header().Get("ETag"); got != `"0"` {
		t.Fatalf("ETag of the default config = %q, want \"0\"", got)
	}
	doc := `{"maintenance":{"on":true,"message":"bank cut-over"},"channels":{"tcb":{"enabled":true},"acb":{"enabled":true}},"active_channel":"acb","fallback":["tcb"]}`
	rec = h.do("PUT", "/admin/v1/config", adminToken, doc, "If-Match", `"0"`, headerChangeReason, "cut-over window")
	h.mustStatus(rec, 200)
	var c outlast.ControlConfig
	decode(t, rec, &c)
	if c.Version != 1 || !c.Maintenance.On || c.ActiveChannel != "acb" || !strings.HasPrefix(c.UpdatedBy, "admin token from ") ||
		rec.Header().Get("ETag") != `"1"` {
		t.Fatalf("PUT answered %+v (ETag %s), want version 1 in maintenance on acb by the admin token", c, rec.Header().Get("ETag"))
	}
	// A second operator still holding version 0.
	wantError(t, h.do("PUT", "/admin/v1/config", adminToken, `{"maintenance":{"on":false}}`, "If-Match", `"0"`), 412, outlast.EPRECONDITION)
	// The whole document is refused when one part is wrong.
	wantError(t, h.do("PUT", "/admin/v1/config", adminToken, `{"channels":{"tcb":{"enabled":false}},"active_channel":"tcb"}`, "If-Match", "1"), 422, outlast.EVALIDATION)
	for _, ifMatch := range []string{"", "latest", `"-1"`} {
		wantError(t, h.do("PUT", "/admin/v1/config", adminToken, doc, "If-Match", ifMatch), 400, outlast.EINVALID)
	}
	wantError(t, h.do("PUT", "/admin/v1/config", adminToken, `{"maintenance":{"on":true},"MAINTENANCE":{"on":false}}`, "If-Match", "1"), 400, outlast.EINVALID)
	wantError(t, h.do("PUT", "/admin/v1/config", h.alice, doc, "If-Match", "1"), 401, outlast.EUNAUTHORIZED)
	wantError(t, h.do("GET", "/admin/v1/config", "", ""), 401, outlast.EUNAUTHORIZED)

	rec = h.do("GET", "/admin/v1/config", adminToken, "")
	decode(t, rec, &c)
	if c.Version != 1 || !c.Maintenance.On || c.Maintenance.Message != "bank cut-over" {
		t.Fatalf("config after refused changes = %+v, want version 1 unchanged", c)
	}
	rec = h.do("GET", "/admin/v1/config/history", adminToken, "")
	h.mustStatus(rec, 200)
	var hist struct {
		Changes []struct {
			Version int64                  `json:"version"`
			Actor   string                 `json:"actor"`
			Reason  string                 `json:"reason"`
			Before  *outlast.ControlConfig `json:"before"`
			After   *outlast.ControlConfig `json:"after"`
		} `json:"changes"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &hist); err != nil {
		t.Fatal(err)
	}
	if len(hist.Changes) != 1 || hist.Changes[0].Version != 1 || hist.Changes[0].Reason != "cut-over window" ||
		hist.Changes[0].Before.Maintenance.On || !hist.Changes[0].After.Maintenance.On {
		t.Fatalf("history = %+v, want the one change with its reason, before and after", hist)
	}
}
