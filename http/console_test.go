package http

import (
	"context"
	"errors"
	"fmt"
	nethttp "net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
)

// consoleOrigin is the origin of httptest.NewRequest's requests, as a
// browser on the console's own page would send it.
const consoleOrigin = "http://example.com"

// console serves one console request; a non-nil form is posted, hdr are
// key, value pairs (an Origin of the console's own page unless given).
func (h *harness) console(method, path string, session *nethttp.Cookie, form url.Values, hdr ...string) *httptest.ResponseRecorder {
	h.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(form.Encode()))
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", consoleOrigin)
	}
	if session != nil {
		req.AddCookie(session)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.srv.Handler().ServeHTTP(rec, req)
	return rec
}

// signIn signs in to the console and returns the session cookie.
func (h *harness) signIn() *nethttp.Cookie {
	h.t.Helper()
	rec := h.console("POST", "/admin/login", nil, url.Values{"token": {adminToken}})
	h.mustStatus(rec, 303)
	for _, c := range rec.Result().Cookies() {
		if c.Name == sessionCookie {
			return c
		}
	}
	h.t.Fatalf("sign-in set no %s cookie: %v", sessionCookie, rec.Header())
	return nil
}

// wantRedirect checks a 303 to location.
func wantRedirect(t *testing.T, rec *httptest.ResponseRecorder, location string) {
	t.Helper()
	if rec.Code != 303 || rec.Header().Get("Location") != location {
		t.Fatalf("answer = %d to %q, want 303 to %q; body %s", rec.Code, rec.Header().Get("Location"), location, rec.Body)
	}
}

func wantBody(t *testing.T, rec *httptest.ResponseRecorder, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(rec.Body.String(), p) {
			t.Errorf("page lacks %q:\n%s", p, rec.Body)
		}
	}
}

func configOf(t *testing.T, cs outlast.ControlStore) *outlast.ControlConfig {
	t.Helper()
	c, err := cs.ControlConfig(context.Background())
	if err != nil {
		t.Fatalf("ControlConfig: %v", err)
	}
	return c
}

// TestConsoleSignIn: the console takes the admin token once and keeps a
// session cookie that is HttpOnly, SameSite=Strict, scoped to /admin/,
// expires, cannot be forged and is no key to the JSON API.
func TestConsoleSignIn(t *testing.T) {
	h, _, _ := controlHarness(t)
	wantRedirect(t, h.console("GET", "/admin/", nil, nil), "/admin/login")
	wantRedirect(t, h.console("GET", "/admin", nil, nil), "/admin/")
	login := h.console("GET", "/admin/login", nil, nil)
	h.mustStatus(login, 200)
	wantBody(t, login, `name="token"`)
	if csp := login.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}

	rec := h.console("POST", "/admin/login", nil, url.Values{"token": {"guess"}})
	h.mustStatus(rec, 401)
	if len(rec.Result().Cookies()) != 0 {
		t.Fatalf("a wrong token got cookies %v", rec.Result().Cookies())
	}
	session := h.signIn()
	if !session.HttpOnly || session.SameSite != nethttp.SameSiteStrictMode || session.Path != "/admin/" || session.MaxAge != 12*3600 {
		t.Errorf("session cookie = %+v, want HttpOnly, SameSite=Strict, Path=/admin/, Max-Age 12 h", session)
	}
	if strings.Contains(session.Value, adminToken) {
		t.Fatalf("the session cookie %q holds the admin token", session.Value)
	}
	page := h.console("GET", "/admin/", session, nil)
	h.mustStatus(page, 200)
	wantBody(t, page, `id="config-version">0<`, `id="maintenance-on"`, "i-1")

	forged := *session
	exp, mac, _ := strings.Cut(session.Value, ".")
	forged.Value = exp + "1." + mac
	wantRedirect(t, h.console("GET", "/admin/", &forged, nil), "/admin/login")
	if rec := h.console("GET", "/admin/live", &forged, nil); rec.Code != 401 {
		t.Errorf("live with a forged session = %d, want 401", rec.Code)
	}
	// The cookie is no key to the API; the bearer token still is.
	wantError(t, h.console("GET", "/admin/v1/config", session, nil), 401, outlast.EUNAUTHORIZED)
	h.mustStatus(h.do("GET", "/admin/v1/config", adminToken, ""), 200)

	out := h.console("POST", "/admin/logout", session, url.Values{})
	wantRedirect(t, out, "/admin/login")
	if c := out.Result().Cookies(); len(c) != 1 || c[0].MaxAge >= 0 {
		t.Errorf("logout cookies = %v, want the session cleared", c)
	}
	h.clock.Advance(12*time.Hour + time.Second)
	wantRedirect(t, h.console("GET", "/admin/", session, nil), "/admin/login")
}

