package redis

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	kap "github.com/kapbridge/kap"
	goredis "github.com/redis/go-redis/v9"
)

// Redis topologies a redisUrl selects.
const (
	ModeSingle   = "single"
	ModeCluster  = "cluster"
	ModeSentinel = "sentinel"
)

// Topology is a parsed redisUrl: which topology, and the go-redis options
// of exactly one of Single, Cluster or Failover.
type Topology struct {
	Mode     string // ModeSingle, ModeCluster or ModeSentinel
	Single   *goredis.Options
	Cluster  *goredis.ClusterOptions
	Failover *goredis.FailoverOptions
	// Addrs are the addresses given (the server, the cluster seeds or the
	// sentinels).
	Addrs []string
}

// ParseURL reads the redisUrl setting (docs/operations.md, "Redis"):
//
//	redis://[user:password@]host:port[/db]                     one server
//	redis://[user:password@]h1:p1,h2:p2,h3:p3                  Redis Cluster (the seed nodes)
//	redis://[user:password@]host:port?cluster=true             Redis Cluster through one seed
//	redis://[user:password@]s1:p1,s2:p2?master_name=NAME[&db=N] Sentinel (the sentinels)
//
// rediss:// is the same over TLS; unix:///path/redis.sock is one server on a
// socket. Several hosts or go-redis's addr=host:port parameters both add
// seeds. The user and password authenticate to the Redis data nodes;
// sentinels that require their own password take sentinel_username= and
// sentinel_password=. Other query parameters are go-redis options
// (dial_timeout, read_timeout, pool_size, ...); an unknown one is an error.
//
// An error is a *kap.Error (EINVALID) with one issue whose path is
// "redisUrl"; it names the reason, never the URL (it may hold a password).
// It does not connect.
func ParseURL(raw string) (*Topology, error) {
	bad := func(format string, args ...any) error {
		return &kap.Error{Code: kap.EINVALID, Issues: []kap.Issue{{Path: "redisUrl", Reason: fmt.Sprintf(format, args...)}}}
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the URL: do not wrap it.
		return nil, bad("is not a valid URL (redis://host:port, see docs/operations.md)")
	}
	switch u.Scheme {
	case "unix":
		o, err := goredis.ParseURL(raw)
		if err != nil {
			return nil, bad("%s", redactURLErr(err, u))
		}
		return &Topology{Mode: ModeSingle, Single: o, Addrs: []string{o.Addr}}, nil
	case "redis", "rediss":
	default:
		return nil, bad("must be a redis://, rediss:// or unix:// URL")
	}
	if u.Opaque != "" || u.Host == "" {
		return nil, bad("has no host (redis://host:port)")
	}
	if u.Fragment != "" {
		return nil, bad("must not have a #fragment")
	}
	q := u.Query()
	take := func(name string) string {
		v := q.Get(name)
		q.Del(name)
		return v
	}
	masterName := take("master_name")
	sentinelUser, sentinelPassword := take("sentinel_username"), take("sentinel_password")
	clusterFlag := take("cluster")
	forceCluster := false
	if clusterFlag != "" {
		if forceCluster, err = strconv.ParseBool(clusterFlag); err != nil {
			return nil, bad("cluster must be true or false")
		}
	}
	addrs := strings.Split(u.Host, ",")
	addrs = append(addrs, q["addr"]...)
	q.Del("addr")
	for i, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil && !strings.Contains(a, ":") {
			// No port: the Redis default (26379 for sentinels).
			port = "6379"
			if masterName != "" {
				port = "26379"
			}
			host, err = a, nil
			addrs[i] = net.JoinHostPort(host, port)
		}
		if err != nil || host == "" {
			return nil, bad("host %d is not host:port", i+1)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return nil, bad("host %d has no valid port (1-65535)", i+1)
		}
	}
	if (sentinelUser != "" || sentinelPassword != "") && masterName == "" {
		return nil, bad("sentinel_username and sentinel_password need master_name (Sentinel)")
	}
	mode := ModeSingle
	switch {
	case masterName != "" && forceCluster:
		return nil, bad("master_name (Sentinel) and cluster=true exclude each other")
	case masterName != "":
		mode = ModeSentinel
	case forceCluster || len(addrs) > 1:
		mode = ModeCluster
	}
	db := strings.Trim(u.Path, "/")
	if db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 {
			return nil, bad("the path must be a database number (/0)")
		} else if n != 0 && mode == ModeCluster {
			return nil, bad("Redis Cluster has only database 0")
		}
	}

	// Rebuild a URL in go-redis's own syntax (first address as the host,
	// the others as addr= parameters) and let go-redis parse its options.
	g := url.URL{Scheme: u.Scheme, Host: addrs[0], RawQuery: q.Encode()}
	if mode == ModeSingle {
		g.User, g.Path = u.User, u.Path
		o, err := goredis.ParseURL(g.String())
		if err != nil {
			return nil, bad("%s", redactURLErr(err, u))
		}
		return &Topology{Mode: mode, Single: o, Addrs: addrs}, nil
	}
	gq := g.Query()
	for _, a := range addrs[1:] {
		gq.Add("addr", a)
	}
	user, password := "", ""
	if u.User != nil {
		user = u.User.Username()
		password, _ = u.User.Password()
	}
	if mode == ModeCluster {
		g.User, g.RawQuery = u.User, gq.Encode()
		o, err := goredis.ParseClusterURL(g.String())
		if err != nil {
			return nil, bad("%s", redactURLErr(err, u))
		}
		return &Topology{Mode: mode, Cluster: o, Addrs: addrs}, nil
	}
	gq.Set("master_name", masterName)
	if db != "" && !gq.Has("db") {
		gq.Set("db", db)
	}
	g.RawQuery = gq.Encode()
	o, err := goredis.ParseFailoverURL(g.String())
	if err != nil {
		return nil, bad("%s", redactURLErr(err, u))
	}
	if user != "" || password != "" {
		o.Username, o.Password = user, password
	}
	o.SentinelUsername, o.SentinelPassword = sentinelUser, sentinelPassword
	return &Topology{Mode: mode, Failover: o, Addrs: addrs}, nil
}

