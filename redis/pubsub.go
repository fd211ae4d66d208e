package redis

import (
	"context"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outlast/outlast/internal/backoff"
)

const resubscribeDelayMin = 50 * time.Millisecond

// Publish tells every subscribed instance, this one included, that key
// changed. Delivery is best effort (Redis Pub/Sub keeps nothing for a
// subscriber that is reconnecting), which is why L1 entries also expire.
func (s *Store) Publish(ctx context.Context, key string) error {
	start := time.Now()
	err := s.publish(ctx, key)
	observe(opPublish, start, resultOf(err))
	return err
}

func (s *Store) publish(ctx context.Context, key string) error {
	if len(key) > keyBytesMax {
		return fmt.Errorf("redis publish: key of %d bytes, at most %d", len(key), keyBytesMax)
	}
	if err := s.client.Publish(ctx, s.channel, key).Err(); err != nil {
		return fmt.Errorf("redis publish %q: %w", key, err)
	}
	return nil
}

// Subscribe calls fn for every key published by any instance until ctx ends
// or the Store is closed, then returns nil. It reconnects on its own, with a
// full-jitter backoff capped at ResubscribeDelayMax, so instances that lost
// the same server do not come back together; keys published while it is
// reconnecting are lost (counted in Resubscribes). An idle subscription is
// pinged every PingInterval, so a hung server is left within about two
// intervals. fn runs on Subscribe's goroutine and should be quick: while it
// runs, messages queue in the socket. It returns ErrClosed if the Store is
// already closed.
func (s *Store) Subscribe(ctx context.Context, fn func(key string)) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.subs.Add(1)
	s.mu.Unlock()
	defer s.subs.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.closeCtx, cancel)
	defer stop()

	retry := backoff.New(backoff.Policy{Base: resubscribeDelayMin, Max: s.opts.ResubscribeDelayMax})
	subscribedBefore := false
	for {
		subscribed, err := s.subscribeOnce(ctx, fn, subscribedBefore)
		if ctx.Err() != nil {
			return nil
		}
		Calls.WithLabelValues(opSubscribe, resultOf(err)).Inc()
		if subscribed {
			subscribedBefore = true
			retry.Reset()
		}
		if !retry.Wait(ctx) {
			return nil
		}
	}
}

// subscribeOnce runs one subscription until it fails or ctx ends. It
// reports whether Redis confirmed the subscription before that.
func (s *Store) subscribeOnce(ctx context.Context, fn func(string), resubscribe bool) (subscribed bool, err error) {
	ps := s.client.Subscribe(ctx, s.channel)
	// Closing the PubSub is what interrupts a blocked read when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer func() {
		if stop() {
			_ = ps.Close()
		}
	}()
	pingSent := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, s.opts.PingInterval)
		if err != nil {
			if ctx.Err() != nil {
				return subscribed, ctx.Err()
			}
			if !isTimeout(err) || pingSent {
				return subscribed, fmt.Errorf("redis subscribe: %w", err)
			}
			// Quiet for an interval: ask, and give up if the next interval
			// brings no answer either.
			if err := ps.Ping(ctx); err != nil {
				return subscribed, fmt.Errorf("redis subscribe ping: %w", err)
			}
			pingSent = true
			continue
		}
		pingSent = false
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind == "subscribe" && !subscribed {
				subscribed = true
				if resubscribe {
					Resubscribes.Inc()
				}
			}
		case *goredis.Message:
			InvalidationsReceived.Inc()
			fn(m.Payload)
		default: // *goredis.Pong, and anything a newer server adds
		}
	}
}