// TestConsoleRefusesCrossOrigin: a form posted from another site —
// switch or sign-in — is refused and changes nothing.
func TestConsoleRefusesCrossOrigin(t *testing.T) {
	h, _, db := controlHarness(t)
	session := h.signIn()
	on := url.Values{"version": {"0"}, "on": {"1"}, "reason": {"x"}}
	for _, hdr := range [][]string{
		{"Origin", "http://evil.example"},
		{"Sec-Fetch-Site", "cross-site"},
	} {
		rec := h.console("POST", "/admin/maintenance", session, on, hdr...)
		if rec.Code != 403 {
			t.Errorf("POST /admin/maintenance with %s = %d, want 403", hdr, rec.Code)
		}
		if rec := h.console("POST", "/admin/login", nil, url.Values{"token": {adminToken}}, hdr...); rec.Code != 403 || len(rec.Result().Cookies()) != 0 {
			t.Errorf("POST /admin/login with %s = %d with cookies %v, want 403 and none", hdr, rec.Code, rec.Result().Cookies())
		}
	}
	if rec := h.console("POST", "/admin/local", session, url.Values{"on": {"1"}}, "Origin", "http://evil.example"); rec.Code != 403 {
		t.Errorf("POST /admin/local cross-origin = %d, want 403", rec.Code)
	}
	if c := configOf(t, db); c.Version != 0 || c.Maintenance.On {
		t.Fatalf("config after refused posts = %+v, want version 0", c)
	}
	// Without a session a same-origin switch goes to the sign-in page.
	wantRedirect(t, h.console("POST", "/admin/maintenance", nil, on), "/admin/login")
}

// TestConsoleMaintenanceSwitch: the switch changes the document from the
// version the page was made from, with its reason in the history; the
// instance then refuses payouts, and the switch back lets them in.
func TestConsoleMaintenanceSwitch(t *testing.T) {
	h, cc, db := controlHarness(t)
	session := h.signIn()
	rec := h.console("POST", "/admin/maintenance", session, url.Values{"version": {"0"}, "on": {"1"},
		"message": {"bank cut-over"}, "reason": {"ticket 42"}})
	wantRedirect(t, rec, "/admin/?saved=1")
	c := configOf(t, db)
	if !c.Maintenance.On || c.Maintenance.Message != "bank cut-over" || !strings.HasPrefix(c.UpdatedBy, "console: ") {
		t.Fatalf("config = %+v, want maintenance on by the console", c)
	}
	hist, err := db.ControlHistory(context.Background(), 1)
	if err != nil || len(hist) != 1 || hist[0].Reason != "ticket 42" {
		t.Fatalf("history = %+v, %v; want the reason kept", hist, err)
	}
	if err := cc.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantError(t, h.payout("during", h.alice, payoutBody), 503, outlast.EUNAVAILABLE)
	page := h.console("GET", "/admin/?saved=1", session, nil)
	wantBody(t, page, "Saved as config version 1", `id="maintenance-off"`, "ticket 42")

	wantRedirect(t, h.console("POST", "/admin/maintenance", session, url.Values{"version": {"1"}, "on": {"0"}, "reason": {"done"}}), "/admin/?saved=2")
	if c := configOf(t, db); c.Maintenance.On || c.Maintenance.Message != "" {
		t.Fatalf("config = %+v, want maintenance off", c)
	}
	if err := cc.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.mustStatus(h.payout("after", h.alice, payoutBody), 201)
}

