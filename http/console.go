package http

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"mime"
	nethttp "net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/outlast/outlast"
)

// The admin web console at /admin/: server-rendered pages from embedded
// templates, one small embedded script that refreshes the live part every
// second, no external assets. It signs in with the admin token and keeps
// a session cookie; the JSON API under /admin/v1/ still takes the bearer
// token only, so the cookie never reaches it.

//go:embed console
var consoleFiles embed.FS

var consoleTemplates = template.Must(template.New("console").Funcs(template.FuncMap{
	"ago":   ago,
	"when":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"join":  func(names []string) string { return strings.Join(names, ", ") },
	"order": channelOrderText,
	"moves": outlast.DescribeMoves,
}).ParseFS(consoleFiles, "console/*.html"))

const (
	sessionCookie = "outlast_console"
	// sessionTTL is how long a console sign-in lasts.
	sessionTTL = 12 * time.Hour
	// consoleReadTimeout bounds the database reads of one page, so a
	// hung database shows as a banner within it rather than a hung page.
	consoleReadTimeout = 2 * time.Second
	// consoleFormBytesMax bounds a console form's body.
	consoleFormBytesMax = 16 << 10
	// consoleHistoryMax is how many config changes the history page lists.
	consoleHistoryMax = 100
	// consoleCSP allows the console's own script, styles and fetches and
	// nothing else: no inline script, no framing, forms to itself only.
	consoleCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)

func (s *Server) registerConsole() {
	s.handle("GET /admin", s.consoleRedirect)
	s.handle("GET /admin/{$}", s.consoleOverview)
	s.handle("GET /admin/live", s.consoleLive)
	s.handle("GET /admin/history", s.consoleHistory)
	s.handle("GET /admin/exceptions", s.consoleExceptions)
	s.handle("POST /admin/exceptions/{id}/resolve", s.consoleResolve)
	s.handle("GET /admin/login", s.consoleLoginPage)
	s.handle("POST /admin/login", s.consoleLogin)
	s.handle("POST /admin/logout", s.consoleLogout)
	s.handle("POST /admin/maintenance", s.consoleMaintenance)
	s.handle("POST /admin/channel", s.consoleChannel)
	s.handle("POST /admin/local", s.consoleLocal)
	s.handle("GET /admin/static/{file}", s.consoleStatic)
}

// sessionKeyFor derives the key that signs sessions from the admin
// token: changing the token signs every session out, and the cookie
// never holds the token itself.
func sessionKeyFor(adminToken string) []byte {
	m := hmac.New(sha256.New, []byte(adminToken))
	m.Write([]byte("outlast console session key v1"))
	return m.Sum(nil)
}

// sessionValue is "<expiry unix seconds>.<hex HMAC of it>".
func (s *Server) sessionValue(expires int64) string {
	m := hmac.New(sha256.New, s.sessionKey)
	m.Write([]byte("session:" + strconv.FormatInt(expires, 10)))
	return strconv.FormatInt(expires, 10) + "." + hex.EncodeToString(m.Sum(nil))
}

// validSession reports whether r carries an unexpired session cookie
// this server (or another with the same admin token) signed.
func (s *Server) validSession(r *nethttp.Request) bool {
	c, err := r.Cookie(sessionCookie)
	if err != nil || len(c.Value) > tokenBytesMax {
		return false
	}
	exp, _, ok := strings.Cut(c.Value, ".")
	expires, err := strconv.ParseInt(exp, 10, 64)
	if !ok || err != nil || s.now().Unix() >= expires {
		return false
	}
	return hmac.Equal([]byte(c.Value), []byte(s.sessionValue(expires)))
}

func (s *Server) sessionCookie(r *nethttp.Request, value string, maxAge int) *nethttp.Cookie {
	return &nethttp.Cookie{Name: sessionCookie, Value: value, Path: "/admin/", MaxAge: maxAge,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: nethttp.SameSiteStrictMode}
}

func (s *Server) consoleRedirect(w nethttp.ResponseWriter, r *nethttp.Request) {
	nethttp.Redirect(w, r, "/admin/", nethttp.StatusSeeOther)
}

func (s *Server) consoleLoginPage(w nethttp.ResponseWriter, r *nethttp.Request) {
	if s.validSession(r) {
		nethttp.Redirect(w, r, "/admin/", nethttp.StatusSeeOther)
		return
	}
	s.render(w, nethttp.StatusOK, "login", &consoleView{Page: "login"})
}

// consoleLogin signs in with the admin token. It is checked against
// cross-origin posts like every other form, so a page elsewhere cannot
// sign a browser in under its own session.
func (s *Server) consoleLogin(w nethttp.ResponseWriter, r *nethttp.Request) {
	if !s.consoleForm(w, r, false) {
		return
	}
	if !s.isAdmin(r.PostForm.Get("token")) {
		s.log.Warn("console sign-in refused: wrong admin token", "remote", r.RemoteAddr)
		s.render(w, nethttp.StatusUnauthorized, "login", &consoleView{Page: "login", Problem: "That is not the admin token."})
		return
	}
	expires := s.now().Add(sessionTTL)
	nethttp.SetCookie(w, s.sessionCookie(r, s.sessionValue(expires.Unix()), int(sessionTTL/time.Second)))
	s.log.Info("console signed in", "remote", r.RemoteAddr)
	nethttp.Redirect(w, r, "/admin/", nethttp.StatusSeeOther)
}

