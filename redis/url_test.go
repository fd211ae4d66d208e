package redis

import (
	"math"
	"slices"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		url       string
		addrs     []string
		db        int
		master    string
		cluster   bool
		user      string
		pass      string
		sentPass  string
		tls       bool
		clientTyp string // "client" or "cluster"
	}{
		{url: "redis://127.0.0.1:6379", addrs: []string{"127.0.0.1:6379"}, clientTyp: "client"},
		{url: "redis://localhost", addrs: []string{"localhost:6379"}, clientTyp: "client"},
		{url: "redis://u:p%40ss@h:7000/3", addrs: []string{"h:7000"}, db: 3, user: "u", pass: "p@ss", clientTyp: "client"},
		{url: "redis://secret@h:7000/", addrs: []string{"h:7000"}, pass: "secret", clientTyp: "client"},
		{url: "redis://:secret@[::1]:7000/2", addrs: []string{"[::1]:7000"}, db: 2, pass: "secret", clientTyp: "client"},
		{url: "rediss://u:p@cache.example.com:6380/1", addrs: []string{"cache.example.com:6380"}, db: 1, user: "u", pass: "p", tls: true, clientTyp: "client"},
		{url: "redis-sentinel://s1:26379,s2:26380,s3/mymaster?db=4", addrs: []string{"s1:26379", "s2:26380", "s3:26379"},
			master: "mymaster", db: 4, clientTyp: "client"},
		{url: "redis-sentinel://pw@s1:26379/m?sentinel_password=sp", addrs: []string{"s1:26379"}, master: "m", pass: "pw", sentPass: "sp", clientTyp: "client"},
		{url: "rediss-sentinel://s1:26379/m", addrs: []string{"s1:26379"}, master: "m", tls: true, clientTyp: "client"},
		{url: "redis-cluster://n1:7000,n2:7001", addrs: []string{"n1:7000", "n2:7001"}, cluster: true, clientTyp: "cluster"},
		{url: "redis-cluster://n1:7000", addrs: []string{"n1:7000"}, cluster: true, clientTyp: "cluster"},
		{url: "rediss-cluster://u:p@n1:7000,n2", addrs: []string{"n1:7000", "n2:6379"}, cluster: true, user: "u", pass: "p", tls: true, clientTyp: "cluster"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			o, err := ParseURL(tt.url)
			if err != nil {
				t.Fatalf("ParseURL(%q) error: %v", tt.url, err)
			}
			if !slices.Equal(o.Addrs, tt.addrs) || o.DB != tt.db || o.MasterName != tt.master || o.IsClusterMode != tt.cluster {
				t.Errorf("ParseURL(%q) = addrs %v db %d master %q cluster %v, want %v %d %q %v",
					tt.url, o.Addrs, o.DB, o.MasterName, o.IsClusterMode, tt.addrs, tt.db, tt.master, tt.cluster)
			}
			if o.Username != tt.user || o.Password != tt.pass || o.SentinelPassword != tt.sentPass {
				t.Errorf("ParseURL(%q) credentials = %q/%q/%q, want %q/%q/%q",
					tt.url, o.Username, o.Password, o.SentinelPassword, tt.user, tt.pass, tt.sentPass)
			}
			if (o.TLSConfig != nil) != tt.tls {
				t.Errorf("ParseURL(%q) TLS = %v, want %v", tt.url, o.TLSConfig != nil, tt.tls)
			}
			checkShortTimeouts(t, o)
			c := goredis.NewUniversalClient(o)
			defer c.Close()
			switch c.(type) {
			case *goredis.Client:
				if tt.clientTyp != "client" {
					t.Errorf("client for %q is %T, want %s", tt.url, c, tt.clientTyp)
				}
			case *goredis.ClusterClient:
				if tt.clientTyp != "cluster" {
					t.Errorf("client for %q is %T, want %s", tt.url, c, tt.clientTyp)
				}
			default:
				t.Errorf("client for %q is %T", tt.url, c)
			}
		})
	}
}

func checkShortTimeouts(t *testing.T, o *goredis.UniversalOptions) {
	t.Helper()
	if o.DialTimeout != DefaultDialTimeout || o.ReadTimeout != DefaultReadTimeout ||
		o.WriteTimeout != DefaultWriteTimeout || o.PoolTimeout != DefaultPoolTimeout ||
		o.PoolSize != DefaultPoolSize || o.ConnMaxIdleTime != DefaultConnMaxIdleTime {
		t.Errorf("timeouts = dial %s read %s write %s pool %s size %d idle %s, want the package defaults",
			o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout, o.PoolSize, o.ConnMaxIdleTime)
	}
	if o.MaxRetries != -1 || o.DialerRetries != 1 || !o.ContextTimeoutEnabled {
		t.Errorf("retries = %d, dialer retries = %d, context timeouts %v; want -1, 1, true",
			o.MaxRetries, o.DialerRetries, o.ContextTimeoutEnabled)
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, u := range []string{
		"",
		"127.0.0.1:6379",
		"http://h:1",
		"redis://",
		"redis://h1:1,h2:2",         // several hosts need the cluster or sentinel form
		"redis://h:1/x",             // bad db
		"redis://h:1/-1",            // bad db
		"redis://h:99999",           // bad port
		"redis://h:port",            // bad port
		"redis://h:1?dial_timout=1", // unknown parameter
		"redis-sentinel://s1,s2",    // no master name
		"redis-sentinel://s1/a/b",   // two path elements
		"redis-sentinel://s1/m?db=x",
		"redis-sentinel://s1/m?foo=1",
		"redis-cluster://n1/1", // cluster has only db 0
		"redis-cluster://n1?x=1",
		"redis-foo://h:1",
	} {
		if o, err := ParseURL(u); err == nil {
			t.Errorf("ParseURL(%q) = %+v, want error", u, o)
		}
	}
}

func TestParseURLRedactsPassword(t *testing.T) {
	_, err := ParseURL("topsecret@h:1")
	if err == nil || strings.Contains(err.Error(), "topsecret") {
		t.Errorf("ParseURL error = %v, want an error without the password", err)
	}
}

func TestVersionWordsKeepOrder(t *testing.T) {
	vs := []int64{math.MinInt64, -1 << 53, -2, -1, 0, 1, 2, 1<<53 - 1, 1 << 53, 1<<53 + 1, 1<<62 + 1, math.MaxInt64 - 1, math.MaxInt64}
	for i, v := range vs {
		hi, lo := splitVersion(v)
		if got := joinVersion(hi, lo); got != v {
			t.Errorf("joinVersion(splitVersion(%d)) = %d", v, got)
		}
		if i == 0 {
			continue
		}
		ph, pl := splitVersion(vs[i-1])
		if !(ph < hi || (ph == hi && pl < lo)) {
			t.Errorf("words of %d (%d,%d) not above those of %d (%d,%d)", v, hi, lo, vs[i-1], ph, pl)
		}
	}
}