// TestConsoleChannelSwitch: making a channel active adds it to the
// document if need be and puts the old active one first in the
// fallback; enabling and disabling change one channel; a document the
// store refuses (the active channel disabled) is answered 422 with why.
func TestConsoleChannelSwitch(t *testing.T) {
	h, _, db := controlHarness(t)
	h.mustStatus(h.do("PUT", "/admin/v1/config", adminToken,
		`{"channels":{"tcb":{"enabled":true},"vcb":{"enabled":true}},"active_channel":"tcb","fallback":["vcb"]}`, "If-Match", "0"), 200)
	session := h.signIn()
	post := func(version, name, action string) *httptest.ResponseRecorder {
		return h.console("POST", "/admin/channel", session, url.Values{"version": {version}, "name": {name}, "action": {action}, "reason": {"drill"}})
	}
	wantRedirect(t, post("1", "acb", "activate"), "/admin/?saved=2")
	c := configOf(t, db)
	if c.ActiveChannel != "acb" || !c.Channels["acb"].Enabled || strings.Join(c.Fallback, ",") != "tcb,vcb" {
		t.Fatalf("after activating acb: %+v, want acb active and fallback tcb,vcb", c)
	}
	wantRedirect(t, post("2", "vcb", "disable"), "/admin/?saved=3")
	if c := configOf(t, db); c.Channels["vcb"].Enabled || !c.Channels["tcb"].Enabled {
		t.Fatalf("after disabling vcb: %+v", c)
	}
	rec := post("3", "acb", "disable")
	h.mustStatus(rec, 422)
	wantBody(t, rec, "Nothing was saved", "is not enabled")
	if c := configOf(t, db); c.Version != 3 {
		t.Fatalf("version after a refused change = %d, want 3", c.Version)
	}
	h.mustStatus(post("3", "acb", "explode"), 422)
	h.mustStatus(post("3", "bad name!", "enable"), 422)
	wantRedirect(t, post("3", "vcb", "enable"), "/admin/?saved=4")
}

// TestConsoleStaleVersion: a switch from a page older than the document
// saves nothing and answers 412 with the page as it is now.
func TestConsoleStaleVersion(t *testing.T) {
	h, _, db := controlHarness(t)
	session := h.signIn()
	wantBody(t, h.console("GET", "/admin/", session, nil), `name="version" value="0"`)
	h.mustStatus(h.do("PUT", "/admin/v1/config", adminToken, `{"maintenance":{"on":false,"message":""},"channels":{"tcb":{"enabled":true}}}`,
		"If-Match", "0", "Outlast-Change-Reason", "someone else"), 200)
	rec := h.console("POST", "/admin/maintenance", session, url.Values{"version": {"0"}, "on": {"1"}, "reason": {"mine"}})
	h.mustStatus(rec, 412)
	wantBody(t, rec, "changed by someone else since you loaded this page", `id="config-version">1<`, `name="version" value="1"`)
	if c := configOf(t, db); c.Version != 1 || c.Maintenance.On {
		t.Fatalf("config = %+v, want version 1 without maintenance", c)
	}
}

// TestConsoleDatabaseDown: with the database gone the overview still
// renders this instance's view under a banner, the cluster switches say
// why they cannot work, and the break-glass switch works.
func TestConsoleDatabaseDown(t *testing.T) {
	h, cc, db := controlHarness(t)
	session := h.signIn()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	page := h.console("GET", "/admin/", session, nil)
	h.mustStatus(page, 200)
	wantBody(t, page, `id="db-down"`, `id="local-on"`, "this instance only", `data-db="down"`, "i-1", "redis: down")
	live := h.console("GET", "/admin/live", session, nil)
	h.mustStatus(live, 200)
	wantBody(t, live, `data-db="down"`, "Counting this instance only")
	hist := h.console("GET", "/admin/history", session, nil)
	h.mustStatus(hist, 200)
	wantBody(t, hist, `id="db-down"`)

	rec := h.console("POST", "/admin/maintenance", session, url.Values{"version": {"0"}, "on": {"1"}})
	if rec.Code < 500 {
		t.Fatalf("maintenance switch with the database down = %d, want 5xx", rec.Code)
	}
	wantBody(t, rec, "Nothing was saved", `id="local-on"`)

	wantRedirect(t, h.console("POST", "/admin/local", session, url.Values{"on": {"1"}, "message": {"db failover"}}), "/admin/?done=local-on")
	if st := cc.Status(); !st.Maintenance || st.Source != outlast.OverrideLocal || !strings.HasPrefix(st.Overrides[0].Actor, "console: ") {
		t.Fatalf("status after break-glass = %+v", st)
	}
	if msg := wantError(t, h.payout("k1", h.alice, payoutBody), 503, outlast.EUNAVAILABLE); msg != "db failover" {
		t.Fatalf("payout refused with %q, want the break-glass message", msg)
	}
	wantBody(t, h.console("GET", "/admin/?done=local-on", session, nil), "for this instance only", `id="local-off"`)
	wantRedirect(t, h.console("POST", "/admin/local", session, url.Values{"on": {"0"}}), "/admin/?done=local-off")
	if cc.Status().Maintenance {
		t.Fatal("break-glass still on after clearing it")
	}
}

