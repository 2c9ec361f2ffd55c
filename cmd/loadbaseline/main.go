// Command loadbaseline is the bare-gin baseline of the load test
// (scripts/load.sh): POST /kap/v1/dosing-sessions decodes the same
// dosing-session JSON into kap.DosingSession and answers 201, with nothing
// else (no auth, validation, mapping, store or queue). The ratio of the
// gateway's throughput to this one is the cost of everything the gateway
// does per record.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/kapbridge/kap"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	flag.Parse()
	gin.SetMode(gin.ReleaseMode)
	srv := &http.Server{Addr: *addr, Handler: handler(), ReadHeaderTimeout: 10 * time.Second}
	slog.Info("loadbaseline listening", "addr", *addr)
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "loadbaseline:", err)
		os.Exit(1)
	}
}

func handler() http.Handler {
	r := gin.New()
	r.POST("/kap/v1/dosing-sessions", func(c *gin.Context) {
		var ds kap.DosingSession
		if err := json.NewDecoder(c.Request.Body).Decode(&ds); err != nil {
			c.JSON(http.StatusBadRequest, gin.H{"error": "malformed JSON"})
			return
		}
		c.JSON(http.StatusCreated, gin.H{"kind": ds.Kind, "id": ds.ID})
	})
	return r
}
