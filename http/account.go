package http

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	nethttp "net/http"
	"strconv"
	"time"

	"github.com/outlast/outlast"
)

// accountJSON is the account as the API shows it.
type accountJSON struct {
	ID        string               `json:"id"`
	ClientID  string               `json:"client_id"`
	Currency  string               `json:"currency"`
	Funded    int64                `json:"funded"`
	Available int64                `json:"available"`
	Held      int64                `json:"held"`
	PaidOut   int64                `json:"paid_out"`
	Flags     outlast.AccountFlags `json:"flags"`
	Version   int64                `json:"version"`
	UpdatedAt time.Time            `json:"updated_at"`
}

func toAccountJSON(a *outlast.Account) accountJSON {
	return accountJSON{
		ID: a.ID, ClientID: a.ClientID, Currency: a.Currency,
		Funded: a.Funded, Available: a.Available, Held: a.Held, PaidOut: a.PaidOut,
		Flags: a.Flags, Version: a.Version, UpdatedAt: a.UpdatedAt.UTC(),
	}
}

// createClient registers a client and answers its API key, the only time
// the key is ever shown: only its SHA-256 hash is stored.
func (s *Server) createClient(w nethttp.ResponseWriter, r *nethttp.Request) {
	if err := s.requireAdmin(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	var in struct {
		ID string `json:"id"`
	}
	if err := s.decodeBody(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	if !outlast.ValidID(in.ID) {
		s.writeError(w, r, outlast.Errorf(outlast.EVALIDATION, "id must be %s", outlast.IDRule))
		return
	}
	var b [apiKeyRandBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	key := apiKeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	hash := sha256.Sum256([]byte(key))
	c := &outlast.Client{ID: in.ID, CreatedAt: s.now().UTC()}
	if err := s.svc.Accounts.CreateClient(r.Context(), c, hash[:]); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, nethttp.StatusCreated, struct {
		ID     string `json:"id"`
		APIKey string `json:"api_key"`
	}{c.ID, key})
}

func (s *Server) createAccount(w nethttp.ResponseWriter, r *nethttp.Request) {
	if err := s.requireAdmin(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	var in struct {
		ID       string               `json:"id"`
		ClientID string               `json:"client_id"`
		Currency string               `json:"currency"`
		Flags    outlast.AccountFlags `json:"flags"`
	}
	if err := s.decodeBody(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	a := &outlast.Account{ID: in.ID, ClientID: in.ClientID, Currency: in.Currency, Flags: in.Flags}
	if err := a.Validate(); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.svc.Accounts.CreateAccount(r.Context(), a); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/accounts/"+a.ID)
	writeJSON(w, nethttp.StatusCreated, toAccountJSON(a))
}

func (s *Server) fundAccount(w nethttp.ResponseWriter, r *nethttp.Request) {
	if err := s.requireAdmin(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	id, err := pathID(r, "id", "account")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	key, err := idempotencyKey(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var in struct {
		Amount int64 `json:"amount"`
	}
	if err := s.decodeBody(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := outlast.ValidateAmount(in.Amount); err != nil {
		s.writeError(w, r, err)
		return
	}
	a, funded, err := s.svc.Accounts.FundAccount(r.Context(), id, in.Amount, key)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !funded {
		w.Header().Set(headerReplayed, "true")
	}
	writeJSON(w, nethttp.StatusOK, toAccountJSON(a))
}

func (s *Server) setAccountFlags(w nethttp.ResponseWriter, r *nethttp.Request) {
	if err := s.requireAdmin(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	id, err := pathID(r, "id", "account")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var flags outlast.AccountFlags
	if err := s.decodeBody(w, r, &flags); err != nil {
		s.writeError(w, r, err)
		return
	}
	if flags.DailyLimit < 0 {
		s.writeError(w, r, outlast.Errorf(outlast.EVALIDATION, "daily_limit must not be negative"))
		return
	}
	a, err := s.svc.Accounts.SetAccountFlags(r.Context(), id, flags)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, nethttp.StatusOK, toAccountJSON(a))
}

// getAccount answers the admin, or the client owning the account; any other
// client gets the same 404 as for a missing account, so ids of other
// clients' accounts cannot be probed.
func (s *Server) getAccount(w nethttp.ResponseWriter, r *nethttp.Request) {
	p, err := s.authenticate(r.Context(), r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	id, err := pathID(r, "id", "account")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	a, fresh, err := s.svc.Accounts.Account(r.Context(), id)
	if outlast.ErrorCode(err) == outlast.ENOTFOUND || (err == nil && !p.admin && a.ClientID != p.client.ID) {
		err = notFound("account", id) // one message for both, so they look alike
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeFreshness(w, fresh)
	writeJSON(w, nethttp.StatusOK, toAccountJSON(a))
}

// writeFreshness says where a read came from and how old it is: the
// standard Age header (whole seconds), Outlast-Source, and Outlast-Stale
// when the value was served past its lifetime because a dependency failed.
func writeFreshness(w nethttp.ResponseWriter, f outlast.Freshness) {
	source := f.Source
	if source == "" {
		source = outlast.SourceDatabase
	}
	w.Header().Set("Outlast-Source", source)
	w.Header().Set("Age", strconv.FormatInt(int64(f.Age/time.Second), 10))
	if f.Stale {
		w.Header().Set("Outlast-Stale", "true")
	}
}

// pathID reads an id path value; an id that can never be valid cannot
// exist, so it is a 404 rather than a database round trip.
func pathID(r *nethttp.Request, name, what string) (string, error) {
	id := r.PathValue(name)
	if !outlast.ValidID(id) {
		return "", notFound(what, id)
	}
	return id, nil
}

func notFound(what, id string) error {
	return outlast.Errorf(outlast.ENOTFOUND, "%s %q not found", what, id)
}