// TestConsoleHistoryPage lists each change with who, why and what it
// changed, in words.
func TestConsoleHistoryPage(t *testing.T) {
	h, _, _ := controlHarness(t)
	session := h.signIn()
	wantRedirect(t, h.console("POST", "/admin/maintenance", session, url.Values{"version": {"0"}, "on": {"1"}, "message": {"cut-over"}, "reason": {"ticket 7"}}), "/admin/?saved=1")
	wantRedirect(t, h.console("POST", "/admin/channel", session, url.Values{"version": {"1"}, "name": {"tcb"}, "action": {"activate"}}), "/admin/?saved=2")
	rec := h.console("GET", "/admin/history", session, nil)
	h.mustStatus(rec, 200)
	wantBody(t, rec, `data-version="2"`, `data-version="1"`, "ticket 7", "no reason given",
		"maintenance turned on: &#34;cut-over&#34;", "active channel none → tcb", "channel tcb added, enabled", "console: admin token from")
}

func TestDescribeChange(t *testing.T) {
	on := &outlast.ControlConfig{Maintenance: outlast.Maintenance{On: true, Message: "m"},
		Channels: map[string]outlast.ChannelConfig{"a": {Enabled: true}, "b": {Enabled: true}}, ActiveChannel: "a", Fallback: []string{"b"}}
	off := &outlast.ControlConfig{Channels: map[string]outlast.ChannelConfig{"a": {Enabled: false}, "c": {Enabled: true}}, ActiveChannel: "c"}
	for _, tc := range []struct {
		before, after *outlast.ControlConfig
		want          string
	}{
		{nil, on, `maintenance turned on: "m"; active channel none → a; fallback [] → [b]; channel a added, enabled; channel b added, enabled`},
		{on, off, `maintenance turned off; active channel a → c; fallback [b] → []; channel a disabled; channel b removed; channel c added, enabled`},
		{on, on, "no setting changed"},
	} {
		if got := strings.Join(describeChange(tc.before, tc.after), "; "); got != tc.want {
			t.Errorf("describeChange = %q, want %q", got, tc.want)
		}
	}
}

// TestConsoleCharts: payouts created, notifications accepted and 5xx
// answers are counted per second, and the charts add up the other fresh
// instances' heartbeats.
func TestConsoleCharts(t *testing.T) {
	h, _, db := controlHarness(t)
	db.Now = h.clock.Now
	session := h.signIn()
	h.clock.Advance(time.Second) // a second of its own for the counts
	h.mustStatus(h.payout("c1", h.alice, payoutBody), 201)
	h.mustStatus(h.webhook("tcb", tcbSecret, h.clock.Now(), notificationBody), 200)
	h.setChooseErr(errors.New("no channel"))
	if rec := h.payout("c2", h.alice, payoutBody); rec.Code < 500 {
		t.Fatalf("payout without a channel = %d, want 5xx", rec.Code)
	}
	r := h.srv.Rates(60)
	if n := len(r.Payouts); n != 60 || r.Payouts[59] != 1 || r.Notifications[59] != 1 || r.Errors[59] != 1 || r.End != h.clock.Now().Unix() {
		t.Fatalf("Rates(60) = %+v, want one of each in the last second", r)
	}
	sec := h.clock.Now().Unix()
	other := &outlast.RateSeries{End: sec + 1, Payouts: []int64{5, 0}, Notifications: []int64{0, 0}, Errors: []int64{2, 9}}
	if err := db.PutInstance(context.Background(), &outlast.InstanceStatus{ID: "other", Rates: other}); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Second)
	live := h.console("GET", "/admin/live", session, nil)
	h.mustStatus(live, 200)
	// Charts end at the last whole second: sec, where this instance
	// made 1 payout and the other 5; the other's 9 errors are of a second
	// still counting.
	wantBody(t, live, "Payouts created per second</span> <span class=\"chart-now\">now <b>6</b>/s",
		"Errors (5xx responses, maintenance refusals apart) per second</span> <span class=\"chart-now\">now <b>3</b>/s", "the sum over the 2 instances")
	if strings.Contains(live.Body.String(), "refused for maintenance") {
		t.Errorf("live page draws a maintenance chart with no refusal in the window:\n%s", live.Body)
	}
}

