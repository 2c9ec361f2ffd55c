package main

import (
	"context"
	"fmt"

	"github.com/kapbridge/kap/internal/synth"
)

// generateCmd writes synthetic courses, one JSON record per file, named so
// that sorting the names gives a valid submission order.
func (e *env) generateCmd(_ context.Context, args []string) int {
	fs := newFlags("generate", e.stderr)
	clients := fs.Int("clients", 10, "number of clients")
	seed := fs.Int64("seed", 1, "random seed; the same seed gives the same records")
	out := fs.String("out", "", "output directory (created if missing)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *out == "" || fs.NArg() != 0 {
		fmt.Fprintln(e.stderr, "usage: kapbridge generate --clients N --seed S --out DIR")
		return 2
	}
	recs, err := synth.Generate(synth.Options{Clients: *clients, Seed: *seed})
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge generate:", err)
		return 2
	}
	files, err := synth.WriteDir(*out, recs)
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge generate:", err)
		return 2
	}
	fmt.Fprintf(e.stderr, "kapbridge generate: wrote %d records to %s\n", len(files), *out)
	return 0
}