// redactURLErr returns go-redis's parse error without the password.
func redactURLErr(err error, u *url.URL) string {
	msg := strings.TrimPrefix(err.Error(), "redis: ")
	if u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "***")
		}
	}
	return msg
}

// NewClient returns the go-redis client of the topology (not connected
// yet).
func (t *Topology) NewClient() goredis.UniversalClient {
	switch t.Mode {
	case ModeCluster:
		return goredis.NewClusterClient(t.Cluster)
	case ModeSentinel:
		return goredis.NewFailoverClient(t.Failover)
	}
	return goredis.NewClient(t.Single)
}

// Connect parses raw (ParseURL), connects and checks the topology: the
// server answers, and a one-server URL does not point at a Cluster node
// (whose keys would answer MOVED). Errors are EINVALID for the URL and
// EUNAVAILABLE when Redis does not answer; they name the mode and the
// number of addresses, never the URL. The caller closes the client.
func Connect(ctx context.Context, raw string) (goredis.UniversalClient, *Topology, error) {
	t, err := ParseURL(raw)
	if err != nil {
		return nil, nil, err
	}
	c := t.NewClient()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, nil, &kap.Error{Code: kap.EUNAVAILABLE, Err: err,
			Message: fmt.Sprintf("redis (%s, %d address(es)) does not answer", t.Mode, len(t.Addrs))}
	}
	if t.Mode != ModeCluster {
		info, err := c.Info(ctx, "cluster").Result()
		if err == nil && strings.Contains(info, "cluster_enabled:1") {
			c.Close()
			return nil, nil, &kap.Error{Code: kap.EINVALID, Issues: []kap.Issue{{Path: "redisUrl",
				Reason: "the server is a Redis Cluster node: list several nodes (redis://h1:p1,h2:p2,h3:p3) or add ?cluster=true"}}}
		}
	}
	return c, t, nil
}

// OpenURL connects to raw's topology (Connect) and returns a store that
// closes the client on Close.
func OpenURL(ctx context.Context, raw string, opt Options) (*Store, error) {
	c, _, err := Connect(ctx, raw)
	if err != nil {
		return nil, err
	}
	s := New(c, opt)
	s.owns = true
	return s, nil
}
