package naive

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/outlast/outlast"
)

// statuses maps the domain's error codes to HTTP statuses, as Outlast's
// contract does; a code not listed is a 500.
var statuses = map[string]int{
	outlast.EINVALID:      http.StatusBadRequest,
	outlast.EVALIDATION:   http.StatusUnprocessableEntity,
	outlast.EIDEMPOTENCY:  http.StatusUnprocessableEntity,
	outlast.EINSUFFICIENT: http.StatusUnprocessableEntity,
	outlast.EUNAUTHORIZED: http.StatusUnauthorized,
	outlast.EFORBIDDEN:    http.StatusForbidden,
	outlast.ENOTFOUND:     http.StatusNotFound,
	outlast.ECONFLICT:     http.StatusConflict,
	outlast.EPRECONDITION: http.StatusPreconditionFailed,
	outlast.ETOOLARGE:     http.StatusRequestEntityTooLarge,
	outlast.EUNAVAILABLE:  http.StatusServiceUnavailable,
}

// Handler serves Outlast's HTTP contract, as far as the lab drives it.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/v1/clients", s.createClient)
	mux.HandleFunc("GET /admin/v1/config", s.getConfig)
	mux.HandleFunc("PUT /admin/v1/config", s.putConfig)
	mux.HandleFunc("POST /v1/accounts", s.createAccount)
	mux.HandleFunc("GET /v1/accounts/{id}", s.getAccount)
	mux.HandleFunc("POST /v1/accounts/{id}/funds", s.fundAccount)
	mux.HandleFunc("POST /v1/payouts", s.createPayout)
	mux.HandleFunc("GET /v1/payouts/{id}", s.getPayout)
	mux.HandleFunc("POST /v1/partners/{channel}/notifications", s.notify)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	return mux
}

// writeError answers err in the JSON error shape; anything but a domain
// error is logged and shown as "internal error".
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := outlast.ErrorCode(err), outlast.ErrorMessage(err)
	status, ok := statuses[code]
	if !ok {
		status, code, msg = http.StatusInternalServerError, outlast.EINTERNAL, "internal error"
		s.log.Error("naive: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	if status == http.StatusServiceUnavailable {
		after := max(time.Second, outlast.ErrorRetryAfter(err))
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(after.Seconds())), 10))
	}
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do
}

// decode reads one JSON object into v, refusing unknown fields.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, bodyBytesMax))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &outlast.Error{Code: outlast.EINVALID, Message: "request body is not an acceptable JSON object", Err: err}
	}
	return nil
}

// principal is who a request authenticated as: the admin (clientID
// empty) or a client.
type principal struct {
	admin    bool
	clientID string
}

func (s *Server) authenticate(ctx context.Context, r *http.Request) (principal, error) {
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return principal{}, outlast.Errorf(outlast.EUNAUTHORIZED, "missing credentials: send Authorization: Bearer <token>")
	}
	got, want := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(s.cfg.AdminToken))
	if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
		return principal{admin: true}, nil
	}
	id, err := clientByKeyHash(ctx, s.db, got[:])
	return principal{clientID: id}, err
}

func (s *Server) requireAdmin(r *http.Request) error {
	p, err := s.authenticate(r.Context(), r)
	if err == nil && !p.admin {
		err = outlast.Errorf(outlast.EUNAUTHORIZED, "invalid admin token")
	}
	return err
}

func (s *Server) createClient(w http.ResponseWriter, r *http.Request) {
	var in struct {
		ID string `json:"id"`
	}
	err := s.requireAdmin(r)
	if err == nil {
		err = decode(w, r, &in)
	}
	if err == nil && !outlast.ValidID(in.ID) {
		err = outlast.Errorf(outlast.EVALIDATION, "id must be %s", outlast.IDRule)
	}
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	key := "olk_" + base64.RawURLEncoding.EncodeToString(b[:])
	hash := sha256.Sum256([]byte(key))
	if err == nil {
		err = createClient(r.Context(), s.db, in.ID, hash[:], time.Now().UTC())
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"id": in.ID, "api_key": key})
}

