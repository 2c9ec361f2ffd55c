// Command kapbridge is the KAP Bridge gateway and its tools.
//
//	kapbridge map FILE|-                    print the FHIR R4 Bundle for a domain record
//	kapbridge validate FILE|-               validate a domain record, FHIR resource or Bundle
//	kapbridge generate --clients N --seed S --out DIR
//	                                        write a synthetic course, one record per file
//	kapbridge capability                    print the generated CapabilityStatement
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `usage: kapbridge <command> [arguments]

commands:
  map FILE|-         print the FHIR R4 transaction Bundle for a kap/v1 domain record
                     (flags: --tenant ID, --version N)
  validate FILE|-    validate a kap/v1 record, a FHIR R4 resource or a Bundle; prints an
                     OperationOutcome; exit 0 with no errors, 1 with errors
  generate           write synthetic courses (flags: --clients N --seed S --out DIR)
  capability         print the CapabilityStatement generated from what the gateway produces
  claim FILE|-       the payer Claim of a dosing/integration session and its preflight
                     (--payer generic|medicare-j15|example-commercial, --coverage, --intake; docs/payer.md)
  rems FILE|-        the Spravato REMS monitoring-form check of an esketamine session (--format text|html|json|fhir)
  preflight FILE|-   check a Bundle or record against an EHR write profile (--profile epic)
  serve              run the gateway's HTTP API (flags: --config, --addr, --data-dir, --redis-url,
                     --role; see docs/api.md and docs/configuration.md)
  config             check the configuration and print the effective one (same flags as serve)
  hash-key           print the SHA-256 of the API key on stdin (--new: make a new key)
  keys               SMART Backend Services keys: keys generate --alg ES384|RS384 --out DIR,
                     keys jwks --key-file GLOB (docs/target-auth.md)
  help               this text
`

// Run runs one command; it returns the process exit code (0 ok, 1 the input
// has errors, 2 usage or I/O problems).
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	env := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	switch args[0] {
	case "map":
		return env.mapCmd(ctx, args[1:])
	case "validate":
		return env.validateCmd(ctx, args[1:])
	case "generate":
		return env.generateCmd(ctx, args[1:])
	case "capability":
		return env.capabilityCmd(ctx, args[1:])
	case "claim":
		return env.claimCmd(ctx, args[1:])
	case "rems":
		return env.remsCmd(ctx, args[1:])
	case "preflight":
		return env.preflightCmd(ctx, args[1:])
	case "serve":
		return env.serveCmd(ctx, args[1:])
	case "config":
		return env.configCmd(ctx, args[1:])
	case "hash-key":
		return env.hashKeyCmd(ctx, args[1:])
	case "keys":
		return env.keysCmd(ctx, args[1:])
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "kapbridge: unknown command %q\n\n%s", args[0], usage)
	return 2
}

type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// readInput reads FILE or "-" (stdin), bounded in size.
func (e *env) readInput(name string) ([]byte, error) {
	var r io.Reader
	if name == "-" {
		r = e.stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	const max = 64 << 20
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if len(data) > max {
		return nil, fmt.Errorf("input is larger than %d MiB", max>>20)
	}
	return data, nil
}
