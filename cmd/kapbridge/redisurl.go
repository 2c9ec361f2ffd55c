package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kapbridge/kap"
	kapredis "github.com/kapbridge/kap/adapters/redis"
)

// Redis topologies a redisUrl selects.
const (
	redisSingle   = "single"
	redisCluster  = "cluster"
	redisSentinel = "sentinel"
)

// redisDialTimeout bounds the first connection of openStore.
const redisDialTimeout = 5 * time.Second

// redisTarget is a parsed redisUrl: which topology, and the go-redis options
// of exactly one of Single, Cluster or Failover.
type redisTarget struct {
	Mode     string
	Single   *goredis.Options
	Cluster  *goredis.ClusterOptions
	Failover *goredis.FailoverOptions
	// Addrs are the addresses given (the server, the cluster seeds or the
	// sentinels).
	Addrs []string
}

// parseRedisURL reads the redisUrl setting (docs/operations.md, "Redis"):
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
// Errors name the setting and the reason, never the URL (it may hold a
// password).
func parseRedisURL(raw string) (*redisTarget, error) {
	bad := func(format string, args ...any) error {
		return kap.Errorf(kap.EINVALID, "redisUrl: "+format, args...)
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
			return nil, bad("%s", redactRedisErr(err, u))
		}
		return &redisTarget{Mode: redisSingle, Single: o, Addrs: []string{o.Addr}}, nil
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
	var addrs []string
	for _, h := range strings.Split(u.Host, ",") {
		addrs = append(addrs, h)
	}
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
	mode := redisSingle
	switch {
	case masterName != "" && forceCluster:
		return nil, bad("master_name (Sentinel) and cluster=true exclude each other")
	case masterName != "":
		mode = redisSentinel
	case forceCluster || len(addrs) > 1:
		mode = redisCluster
	}
	db := strings.Trim(u.Path, "/")
	if db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 {
			return nil, bad("the path must be a database number (/0)")
		} else if n != 0 && mode == redisCluster {
			return nil, bad("Redis Cluster has only database 0")
		}
	}

	// Rebuild a URL in go-redis's own syntax (first address as the host,
	// the others as addr= parameters) and let go-redis parse its options.
	g := url.URL{Scheme: u.Scheme, Host: addrs[0], RawQuery: q.Encode()}
	if mode == redisSingle {
		g.User, g.Path = u.User, u.Path
		o, err := goredis.ParseURL(g.String())
		if err != nil {
			return nil, bad("%s", redactRedisErr(err, u))
		}
		return &redisTarget{Mode: mode, Single: o, Addrs: addrs}, nil
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
	if mode == redisCluster {
		g.User, g.RawQuery = u.User, gq.Encode()
		o, err := goredis.ParseClusterURL(g.String())
		if err != nil {
			return nil, bad("%s", redactRedisErr(err, u))
		}
		return &redisTarget{Mode: mode, Cluster: o, Addrs: addrs}, nil
	}
	gq.Set("master_name", masterName)
	if db != "" && !gq.Has("db") {
		gq.Set("db", db)
	}
	g.RawQuery = gq.Encode()
	o, err := goredis.ParseFailoverURL(g.String())
	if err != nil {
		return nil, bad("%s", redactRedisErr(err, u))
	}
	if user != "" || password != "" {
		o.Username, o.Password = user, password
	}
	o.SentinelUsername, o.SentinelPassword = sentinelUser, sentinelPassword
	return &redisTarget{Mode: mode, Failover: o, Addrs: addrs}, nil
}

// redactRedisErr returns go-redis's parse error without the password.
func redactRedisErr(err error, u *url.URL) string {
	msg := strings.TrimPrefix(err.Error(), "redis: ")
	if u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "***")
		}
	}
	return msg
}

// client returns the go-redis client of the topology.
func (t *redisTarget) client() goredis.UniversalClient {
	switch t.Mode {
	case redisCluster:
		return goredis.NewClusterClient(t.Cluster)
	case redisSentinel:
		return goredis.NewFailoverClient(t.Failover)
	}
	return goredis.NewClient(t.Single)
}

// redisStore is the Redis store with the client openRedis made, which
// Close closes too.
type redisStore struct {
	*kapredis.Store
	c goredis.UniversalClient
}

func (s redisStore) Close() error { return errors.Join(s.Store.Close(), s.c.Close()) }

// openRedis connects to the redisUrl's topology and checks it: the server
// answers, and a one-server URL does not point at a Cluster node (whose
// keys would answer MOVED). Errors are EINVALID for the URL and
// EUNAVAILABLE when Redis does not answer; they name the mode and the
// number of addresses, never the URL.
func openRedis(ctx context.Context, raw string) (kap.Store, error) {
	t, err := parseRedisURL(raw)
	if err != nil {
		return nil, err
	}
	c := t.client()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, &kap.Error{Code: kap.EUNAVAILABLE, Err: err,
			Message: fmt.Sprintf("redis (%s, %d address(es)) does not answer", t.Mode, len(t.Addrs))}
	}
	if t.Mode != redisCluster {
		info, err := c.Info(ctx, "cluster").Result()
		if err == nil && strings.Contains(info, "cluster_enabled:1") {
			c.Close()
			return nil, kap.Errorf(kap.EINVALID, "redisUrl: the server is a Redis Cluster node: list several nodes (redis://h1:p1,h2:p2,h3:p3) or add ?cluster=true")
		}
	}
	return redisStore{Store: kapredis.New(c, kapredis.Options{}), c: c}, nil
}