// consoleLogout clears the cookie. Sessions are not kept server-side: a
// copied cookie stays good until it expires, or until the admin token
// changes.
func (s *Server) consoleLogout(w nethttp.ResponseWriter, r *nethttp.Request) {
	if !s.consoleForm(w, r, false) {
		return
	}
	nethttp.SetCookie(w, s.sessionCookie(r, "", -1))
	nethttp.Redirect(w, r, "/admin/login", nethttp.StatusSeeOther)
}

// consoleForm admits a console POST: from this console's own pages
// (same origin, by Sec-Fetch-Site or Origin), signed in unless it is the
// sign-in itself, with a bounded form body. Otherwise it answers and
// returns false.
func (s *Server) consoleForm(w nethttp.ResponseWriter, r *nethttp.Request, session bool) bool {
	if err := s.csrf.Check(r); err != nil {
		s.log.Warn("console form refused: cross-origin", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"))
		s.render(w, nethttp.StatusForbidden, "error", &consoleView{Page: "error",
			Problem: "Refused: this form was not sent from this console's own page."})
		return false
	}
	if session && !s.validSession(r) {
		nethttp.Redirect(w, r, "/admin/login", nethttp.StatusSeeOther)
		return false
	}
	r.Body = nethttp.MaxBytesReader(w, r.Body, consoleFormBytesMax)
	if err := r.ParseForm(); err != nil {
		s.render(w, nethttp.StatusBadRequest, "error", &consoleView{Page: "error",
			Problem: "The form could not be read (at most " + strconv.Itoa(consoleFormBytesMax>>10) + " KiB)."})
		return false
	}
	return true
}

// requireSession sends a browser without a session to the sign-in page.
func (s *Server) requireSession(w nethttp.ResponseWriter, r *nethttp.Request) bool {
	if s.validSession(r) {
		return true
	}
	nethttp.Redirect(w, r, "/admin/login", nethttp.StatusSeeOther)
	return false
}

// consoleNotices are the messages a redirect after a change asks the
// overview to show; the query names one, never the text.
var consoleNotices = map[string]string{
	"local-on":  "Break-glass maintenance is on for this instance only. It refuses new payouts until you clear it here.",
	"local-off": "Break-glass maintenance is cleared on this instance.",
}

func (s *Server) consoleOverview(w nethttp.ResponseWriter, r *nethttp.Request) {
	if !s.requireSession(w, r) {
		return
	}
	v := s.gather(r.Context(), -1)
	q := r.URL.Query()
	v.Notice = consoleNotices[q.Get("done")]
	if n, err := strconv.ParseInt(q.Get("saved"), 10, 64); err == nil {
		v.Notice = "Saved as config version " + strconv.FormatInt(n, 10) + ". Every instance applies it within a second or two: watch the instances below."
	}
	s.render(w, nethttp.StatusOK, "overview", v)
}

// consoleLive is the live part of the overview, which the page fetches
// every second; ?v= is the config version the page's forms were made
// from, to say when it is behind.
func (s *Server) consoleLive(w nethttp.ResponseWriter, r *nethttp.Request) {
	if !s.validSession(r) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(nethttp.StatusUnauthorized)
		_, _ = w.Write([]byte("signed out\n"))
		return
	}
	pageVersion, err := strconv.ParseInt(r.URL.Query().Get("v"), 10, 64)
	if err != nil {
		pageVersion = -1
	}
	s.render(w, nethttp.StatusOK, "live", s.gather(r.Context(), pageVersion))
}

func (s *Server) consoleHistory(w nethttp.ResponseWriter, r *nethttp.Request) {
	if !s.requireSession(w, r) {
		return
	}
	v := &consoleView{Page: "history"}
	if s.svc.Control == nil {
		v.DBDown = "this server keeps no config document"
		s.render(w, nethttp.StatusOK, "history", v)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), consoleReadTimeout)
	defer cancel()
	changes, err := s.svc.Control.ControlHistory(ctx, consoleHistoryMax)
	if err != nil {
		v.DBDown = s.unreachable(err)
	}
	for _, c := range changes {
		v.History = append(v.History, changeView{ConfigChange: c, Summary: describeChange(c.Before, c.After)})
	}
	s.render(w, nethttp.StatusOK, "history", v)
}

// consoleStatic serves the embedded stylesheet and script.
func (s *Server) consoleStatic(w nethttp.ResponseWriter, r *nethttp.Request) {
	name := r.PathValue("file")
	b, err := fs.ReadFile(consoleFiles, "console/"+name)
	if err != nil || strings.HasSuffix(name, ".html") {
		s.writeError(w, r, notFound("console file", name))
		return
	}
	w.Header().Set("Content-Type", mime.TypeByExtension(path.Ext(name)))
	_, _ = w.Write(b)
}

// render executes a console template into a buffer first, so a template
// error is a clean 500 rather than half a page.
func (s *Server) render(w nethttp.ResponseWriter, status int, name string, v *consoleView) {
	v.Now = s.now()
	var buf bytes.Buffer
	if err := consoleTemplates.ExecuteTemplate(&buf, name, v); err != nil {
		s.log.Error("console template failed", "template", name, "err", err)
		status, buf = nethttp.StatusInternalServerError, *bytes.NewBufferString("internal error\n")
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", consoleCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// unreachable logs why the database could not be read and says it in
// words fit for the banner: no SQL or driver text.
func (s *Server) unreachable(err error) string {
	s.log.Warn("console: database unreachable", "err", err)
	if msg := outlast.ErrorMessage(err); msg != "internal error" {
		return msg
	}
	return "the database could not be read"
}

// ago says how long before now t was, in the largest whole unit.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := max(0, now.Sub(t))
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + " s ago"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + " min ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + " h ago"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + " days ago"
}
