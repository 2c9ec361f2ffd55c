package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"

	"github.com/kapbridge/kap/adapters/targetauth"
	"github.com/kapbridge/kap/internal/config"
)

const keysUsage = `usage:
  kapbridge keys generate --alg ES384|RS384 --out DIR
        write a new private key to DIR/<kid>.pem (mode 0600) and print its kid
  kapbridge keys jwks --key-file PATH|GLOB[,...]
        print the public JWKS of the keys (what the gateway serves at jwksPath)
`

// keysCmd manages the private keys of SMART Backend Services
// (docs/target-auth.md).
func (e *env) keysCmd(_ context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, keysUsage)
		return 2
	}
	switch args[0] {
	case "generate":
		return e.keysGenerate(args[1:])
	case "jwks":
		return e.keysJWKS(args[1:])
	}
	fmt.Fprint(e.stderr, keysUsage)
	return 2
}

func (e *env) keysGenerate(args []string) int {
	fl := newFlags("keys generate", e.stderr)
	alg := fl.String("alg", targetauth.ES384, "ES384 (EC P-384) or RS384 (RSA 3072)")
	out := fl.String("out", "", "directory for the PEM file (created 0700 if missing)")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *out == "" || fl.NArg() != 0 || (*alg != targetauth.ES384 && *alg != targetauth.RS384) {
		fmt.Fprint(e.stderr, keysUsage)
		return 2
	}
	k, err := targetauth.GenerateKey(*alg)
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge keys generate:", err)
		return 2
	}
	data, err := k.MarshalPEM()
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge keys generate:", err)
		return 2
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		fmt.Fprintln(e.stderr, "kapbridge keys generate:", err)
		return 2
	}
	path := filepath.Join(*out, k.ID+".pem")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			err = fmt.Errorf("%s exists", path)
		}
		fmt.Fprintln(e.stderr, "kapbridge keys generate:", err)
		return 2
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		fmt.Fprintln(e.stderr, "kapbridge keys generate:", err)
		return 2
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(e.stderr, "kapbridge keys generate:", err)
		return 2
	}
	fmt.Fprintln(e.stdout, k.ID)
	fmt.Fprintf(e.stderr, "kapbridge keys generate: wrote %s (%s); set auth.keyId to the kid printed above to make it sign\n", path, k.Alg)
	return 0
}

func (e *env) keysJWKS(args []string) int {
	fl := newFlags("keys jwks", e.stderr)
	keyFile := fl.String("key-file", "", "PEM private key files: a path, a glob, or several separated by commas")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *keyFile == "" || fl.NArg() != 0 {
		fmt.Fprint(e.stderr, keysUsage)
		return 2
	}
	keys, err := targetauth.ReadKeys(*keyFile)
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge keys jwks:", err)
		return 2
	}
	ks, err := targetauth.NewKeySet(keys, keys[0].ID, "")
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge keys jwks:", err)
		return 2
	}
	out, _ := json.MarshalIndent(targetauth.PublicJWKS(ks), "", "  ")
	fmt.Fprintln(e.stdout, string(out))
	return 0
}

// serveJWKS is the handler of the gateway's public keys for SMART Backend
// Services (docs/target-auth.md); nil when no target uses smart-backend.
func serveJWKS(cfg config.Config) (http.Handler, error) {
	sets, err := targetauth.KeySetsFromConfig(cfg.Targets)
	if err != nil || len(sets) == 0 {
		return nil, err
	}
	return targetauth.JWKSHandler(sets...), nil
}
