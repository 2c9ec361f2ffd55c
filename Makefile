# Convenience targets; the scripts are the source of truth (README).
.PHONY: test test-short test-race bench deps

test:        ## everything, installing test dependencies first
	bash scripts/test.sh

test-short:  ## unit tests only: no Redis, no Node
	go test -short ./...

test-race:
	bash scripts/test-deps.sh && go test -race -shuffle=on -count=1 ./...

bench:
	go test -run XXX -bench . -benchmem ./...

deps:
	bash scripts/test-deps.sh
