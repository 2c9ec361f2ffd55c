package config

import (
	"strings"
	"testing"

	"github.com/kapbridge/kap"
	kapredis "github.com/kapbridge/kap/adapters/redis"
)

// TestValidateRedisURL: kapbridge config reports the redisUrl problems
// serve would (the same parser), without showing the URL.
func TestValidateRedisURL(t *testing.T) {
	for _, raw := range []string{
		"http://h:1",
		"redis://",
		"redis://h1:7000,h2:99999",
		"redis://h1:7000,h2:7001/1",
		"redis://h:1?cluster=true&master_name=m",
		"redis://:topsecret@h:1?no_such_option=1",
	} {
		_, perr := kapredis.ParseURL(raw)
		if perr == nil {
			t.Fatalf("%s: the parser accepts it", raw)
		}
		want := kap.ErrorIssues(perr)
		c := Config{RedisURL: raw}
		c.SetDefaults()
		err := c.Validate(func(string) string { return "" })
		var got []kap.Issue
		for _, is := range kap.ErrorIssues(err) {
			if is.Path == "redisUrl" {
				got = append(got, is)
			}
		}
		if len(got) != 1 || len(want) != 1 || got[0] != want[0] {
			t.Errorf("%s: Validate says %v, the parser %v", raw, got, want)
		}
		if err != nil && strings.Contains(err.Error(), "topsecret") {
			t.Errorf("%s: the error shows the password: %v", raw, err)
		}
	}
	for _, raw := range []string{"redis://127.0.0.1:6379/2", "redis://h1:7000,h2:7001", "redis://s1?master_name=m", "unix:///run/redis.sock"} {
		c := Config{RedisURL: raw}
		c.SetDefaults()
		if err := c.Validate(func(string) string { return "" }); err != nil {
			t.Errorf("%s: %v", raw, err)
		}
	}
}
