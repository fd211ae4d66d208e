package naive

import (
	"context"
	"encoding/json"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outlast/outlast"
)

// applyTimeout bounds committing one notification.
const applyTimeout = 10 * time.Second

// publishNotification hands n to whichever committers are subscribed now.
// PUBLISH succeeds with no subscriber at all: Redis answers how many
// received it and keeps nothing, and, like the seed's team, nobody looks
// at that count.
func (s *Server) publishNotification(ctx context.Context, n *outlast.Notification) error {
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	return s.rdb.Publish(ctx, notificationsChannel, b).Err()
}

// subscribe hands every message published on channel to handle, one at
// a time, until ctx ends. go-redis reconnects and resubscribes by itself
// after a connection drops; what was published in between never arrives.
// Its defaults also bound the buffer at 100 messages and drop a message
// that waits a minute for room: a committer slower than the webhooks
// loses notifications too.
func (s *Server) subscribe(ctx context.Context, channel string, handle func(payload string)) {
	sub := s.rdb.Subscribe(ctx, channel)
	defer sub.Close()
	msgs := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			handle(m.Payload)
		}
	}
}

// commit applies one published notification. A failure is logged and the
// message is gone: Pub/Sub cannot deliver it again.
func (s *Server) commit(payload string) {
	ctx, cancel := context.WithTimeout(context.Background(), applyTimeout)
	defer cancel()
	var n outlast.Notification
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		s.log.Error("naive: undecodable notification dropped", "err", err)
		return
	}
	res, err := applyNotification(ctx, s.db, &n, time.Now())
	if err != nil {
		s.log.Error("naive: notification not committed and lost", "channel", n.Channel, "event_id", n.EventID, "err", err)
		return
	}
	// Stale and duplicate reports are routine (a late "dispatched"); only
	// what a human would want to know about is logged.
	if res.Outcome == outlast.OutcomeRejected || res.Outcome == outlast.OutcomeConflict {
		s.log.Warn("naive: notification not applied", "channel", n.Channel, "event_id", n.EventID,
			"outcome", res.Outcome, "reason", res.Reason)
	}
	if res.Payout != nil {
		s.invalidate(ctx, payoutKey(res.Payout.ID), accountKey(res.Payout.AccountID))
	}
}

// publishConfig stores c where new instances load it from and tells the
// running ones.
func (s *Server) publishConfig(ctx context.Context, c *outlast.ControlConfig) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := s.rdb.Set(ctx, controlKey, b, 0).Err(); err != nil {
		return err
	}
	return s.rdb.Publish(ctx, controlChannel, b).Err()
}

// loadConfig applies the stored config document; failing, the instance
// keeps the default and waits for the next published one.
func (s *Server) loadConfig(ctx context.Context) {
	b, err := s.rdb.Get(ctx, controlKey).Bytes()
	if err == goredis.Nil {
		return
	}
	if err != nil {
		s.log.Warn("naive: config not loaded; running with the default", "err", err)
		return
	}
	s.applyConfigMessage(string(b))
}

func (s *Server) applyConfigMessage(payload string) {
	var c outlast.ControlConfig
	if err := json.Unmarshal([]byte(payload), &c); err != nil {
		s.log.Error("naive: undecodable config dropped", "err", err)
		return
	}
	s.applyConfig(&c)
	s.log.Info("naive: config applied", "version", c.Version, "maintenance", c.Maintenance.On, "active_channel", c.ActiveChannel)
}
