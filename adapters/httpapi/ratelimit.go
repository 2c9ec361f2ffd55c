package httpapi

import (
	"math"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/internal/config"
)

// rateLimit takes one token from the credential's bucket in the store's
// RateLimiter, so the limit holds across every replica on the same backend.
// An empty bucket is a 429 OperationOutcome with Retry-After in whole
// seconds (rounded up). The bucket is per tenant and credential; the
// tenant's rateLimit sets its rate and burst. When the store cannot answer,
// the request goes through (the limit protects capacity, it is not an access
// control) and a warning is logged.
func (s *server) rateLimit(c *gin.Context) {
	tenant := c.GetString(ctxTenant)
	rl := s.limits[tenant]
	if rl == nil {
		c.Next()
		return
	}
	key := "ratelimit/" + tenant + "/" + c.GetString(ctxCredential)
	ok, wait, err := s.cfg.Store.RateLimiter().Allow(c.Request.Context(), key, rl.PerSecond, rl.Burst)
	if err != nil {
		s.log.Warn("rate limiter unavailable; request allowed", "request_id", c.GetString(ctxRequestID),
			"code", kap.ErrorCode(err))
		c.Next()
		return
	}
	if !ok {
		secs := int(math.Ceil(wait.Seconds()))
		if secs < 1 {
			secs = 1
		}
		c.Header("Retry-After", strconv.Itoa(secs))
		s.fail(c, kap.Errorf(kap.ERATELIMIT, "too many requests for this credential: retry after %d s", secs))
		c.Abort()
		return
	}
	c.Next()
}

// tenantLimits returns each configured tenant's rate limit.
func tenantLimits(ts []config.Tenant) map[string]*config.RateLimit {
	out := map[string]*config.RateLimit{}
	for _, t := range ts {
		if t.RateLimit != nil && t.RateLimit.PerSecond > 0 && t.RateLimit.Burst >= 1 {
			rl := *t.RateLimit
			out[t.Name] = &rl
		}
	}
	return out
}
