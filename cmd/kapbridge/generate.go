package main

import (
	"context"
	"fmt"
)

func (e *env) generateCmd(_ context.Context, args []string) int {
	fmt.Fprintln(e.stderr, "kapbridge generate: not wired yet")
	return 2
}
