package jetstream

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// benchParallelism × GOMAXPROCS goroutines append at once, like partner
// webhooks arriving on many HTTP connections.
const benchParallelism = 32

// BenchmarkAppend measures group-committed appends to the embedded server
// with every write fsync'd (SyncAlways).
func BenchmarkAppend(b *testing.B) {
	cfg := testConfig(b.TempDir())
	l := open(b, cfg)
	ctx := context.Background()
	var next atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Append(ctx, notification(int(next.Add(1)))); err != nil {
				b.Errorf("Append: %v", err)
				return
			}
		}
	})
	b.StopTimer()
	s := l.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "notifications/s")
	if s.Appends > 0 {
		b.ReportMetric(float64(s.NotificationsAppended)/float64(s.Appends), "notifications/msg")
	}
}

// BenchmarkAppendSingle is the peer: what a service without group commit
// does, one synchronous JetStream publish (one fsync'd message) per
// notification, from the same number of goroutines, on the same server.
func BenchmarkAppendSingle(b *testing.B) {
	cfg := testConfig(b.TempDir())
	l := open(b, cfg)
	ctx := context.Background()
	var next atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := notification(int(next.Add(1)))
			data, err := json.Marshal(n)
			if err != nil {
				b.Errorf("encode: %v", err)
				return
			}
			subject := l.subjectBase + ".notifications." + subjectToken(n.Channel)
			if _, err := l.js.Publish(ctx, subject, data, jetstream.WithExpectStream(l.streamName)); err != nil {
				b.Errorf("Publish: %v", err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "notifications/s")
}