func (s *Server) createAccount(w http.ResponseWriter, r *http.Request) {
	var in struct {
		ID       string               `json:"id"`
		ClientID string               `json:"client_id"`
		Currency string               `json:"currency"`
		Flags    outlast.AccountFlags `json:"flags"`
	}
	err := s.requireAdmin(r)
	if err == nil {
		err = decode(w, r, &in)
	}
	now := time.Now().UTC()
	a := &outlast.Account{ID: in.ID, ClientID: in.ClientID, Currency: in.Currency, Flags: in.Flags, Version: 1, CreatedAt: now, UpdatedAt: now}
	if err == nil {
		err = a.Validate()
	}
	if err == nil {
		err = createAccount(r.Context(), s.db, a)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/accounts/"+a.ID)
	writeJSON(w, http.StatusCreated, a)
}

func (s *Server) fundAccount(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Amount int64 `json:"amount"`
	}
	key := r.Header.Get("Idempotency-Key")
	err := s.requireAdmin(r)
	if err == nil {
		err = outlast.ValidateIdempotencyKey(key)
	}
	if err == nil {
		err = decode(w, r, &in)
	}
	if err == nil {
		err = outlast.ValidateAmount(in.Amount)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	a, funded, err := fundAccount(r.Context(), s.db, r.PathValue("id"), in.Amount, key, time.Now().UTC())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.invalidate(r.Context(), accountKey(a.ID))
	if !funded {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, http.StatusOK, a)
}

// getAccount answers the admin or the owning client.
func (s *Server) getAccount(w http.ResponseWriter, r *http.Request) {
	s.serveOwned(w, r, func(ctx context.Context, id string) (any, string, string, error) {
		a, source, err := s.readAccount(ctx, id)
		if err != nil {
			return nil, "", "", err
		}
		return a, a.ClientID, source, nil
	})
}

// getPayout answers the admin or the owning client.
func (s *Server) getPayout(w http.ResponseWriter, r *http.Request) {
	s.serveOwned(w, r, func(ctx context.Context, id string) (any, string, string, error) {
		p, source, err := s.readPayout(ctx, id)
		if err != nil {
			return nil, "", "", err
		}
		return p, p.ClientID, source, nil
	})
}

// serveOwned answers what read finds under the path's id to the admin or
// the client owning it; another client gets the same 404 as for nothing
// at all, so other clients' ids cannot be probed.
func (s *Server) serveOwned(w http.ResponseWriter, r *http.Request, read func(ctx context.Context, id string) (v any, owner, source string, err error)) {
	pr, err := s.authenticate(r.Context(), r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	v, owner, source, err := read(r.Context(), r.PathValue("id"))
	if err == nil && !pr.admin && owner != pr.clientID {
		err = outlast.Errorf(outlast.ENOTFOUND, "not found")
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Outlast-Source", source)
	writeJSON(w, http.StatusOK, v)
}

// createPayout refuses payouts while this instance's applied config says
// maintenance, then holds the amount and records the payout in one
// transaction.
func (s *Server) createPayout(w http.ResponseWriter, r *http.Request) {
	if m := s.currentConfig().Maintenance; m.On {
		s.writeError(w, r, outlast.MaintenanceError(m.Message, m.RetryAfter()))
		return
	}
	p, err := s.authenticate(r.Context(), r)
	if err == nil && p.admin {
		err = outlast.Errorf(outlast.EFORBIDDEN, "this endpoint takes a client API key, not the admin token")
	}
	// The request's JSON names are the contract's; the rest is filled in.
	req := &outlast.PayoutRequest{}
	if err == nil {
		err = decode(w, r, req)
	}
	req.ClientID, req.IdempotencyKey, req.Channel = p.clientID, r.Header.Get("Idempotency-Key"), s.chooseChannel()
	if err == nil {
		err = req.Validate()
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	po, created, err := createPayout(r.Context(), s.db, req, time.Now().UTC())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/payouts/"+po.ID)
	status := http.StatusCreated
	if !created {
		status = http.StatusOK
		w.Header().Set("Idempotent-Replayed", "true")
	} else {
		s.invalidate(r.Context(), accountKey(po.AccountID))
	}
	writeJSON(w, status, po)
}

// notify verifies a partner's webhook, publishes it and answers 200 at
// once: the seed's "acknowledged" means "published", which is not
// "committed", and with no subscriber listening not even "received". With
// Redis unreachable the PUBLISH fails and the partner gets a 500 and
// retries, so that path loses nothing; the loss is the PUBLISH that
// succeeds while no committer listens.
func (s *Server) notify(w http.ResponseWriter, r *http.Request) {
	n, err := s.readNotification(w, r)
	if err == nil {
		err = s.publishNotification(r.Context(), n)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "accepted"})
}

func (s *Server) readNotification(w http.ResponseWriter, r *http.Request) (*outlast.Notification, error) {
	channel := r.PathValue("channel")
	secret, ok := s.cfg.ChannelSecrets[channel]
	if !ok {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "channel %q not found", channel)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, bodyBytesMax))
	if err != nil {
		return nil, &outlast.Error{Code: outlast.EINVALID, Message: "could not read request body", Err: err}
	}
	now := time.Now()
	if err := outlast.VerifySignature(secret, r.Header.Get(outlast.HeaderTimestamp), r.Header.Get(outlast.HeaderSignature), body, now); err != nil {
		return nil, err
	}
	n := &outlast.Notification{}
	if err := json.Unmarshal(body, n); err != nil {
		return nil, &outlast.Error{Code: outlast.EINVALID, Message: "request body is not an acceptable JSON object", Err: err}
	}
	n.Channel, n.ReceivedAt = channel, now.UTC()
	return n, n.Validate()
}

func (s *Server) getConfig(w http.ResponseWriter, r *http.Request) {
	if err := s.requireAdmin(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	c := s.currentConfig()
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(c.Version, 10)))
	writeJSON(w, http.StatusOK, c)
}

