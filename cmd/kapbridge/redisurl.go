package main

import (
	"context"
	"time"

	"github.com/kapbridge/kap"
	kapredis "github.com/kapbridge/kap/adapters/redis"
)

// redisDialTimeout bounds the first connection of openStore.
const redisDialTimeout = 5 * time.Second

// openRedis connects to the redisUrl's topology (one server, a Cluster or
// Sentinel: kapredis.ParseURL, docs/operations.md "Redis") and checks it.
// Errors are EINVALID for the URL and EUNAVAILABLE when Redis does not
// answer; they never show the URL.
func openRedis(ctx context.Context, raw string) (kap.Store, error) {
	return kapredis.OpenURL(ctx, raw, kapredis.Options{})
}
