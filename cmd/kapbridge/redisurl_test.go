package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kapbridge/kap/adapters/redis/redistest"
)

// The URL forms and their errors are tested in adapters/redis (url_test.go);
// this checks that serve's store opens through the same parser.
func TestOpenRedisStore(t *testing.T) {
	if testing.Short() {
		t.Skip("needs redis-server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := openRedis(ctx, "redis://:topsecret@h:1?no_such_option=1"); err == nil ||
		!strings.Contains(err.Error(), "redisUrl") || strings.Contains(err.Error(), "topsecret") {
		t.Errorf("bad URL: %v", err)
	}
	srv := redistest.Start(t, redistest.Options{})
	s, err := openRedis(ctx, "redis://"+srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Cache().Set(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Error(err)
	}
	if v, err := s.Cache().Get(ctx, "k"); err != nil || string(v) != "v" {
		t.Errorf("get = %q %v", v, err)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}