// putConfig publishes a new config document for every instance to apply
// when its subscriber receives it; this instance too. If-Match, when
// sent, must name the version this instance applies. 200 means
// "published", whoever listened.
func (s *Server) putConfig(w http.ResponseWriter, r *http.Request) {
	var c outlast.ControlConfig
	err := s.requireAdmin(r)
	if err == nil {
		err = decode(w, r, &c)
	}
	if err == nil {
		err = c.Validate()
	}
	current := s.currentConfig()
	if h := strings.Trim(r.Header.Get("If-Match"), `" `); err == nil && h != "" {
		if v, perr := strconv.ParseInt(h, 10, 64); perr != nil || v != current.Version {
			err = outlast.StaleConfig(current.Version, v)
		}
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	c.Version, c.UpdatedAt, c.UpdatedBy = current.Version+1, time.Now().UTC(), "admin"
	if err := s.publishConfig(r.Context(), &c); err != nil {
		s.writeError(w, r, outlast.Unavailable(err, 0, "config could not be published"))
		return
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(c.Version, 10)))
	writeJSON(w, http.StatusOK, &c)
}

// readyz needs both the database and Redis: without Redis this design
// can neither commit a notification nor be controlled.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.db.PingContext(ctx); err != nil {
		s.writeError(w, r, outlast.Unavailable(err, 0, "not ready: the database is unreachable"))
		return
	}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		s.writeError(w, r, outlast.Unavailable(err, 0, "not ready: Redis is unreachable"))
		return
	}
	payouts := "accepted"
	if s.currentConfig().Maintenance.On {
		payouts = "paused"
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "payouts": payouts})
}