// TestConsoleChartsMaintenanceApart: a payout refused for maintenance is
// counted in its own series, not as an error, and the console draws that
// series, summed over the instances (one of which does not report it),
// while the window holds a refusal.
func TestConsoleChartsMaintenanceApart(t *testing.T) {
	h, cc, db := controlHarness(t)
	db.Now = h.clock.Now
	session := h.signIn()
	h.clock.Advance(time.Second) // a second of its own for the counts
	if _, err := cc.SetLocal(true, "paused for the chart", "test"); err != nil {
		t.Fatal(err)
	}
	wantError(t, h.payout("m1", h.alice, payoutBody), 503, outlast.EUNAVAILABLE)
	if _, err := cc.SetLocal(false, "", "test"); err != nil {
		t.Fatal(err)
	}
	h.setChooseErr(errors.New("no channel"))
	if rec := h.payout("m2", h.alice, payoutBody); rec.Code < 500 {
		t.Fatalf("payout without a channel = %d, want 5xx", rec.Code)
	}
	r := h.srv.Rates(60)
	if got := r.MaintenanceRefused[59]; got != 1 || r.Errors[59] != 1 {
		t.Fatalf("Rates(60) last second: maintenance refused %d, errors %d; want 1 and 1 (the 5xx without a channel only)", got, r.Errors[59])
	}
	sec := h.clock.Now().Unix()
	for id, other := range map[string]*outlast.RateSeries{
		"reports": {End: sec + 1, Payouts: []int64{0, 0}, Notifications: []int64{0, 0}, Errors: []int64{0, 0}, MaintenanceRefused: []int64{4, 7}},
		"older":   {End: sec + 1, Payouts: []int64{2, 0}, Notifications: []int64{0, 0}, Errors: []int64{0, 0}},
	} {
		if err := db.PutInstance(context.Background(), &outlast.InstanceStatus{ID: id, Rates: other}); err != nil {
			t.Fatal(err)
		}
	}
	h.clock.Advance(time.Second)
	live := h.console("GET", "/admin/live", session, nil)
	h.mustStatus(live, 200)
	// At sec: this instance refused 1 and the "reports" instance 4; the
	// "older" instance's 2 payouts count though it reports no refusals.
	wantBody(t, live, "Payouts refused for maintenance per second</span> <span class=\"chart-now\">now <b>5</b>/s",
		"Errors (5xx responses, maintenance refusals apart) per second</span> <span class=\"chart-now\">now <b>1</b>/s",
		"Payouts created per second</span> <span class=\"chart-now\">now <b>2</b>/s", "the sum over the 3 instances")
}

// TestRateRingForgets: a slot reused after the ring went round reads as
// its new second only.
func TestRateRingForgets(t *testing.T) {
	var r rateRing
	r.add(ratePayouts, 100)
	r.add(ratePayouts, 100)
	if got := r.series(100, 1).Payouts[0]; got != 2 {
		t.Fatalf("payouts at 100 = %d, want 2", got)
	}
	r.add(rateErrors, 100+outlast.RateSeriesMax)
	got := r.series(100+outlast.RateSeriesMax, outlast.RateSeriesMax)
	if got.Payouts[0] != 0 || got.Errors[outlast.RateSeriesMax-1] != 1 {
		t.Fatalf("series after the ring went round = %+v", got)
	}
	if n := len(r.series(0, 10*outlast.RateSeriesMax).Errors); n != outlast.RateSeriesMax {
		t.Fatalf("series length = %d, want at most %d", n, outlast.RateSeriesMax)
	}
}

