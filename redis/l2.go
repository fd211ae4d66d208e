package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// An entry is a hash {v: value, h: high word, l: low word} with a PEXPIRE.
// The version is split into two 32-bit words because Lua numbers are
// doubles: int64 versions such as UnixNano timestamps would lose their low
// bits and compare equal when they are not. The words are of the version
// with its sign bit flipped, so unsigned comparison orders negative
// versions first, as int64 does.
const (
	fieldValue = "v"
	fieldHigh  = "h"
	fieldLow   = "l"
)

// setScript stores the value only when the new version is greater than the
// stored one, atomically; one key per call, so it runs on Cluster too.
// Returns 1 when stored, 0 when ignored.
var setScript = goredis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'h', 'l')
if cur[1] and cur[2] then
	local oh, ol = tonumber(cur[1]), tonumber(cur[2])
	local nh, nl = tonumber(ARGV[2]), tonumber(ARGV[3])
	if oh > nh or (oh == nh and ol >= nl) then
		return 0
	end
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'h', ARGV[2], 'l', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`)

func splitVersion(v int64) (hi, lo uint32) {
	u := uint64(v) ^ (1 << 63)
	return uint32(u >> 32), uint32(u)
}

func joinVersion(hi, lo uint32) int64 {
	return int64((uint64(hi)<<32 | uint64(lo)) ^ (1 << 63))
}

// Get returns the value and version stored under key; found is false when
// there is none. Errors are Redis failures (connection refused, timeouts).
func (s *Store) Get(ctx context.Context, key string) (value []byte, version int64, found bool, err error) {
	start := time.Now()
	value, version, found, err = s.get(ctx, key)
	switch {
	case err != nil:
		observe(opGet, start, resultOf(err))
	case !found:
		observe(opGet, start, resultMiss)
	default:
		observe(opGet, start, resultOK)
	}
	return value, version, found, err
}

func (s *Store) get(ctx context.Context, key string) ([]byte, int64, bool, error) {
	k, err := s.key(key)
	if err != nil {
		return nil, 0, false, err
	}
	vals, err := s.client.HMGet(ctx, k, fieldValue, fieldHigh, fieldLow).Result()
	if err != nil {
		return nil, 0, false, fmt.Errorf("redis get %q: %w", key, err)
	}
	if len(vals) != 3 || vals[0] == nil {
		return nil, 0, false, nil
	}
	v, ok0 := vals[0].(string)
	h, ok1 := vals[1].(string)
	l, ok2 := vals[2].(string)
	if !ok0 || !ok1 || !ok2 {
		return nil, 0, false, fmt.Errorf("redis get %q: malformed entry", key)
	}
	hi, err1 := strconv.ParseUint(h, 10, 32)
	lo, err2 := strconv.ParseUint(l, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, 0, false, fmt.Errorf("redis get %q: malformed version: %w", key, err)
	}
	return []byte(v), joinVersion(uint32(hi), uint32(lo)), true, nil
}

// Set stores value under key with version for ttl, only if no entry exists
// or the stored version is lower; an equal or older version is ignored
// without error. ttl must be > 0 (a cache entry without expiry would outlive
// any invalidation that got lost) and is rounded up to whole milliseconds.
func (s *Store) Set(ctx context.Context, key string, value []byte, version int64, ttl time.Duration) error {
	start := time.Now()
	stored, err := s.set(ctx, key, value, version, ttl)
	switch {
	case err != nil:
		observe(opSet, start, resultOf(err))
	case !stored:
		observe(opSet, start, resultIgnored)
	default:
		observe(opSet, start, resultOK)
	}
	return err
}

func (s *Store) set(ctx context.Context, key string, value []byte, version int64, ttl time.Duration) (bool, error) {
	k, err := s.key(key)
	if err != nil {
		return false, err
	}
	if ttl <= 0 {
		return false, fmt.Errorf("redis set %q: ttl %s, want > 0", key, ttl)
	}
	if len(value) > s.opts.ValueBytesMax {
		return false, fmt.Errorf("redis set %q: value of %d bytes, at most %d", key, len(value), s.opts.ValueBytesMax)
	}
	ttlMs := (ttl + time.Millisecond - 1).Milliseconds()
	hi, lo := splitVersion(version)
	// Run tries EVALSHA and falls back to EVAL on NOSCRIPT (a restarted or
	// failed-over Redis has an empty script cache).
	n, err := setScript.Run(ctx, s.client, []string{k}, value, hi, lo, ttlMs).Int()
	if err != nil {
		return false, fmt.Errorf("redis set %q: %w", key, err)
	}
	return n == 1, nil
}

// Delete removes key. A later Set with any version stores again.
func (s *Store) Delete(ctx context.Context, key string) error {
	start := time.Now()
	err := s.del(ctx, key)
	observe(opDelete, start, resultOf(err))
	return err
}

func (s *Store) del(ctx context.Context, key string) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	if err := s.client.Del(ctx, k).Err(); err != nil {
		return fmt.Errorf("redis delete %q: %w", key, err)
	}
	return nil
}
