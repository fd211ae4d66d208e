package redis

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Default ports filled in when an address in a URL has none.
const (
	defaultRedisPort    = "6379"
	defaultSentinelPort = "26379"
	addrsMax            = 64 // a seed list longer than this is a typo, not a deployment
)

// ParseURL turns a --redis URL into go-redis options with this package's
// short timeouts applied (see Options; the go-redis 5 s defaults are never
// left in place). The accepted forms are:
//
//	redis://[[user]:pass@]host[:port][/db]          single node
//	rediss://[[user]:pass@]host[:port][/db]         single node over TLS
//	redis-sentinel://[[user:]pass@]host1[:port],host2[:port]/mastername[?db=N&sentinel_password=P]
//	rediss-sentinel://…                             Sentinel, master and replicas over TLS
//	redis-cluster://[[user:]pass@]host1[:port],host2[:port]
//	rediss-cluster://…                              Cluster over TLS
//
// A userinfo without a colon ("pass@") is a password, as in redis-cli. In the
// Sentinel form the password is for the master and replicas; sentinels that
// require their own password take sentinel_password. Missing ports default to
// 6379 (26379 for sentinels). Unknown query parameters are an error, so a
// typo cannot silently fall back to a default.
func ParseURL(s string) (*goredis.UniversalOptions, error) {
	o, err := parseURL(s)
	if err != nil {
		return nil, err
	}
	Options{}.apply(o)
	return o, nil
}

// rawURL is a URL split by hand: net/url rejects the comma-separated host
// lists of the Sentinel and Cluster forms.
type rawURL struct {
	scheme, user, pass string
	hosts              []string
	path               string
	query              url.Values
}

func parseURL(s string) (*goredis.UniversalOptions, error) {
	r, err := splitURL(s)
	if err != nil {
		return nil, err
	}
	base, tlsOn := strings.CutPrefix(r.scheme, "rediss")
	if !tlsOn {
		base = strings.TrimPrefix(r.scheme, "redis")
	}
	o := &goredis.UniversalOptions{Username: r.user, Password: r.pass}
	switch base {
	case "":
		err = parseSingle(r, o)
	case "-sentinel":
		err = parseSentinel(r, o)
	case "-cluster":
		err = parseCluster(r, o)
	default:
		err = fmt.Errorf("unknown scheme %q (want redis, rediss, redis-sentinel, redis-cluster)", r.scheme)
	}
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	if tlsOn {
		// ServerName stays empty so crypto/tls checks each node against the
		// host it dials: sentinels, the master they name and cluster nodes
		// are all different hosts.
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return o, nil
}

func splitURL(s string) (rawURL, error) {
	var r rawURL
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return r, fmt.Errorf("redis url: missing scheme in %q", redact(s))
	}
	r.scheme = strings.ToLower(scheme)
	rest, rawQuery, _ := strings.Cut(rest, "?")
	authority, path, _ := strings.Cut(rest, "/")
	r.path = path
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return r, fmt.Errorf("redis url: query: %w", err)
	}
	r.query = q
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		if r.user, r.pass, err = splitUserinfo(authority[:i]); err != nil {
			return r, err
		}
		authority = authority[i+1:]
	}
	defPort := defaultRedisPort
	if strings.HasSuffix(r.scheme, "-sentinel") {
		defPort = defaultSentinelPort
	}
	r.hosts, err = splitHosts(authority, defPort)
	return r, err
}

func splitUserinfo(ui string) (user, pass string, err error) {
	u, p, hasColon := strings.Cut(ui, ":")
	if !hasColon {
		u, p = "", u // "pass@": redis-cli treats a lone userinfo as the password
	}
	if user, err = url.PathUnescape(u); err != nil {
		return "", "", fmt.Errorf("redis url: user: %w", err)
	}
	if pass, err = url.PathUnescape(p); err != nil {
		return "", "", fmt.Errorf("redis url: password: %w", err)
	}
	return user, pass, nil
}

func splitHosts(authority, defPort string) ([]string, error) {
	if authority == "" {
		return nil, fmt.Errorf("redis url: no host")
	}
	parts := strings.Split(authority, ",")
	if len(parts) > addrsMax {
		return nil, fmt.Errorf("redis url: %d hosts, at most %d", len(parts), addrsMax)
	}
	hosts := make([]string, 0, len(parts))
	for _, h := range parts {
		host, port, err := net.SplitHostPort(h)
		if err != nil { // no port: "host" or "[::1]"
			host, port = strings.Trim(h, "[]"), defPort
		}
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
			return nil, fmt.Errorf("redis url: bad port in %q", h)
		}
		if host == "" {
			return nil, fmt.Errorf("redis url: empty host in %q", authority)
		}
		hosts = append(hosts, net.JoinHostPort(host, port))
	}
	return hosts, nil
}

func parseSingle(r rawURL, o *goredis.UniversalOptions) error {
	if len(r.hosts) != 1 {
		return fmt.Errorf("%s takes one host, got %d (use redis-cluster:// or redis-sentinel://)", r.scheme, len(r.hosts))
	}
	o.Addrs = r.hosts
	if r.path != "" {
		db, err := parseDB(r.path)
		if err != nil {
			return err
		}
		o.DB = db
	}
	return noQuery(r.query)
}

func parseSentinel(r rawURL, o *goredis.UniversalOptions) error {
	o.Addrs = r.hosts
	o.MasterName = strings.TrimSuffix(r.path, "/")
	if o.MasterName == "" || strings.Contains(o.MasterName, "/") {
		return fmt.Errorf("%s needs exactly one master name as the path, got %q", r.scheme, r.path)
	}
	if db := r.query.Get("db"); db != "" {
		n, err := parseDB(db)
		if err != nil {
			return err
		}
		o.DB = n
	}
	o.SentinelPassword = r.query.Get("sentinel_password")
	r.query.Del("db")
	r.query.Del("sentinel_password")
	return noQuery(r.query)
}

func parseCluster(r rawURL, o *goredis.UniversalOptions) error {
	o.Addrs = r.hosts
	o.IsClusterMode = true // with a single seed address go-redis would otherwise pick a plain client
	if p := strings.TrimSuffix(r.path, "/"); p != "" && p != "0" {
		return fmt.Errorf("cluster has only database 0, got path %q", r.path)
	}
	return noQuery(r.query)
}

func parseDB(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSuffix(s, "/"))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad database number %q", s)
	}
	return n, nil
}

func noQuery(q url.Values) error {
	for k := range q {
		return fmt.Errorf("unknown query parameter %q", k)
	}
	return nil
}

// redact hides a password in s so it can go into an error or a log line.
func redact(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		if i := strings.LastIndex(s, "@"); i >= 0 {
			return "xxx" + s[i:]
		}
		return s
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		return scheme + "://xxx" + rest[i:]
	}
	return s
}

// disabledMaintNotifications skips the CLIENT MAINT_NOTIFICATIONS handshake:
// it is a Redis Enterprise/Cloud feature, and on open-source Redis it costs
// a failed round trip on every new connection.
var disabledMaintNotifications = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