// TestConsoleInstances: instances behind the current version and those
// not seen recently are marked, and each dependency's health shows.
func TestConsoleInstances(t *testing.T) {
	h, _, db := controlHarness(t)
	db.Now = h.clock.Now
	session := h.signIn()
	put := func(is *outlast.InstanceStatus) {
		if err := db.PutInstance(context.Background(), is); err != nil {
			t.Fatal(err)
		}
	}
	put(&outlast.InstanceStatus{ID: "gone", AppliedVersion: 0})
	h.clock.Advance(InstanceStaleAfter + time.Second)
	h.mustStatus(h.do("PUT", "/admin/v1/config", adminToken, `{"maintenance":{"on":true}}`, "If-Match", "0"), 200)
	put(&outlast.InstanceStatus{ID: "late", AppliedVersion: 0})
	put(&outlast.InstanceStatus{ID: "up", AppliedVersion: 1, Maintenance: true, Dependencies: []outlast.DependencyHealth{
		{Name: "redis", OK: false, Detail: "connection refused"}, {Name: "channel:tcb", OK: false, State: "open"},
		{Name: "channel:acb", OK: false, State: "closed; ejected until 15:04:05 UTC (ejection 2)"},
		{Name: "channel:vcb", OK: true, State: "closed; returning 40%"}}})
	live := h.console("GET", "/admin/live", session, nil)
	h.mustStatus(live, 200)
	wantBody(t, live, `data-version="1" data-fresh="2" data-applied="1"`,
		`class="instance stale behind" data-id="gone"`, `class="instance behind" data-id="late"`, `class="instance" data-id="up"`,
		`data-dep="redis" title="connection refused">redis: down`, "channel:tcb: down (open)",
		"channel:acb: down (closed; ejected until 15:04:05 UTC (ejection 2))", "channel:vcb: up (closed; returning 40%)", "1 of 2")
}

// TestConsoleChannelOrder: with no active channel in the config the
// console names the instances' start-up channel as the active one, the
// channel table says where each channel stands, an instance whose order
// differs shows it, and making a channel active puts the start-up one
// first in the fallback order.
func TestConsoleChannelOrder(t *testing.T) {
	h, cc, db := controlHarness(t)
	db.Now = h.clock.Now
	session := h.signIn()
	row := func(page *httptest.ResponseRecorder, name string) string {
		t.Helper()
		body := page.Body.String()
		i := strings.Index(body, `data-channel="`+name+`"`)
		if i < 0 {
			t.Fatalf("no row for channel %s:\n%s", name, body)
		}
		end := strings.Index(body[i:], "</tr>")
		return body[i : i+end]
	}
	wantRow := func(page *httptest.ResponseRecorder, name string, wants ...string) {
		t.Helper()
		r := row(page, name)
		for _, w := range wants {
			if !strings.Contains(r, w) {
				t.Errorf("row of %s = %s\nwant %q in it", name, r, w)
			}
		}
	}
	// Version 0, no heartbeat yet: this instance's own view.
	page := h.console("GET", "/admin/", session, nil)
	wantBody(t, page, `active channel <b id="active-channel">tcb</b> (each instance's start-up channel; the config sets none)`,
		`id="local-order">tcb<`)
	wantRow(page, "tcb", "active (start-up default)")
	wantRow(page, "vcb", "unused", "(not in the config)")

	// A config with a fallback order and a disabled channel nobody has;
	// instance b lacks acb.
	h.mustStatus(h.do("PUT", "/admin/v1/config", adminToken, `{"channels":{"tcb":{"enabled":true},"vcb":{"enabled":true},
		"acb":{"enabled":true},"zcb":{"enabled":false}},"fallback":["vcb","acb","zcb"]}`, "If-Match", "0"), 200)
	put := func(id string, order, have []string) {
		t.Helper()
		if err := db.PutInstance(context.Background(), &outlast.InstanceStatus{ID: id, AppliedVersion: 1, ChannelOrder: order, Channels: have}); err != nil {
			t.Fatal(err)
		}
	}
	put("a", []string{"tcb", "vcb", "acb"}, []string{"acb", "tcb", "vcb"})
	put("b", []string{"tcb", "vcb"}, []string{"tcb", "vcb"})
	page = h.console("GET", "/admin/", session, nil)
	wantBody(t, page, `active channel <b id="active-channel">tcb</b> (each instance's start-up channel; the config sets none), then vcb, acb, zcb.`,
		"new payouts: tcb, then vcb; lacks acb")
	if n := strings.Count(page.Body.String(), "new payouts: "); n != 1 {
		t.Errorf("%d instances show their order, want 1 (b, whose order differs)", n)
	}
	wantRow(page, "tcb", "active (start-up default)")
	wantRow(page, "vcb", "fallback #1")
	wantRow(page, "acb", "fallback #2")
	wantRow(page, "zcb", "disabled", "(keeps fallback #3)", "not served by any instance")
	for _, name := range []string{"tcb", "vcb", "acb"} {
		if strings.Contains(row(page, name), "not served") {
			t.Errorf("row of %s says it is not served", name)
		}
	}

	// Make acb active: tcb, where every payout went, goes first in the
	// fallback order.
	wantRedirect(t, h.console("POST", "/admin/channel", session, url.Values{"version": {"1"}, "name": {"acb"}, "action": {"activate"}}), "/admin/?saved=2")
	if c := configOf(t, db); c.ActiveChannel != "acb" || strings.Join(c.Fallback, ",") != "tcb,vcb,zcb" {
		t.Fatalf("after activating acb: active %q, fallback %v; want acb, then tcb,vcb,zcb", c.ActiveChannel, c.Fallback)
	}
	if err := cc.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	put("a", []string{"acb", "tcb", "vcb"}, []string{"acb", "tcb", "vcb"})
	put("b", []string{"tcb", "vcb"}, []string{"tcb", "vcb"})
	page = h.console("GET", "/admin/", session, nil)
	wantBody(t, page, `active channel <b id="active-channel">acb</b>, then tcb, vcb, zcb.`, `id="local-order">tcb, then vcb<`)
	wantRow(page, "acb", `<span class="good">active</span>`)
	wantRow(page, "tcb", "fallback #1", "first on 1 instance<")
	if strings.Contains(row(page, "acb"), "start-up") {
		t.Errorf("row of acb = %s, want it active by the config", row(page, "acb"))
	}
}

