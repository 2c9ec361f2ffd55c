package redis_test

import (
	"context"
	"strings"
	"testing"
	"time"

	kap "github.com/kapbridge/kap"
	kapredis "github.com/kapbridge/kap/adapters/redis"
	"github.com/kapbridge/kap/adapters/redis/redistest"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		url   string
		mode  string
		addrs []string
		check func(t *testing.T, r *kapredis.Topology)
	}{
		{url: "redis://127.0.0.1:6379", mode: kapredis.ModeSingle, addrs: []string{"127.0.0.1:6379"}},
		{url: "redis://:pw@10.0.0.1:6380/2", mode: kapredis.ModeSingle, check: func(t *testing.T, r *kapredis.Topology) {
			if r.Single.Password != "pw" || r.Single.DB != 2 || r.Single.Addr != "10.0.0.1:6380" {
				t.Errorf("single = %+v", r.Single)
			}
		}},
		{url: "rediss://redis.example:6379", mode: kapredis.ModeSingle, check: func(t *testing.T, r *kapredis.Topology) {
			if r.Single.TLSConfig == nil {
				t.Error("rediss:// without TLS")
			}
		}},
		{url: "unix:///run/redis.sock", mode: kapredis.ModeSingle},
		{url: "redis://h1:7000,h2:7001,h3:7002", mode: kapredis.ModeCluster, addrs: []string{"h1:7000", "h2:7001", "h3:7002"},
			check: func(t *testing.T, r *kapredis.Topology) {
				if strings.Join(r.Cluster.Addrs, " ") != "h1:7000 h2:7001 h3:7002" {
					t.Errorf("cluster seeds = %v", r.Cluster.Addrs)
				}
			}},
		{url: "redis://u:secret@h1:7000?addr=h2:7001&dial_timeout=3s", mode: kapredis.ModeCluster, check: func(t *testing.T, r *kapredis.Topology) {
			c := r.Cluster
			if len(c.Addrs) != 2 || c.Username != "u" || c.Password != "secret" || c.DialTimeout != 3*time.Second {
				t.Errorf("cluster = %v %q %q %v", c.Addrs, c.Username, c.Password, c.DialTimeout)
			}
		}},
		{url: "redis://cfg.cache.example:6379?cluster=true", mode: kapredis.ModeCluster, addrs: []string{"cfg.cache.example:6379"}},
		{url: "redis://:datapw@s1:26379,s3,s2:26379?master_name=kapmaster&db=1&sentinel_password=sp", mode: kapredis.ModeSentinel,
			addrs: []string{"s1:26379", "s3:26379", "s2:26379"}, check: func(t *testing.T, r *kapredis.Topology) {
				f := r.Failover
				if f.MasterName != "kapmaster" || f.Password != "datapw" || f.SentinelPassword != "sp" || f.DB != 1 ||
					strings.Join(f.SentinelAddrs, " ") != "s1:26379 s3:26379 s2:26379" {
					t.Errorf("failover = %+v", f)
				}
			}},
		{url: "redis://s1:26379/3?master_name=m", mode: kapredis.ModeSentinel, check: func(t *testing.T, r *kapredis.Topology) {
			if r.Failover.DB != 3 {
				t.Errorf("db = %d, want 3", r.Failover.DB)
			}
		}},
	}
	for _, tt := range tests {
		r, err := kapredis.ParseURL(tt.url)
		if err != nil {
			t.Errorf("%s: %v", tt.url, err)
			continue
		}
		if r.Mode != tt.mode {
			t.Errorf("%s: mode %s, want %s", tt.url, r.Mode, tt.mode)
		}
		if tt.addrs != nil && strings.Join(r.Addrs, " ") != strings.Join(tt.addrs, " ") {
			t.Errorf("%s: addrs %v, want %v", tt.url, r.Addrs, tt.addrs)
		}
		if tt.check != nil {
			tt.check(t, r)
		}
	}
}

func TestParseURLErrors(t *testing.T) {
	tests := []struct{ url, want string }{
		{"http://h:1", "must be a redis://"},
		{"redis://", "has no host"},
		{"redis://h1:7000,h2:notaport", "not a valid URL"},
		{"redis://h1:7000,h2:99999,h3:7002", "host 2 has no valid port"},
		{"redis://h1:7000,:7001", "host 2 is not host:port"},
		{"redis://h1:7000,h2:7001/1", "only database 0"},
		{"redis://h:1/x", "database number"},
		{"redis://h:1?cluster=maybe", "cluster must be true or false"},
		{"redis://h:1?cluster=true&master_name=m", "exclude each other"},
		{"redis://h:1?sentinel_password=x", "need master_name"},
		{"redis://:topsecret@h:1?no_such_option=1", "no_such_option"},
		{"redis://h1:1,h2:2?no_such_option=1", "no_such_option"},
		{"redis://h1:1?master_name=m&no_such_option=1", "no_such_option"},
	}
	for _, tt := range tests {
		_, err := kapredis.ParseURL(tt.url)
		if err == nil {
			t.Errorf("%s: no error", tt.url)
			continue
		}
		if is := kap.ErrorIssues(err); kap.ErrorCode(err) != kap.EINVALID || len(is) != 1 || is[0].Path != "redisUrl" {
			t.Errorf("%s: error %s %v, want EINVALID with one redisUrl issue", tt.url, kap.ErrorCode(err), is)
		}
		msg := err.Error()
		if !strings.Contains(msg, "redisUrl") || !strings.Contains(msg, tt.want) {
			t.Errorf("%s: error %q, want redisUrl and %q", tt.url, msg, tt.want)
		}
		if strings.Contains(msg, "topsecret") {
			t.Errorf("%s: the error shows the password: %q", tt.url, msg)
		}
	}
}

// TestOpenURLTopologies opens the store through each URL form against a
// real standalone server, a real 3-master Cluster and a real Sentinel, and
// checks that a one-server URL pointed at a Cluster node is refused.
func TestOpenURLTopologies(t *testing.T) {
	if testing.Short() {
		t.Skip("needs redis-server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	single := redistest.Start(t, redistest.Options{})
	cl := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
	sn := redistest.StartSentinel(t, redistest.SentinelOptions{})
	urls := map[string]string{
		"single":         "redis://" + single.Addr,
		"cluster":        "redis://" + strings.Join(cl.Addrs(), ","),
		"cluster-1-seed": "redis://" + cl.Addrs()[0] + "?cluster=true",
		"sentinel":       "redis://" + sn.Sentinel.Addr + "?master_name=" + redistest.MasterName,
	}
	for name, u := range urls {
		s, err := kapredis.OpenURL(ctx, u, kapredis.Options{})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		// A write and a read through the store's cache (keys spread over
		// the cluster's slots).
		for i := range 20 {
			key := name + "-" + string(rune('a'+i))
			if err := s.Cache().Set(ctx, key, []byte("v"), time.Minute); err != nil {
				t.Errorf("%s: cache set: %v", name, err)
				break
			}
			if v, err := s.Cache().Get(ctx, key); err != nil || string(v) != "v" {
				t.Errorf("%s: cache get = %q %v", name, v, err)
				break
			}
		}
		if err := s.Close(); err != nil {
			t.Errorf("%s: close: %v", name, err)
		}
	}
	if _, err := kapredis.OpenURL(ctx, "redis://"+cl.Addrs()[0], kapredis.Options{}); err == nil || !strings.Contains(err.Error(), "Cluster node") {
		t.Errorf("one-server URL to a cluster node: %v, want a Cluster node error", err)
	}
}