// TestConsoleExceptions: the exceptions page lists an open exception
// with its evidence and a resolve form; resolving it moves its money,
// states what moved and lists it as resolved by the console's operator.
func TestConsoleExceptions(t *testing.T) {
	h := newHarness(t)
	wantRedirect(t, h.console("GET", "/admin/exceptions", nil, nil), "/admin/login")
	session := h.signIn()
	page := h.console("GET", "/admin/exceptions", session, nil)
	h.mustStatus(page, 200)
	wantBody(t, page, `href="/admin/exceptions" class="current"`, "No open exception.", "Nothing waits for a decision.", "None resolved yet.")

	e := h.conflict(1000, outlast.StatusFailed, outlast.StatusSucceeded)
	id := strconv.FormatInt(e.ID, 10)
	page = h.console("GET", "/admin/exceptions", session, nil)
	h.mustStatus(page, 200)
	wantBody(t, page, `id="exception-`+id+`" data-kind="paid_but_failed"`, e.PayoutID, "1000 USD", "1 paid_but_failed",
		"Evidence (2)", "<b>ledger</b>", "notification tcb/", `action="/admin/exceptions/`+id+`/resolve"`,
		`<option value="book_paid"`, `name="reason" required`)
	if strings.Contains(page.Body.String(), " selected") {
		t.Errorf("a fresh form preselects an action other than the first (no_money):\n%s", page.Body)
	}

	rec := h.console("POST", "/admin/exceptions/"+id+"/resolve", session,
		url.Values{"action": {"book_paid"}, "amount": {""}, "reason": {"tcb statement line 42"}})
	wantRedirect(t, rec, "/admin/exceptions?resolved="+id)
	if a := h.balances(); a.Available != 9000 || a.Held != 0 || a.PaidOut != 1000 {
		t.Fatalf("acc-a after book_paid = %+v, want available 9000, held 0, paid_out 1000", a)
	}
	got, err := h.store.mem.Exception(context.Background(), e.ID)
	if err != nil || got.Open() || !strings.HasPrefix(got.Resolution.By, "console: admin token from ") {
		t.Fatalf("exception after the console resolved it = %+v, %v; want resolved by the console", got, err)
	}
	page = h.console("GET", "/admin/exceptions?resolved="+id, session, nil)
	wantBody(t, page, "Exception "+id+" (paid_but_failed, payout "+e.PayoutID+") is resolved as book_paid. Moved: held -1000, paid_out &#43;1000.",
		"Nothing waits for a decision.", `id="resolved-`+id+`"`, "tcb statement line 42", "console: admin token from")
}

// TestConsoleExceptionRefused: a resolution the ledger refuses moves
// nothing and is answered with the API's status, why, and the form as
// it was sent; a cross-origin form is refused before it is read.
func TestConsoleExceptionRefused(t *testing.T) {
	h := newHarness(t)
	session := h.signIn()
	e := h.conflict(1000, outlast.StatusFailed, outlast.StatusSucceeded)
	path := fmt.Sprintf("/admin/exceptions/%d/resolve", e.ID)
	before := h.balances()
	for _, tc := range []struct {
		name   string
		path   string
		form   url.Values
		status int
		want   []string
	}{
		{"no reason", path, url.Values{"action": {"book_paid"}, "amount": {"700"}}, 422,
			[]string{"was not resolved; no money moved", "needs a reason", `value="700"`, `<option value="book_paid" selected>`}},
		{"bad amount", path, url.Values{"action": {"book_paid"}, "amount": {"7.5"}, "reason": {"typo"}}, 400,
			[]string{"amount must be a whole number", `value="typo"`}},
		{"no_money with an amount", path, url.Values{"action": {"no_money"}, "amount": {"5"}, "reason": {"r"}}, 422,
			[]string{"no_money moves no amount"}},
		{"unknown exception", "/admin/exceptions/999/resolve", url.Values{"action": {"no_money"}, "reason": {"r"}}, 404,
			[]string{"Exception 999 was not resolved", "not found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := h.console("POST", tc.path, session, tc.form)
			h.mustStatus(rec, tc.status)
			wantBody(t, rec, append(tc.want, `id="problem"`, fmt.Sprintf(`id="exception-%d"`, e.ID))...)
		})
	}
	if rec := h.console("POST", path, session, url.Values{"action": {"no_money"}, "reason": {"r"}}, "Origin", "http://evil.example"); rec.Code != 403 {
		t.Errorf("cross-origin resolve = %d, want 403", rec.Code)
	}
	if after := h.balances(); after != before {
		t.Fatalf("refused resolutions changed acc-a: %+v, was %+v", after, before)
	}
	wantRedirect(t, h.console("POST", path, session, url.Values{"action": {"no_money"}, "reason": {"bank reversed it"}}),
		fmt.Sprintf("/admin/exceptions?resolved=%d", e.ID))
	rec := h.console("POST", path, session, url.Values{"action": {"book_paid"}, "reason": {"again"}})
	h.mustStatus(rec, 409)
	wantBody(t, rec, "resolved already (no_money by console: admin token from")
}

// downExceptions is an exception service whose database is gone.
type downExceptions struct{ err error }

func (d downExceptions) FileException(context.Context, *outlast.Exception) (*outlast.Exception, bool, error) {
	return nil, false, d.err
}
func (d downExceptions) Exceptions(context.Context, outlast.ExceptionFilter) ([]*outlast.Exception, error) {
	return nil, d.err
}
func (d downExceptions) Exception(context.Context, int64) (*outlast.Exception, error) {
	return nil, d.err
}
func (d downExceptions) ResolveException(context.Context, int64, *outlast.Resolution) (*outlast.Exception, *outlast.Account, error) {
	return nil, nil, d.err
}
func (d downExceptions) OpenExceptions(context.Context) (map[outlast.ExceptionKind]int, error) {
	return nil, d.err
}

// TestConsoleExceptionsDatabaseDown: with the database gone the page
// says so instead of "nothing waits", and a resolution claims nothing
// about the money it cannot know.
func TestConsoleExceptionsDatabaseDown(t *testing.T) {
	down := downExceptions{outlast.Unavailable(errors.New("dial tcp: connection refused"), time.Second, "database unavailable")}
	h := newHarness(t, func(_ *Config, svc *Services) { svc.Exceptions = down })
	session := h.signIn()
	page := h.console("GET", "/admin/exceptions", session, nil)
	h.mustStatus(page, 200)
	wantBody(t, page, `id="db-down"`, "database unavailable", "which cannot be read now")
	if strings.Contains(page.Body.String(), "No open exception") || strings.Contains(page.Body.String(), "connection refused") {
		t.Errorf("page with the database down claims no exception, or shows the driver's text:\n%s", page.Body)
	}
	rec := h.console("POST", "/admin/exceptions/1/resolve", session, url.Values{"action": {"no_money"}, "reason": {"r"}})
	h.mustStatus(rec, 503)
	wantBody(t, rec, "Exception 1 could not be resolved now (database unavailable)", "check it before trying again")
	if strings.Contains(rec.Body.String(), "no money moved") {
		t.Errorf("a failed resolution claims no money moved:\n%s", rec.Body)
	}
}
