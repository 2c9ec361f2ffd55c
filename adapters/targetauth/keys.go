package targetauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kapbridge/kap"
)

// The algorithms SMART Backend Services requires a client to support.
const (
	RS384 = "RS384"
	ES384 = "ES384"
)

// Key is one private signing key. Its kid is the RFC 7638 JWK thumbprint
// of the public key (base64url SHA-256), so the same key always has the
// same kid wherever it is loaded.
type Key struct {
	ID     string        // kid
	Alg    string        // RS384 or ES384
	Signer crypto.Signer // *rsa.PrivateKey or *ecdsa.PrivateKey (P-384)
	File   string        // the PEM file it was read from, "" if generated
}

// KeySet holds the private keys of one client registration: the active one
// signs client assertions, and all of them are published in the JWKS, so a
// key can be added and published before it signs and kept published after
// it stopped signing (rotation by kid).
//
// When the set was loaded from one directory (LoadKeys with a directory
// as keyFile), the directory is its state and the set can be changed at
// run time (Publish, Activate, Retire, Reload; see rotate.go).
type KeySet struct {
	mu     sync.RWMutex
	keys   []Key
	active int

	dir        string           // the key directory, "" when not reloadable
	alg        string           // the target's alg, "" for any
	defaultKID string           // the configured keyId (used while no active file exists)
	loaded     time.Time        // when the directory was last read
	now        func() time.Time // clock for reload intervals
}

// GenerateKey returns a new key: ES384 on P-384 or RS384 on 3072-bit RSA.
func GenerateKey(alg string) (Key, error) {
	var s crypto.Signer
	var err error
	switch alg {
	case ES384:
		s, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RS384:
		s, err = rsa.GenerateKey(rand.Reader, 3072)
	default:
		return Key{}, kap.Errorf(kap.EINVALID, "alg: must be RS384 or ES384")
	}
	if err != nil {
		return Key{}, err
	}
	return newKey(s, "")
}

// MarshalPEM returns the private key as a PKCS #8 PEM block.
func (k Key) MarshalPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.Signer)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func newKey(s crypto.Signer, file string) (Key, error) {
	k := Key{Signer: s, File: file}
	switch p := s.(type) {
	case *ecdsa.PrivateKey:
		if p.Curve != elliptic.P384() {
			return Key{}, kap.Errorf(kap.EINVALID, "keyFile %s: an EC key must be on P-384 for ES384", filepath.Base(file))
		}
		k.Alg = ES384
	case *rsa.PrivateKey:
		if p.N.BitLen() < 2048 {
			return Key{}, kap.Errorf(kap.EINVALID, "keyFile %s: an RSA key must have at least 2048 bits", filepath.Base(file))
		}
		k.Alg = RS384
	default:
		return Key{}, kap.Errorf(kap.EINVALID, "keyFile %s: only RSA and EC P-384 private keys are supported", filepath.Base(file))
	}
	k.ID = thumbprint(k.jwk())
	return k, nil
}

// ParsePEM reads one private key (PKCS #8, PKCS #1 RSA or SEC 1 EC PEM).
// file only names the source in errors.
func ParsePEM(data []byte, file string) (Key, error) {
	name := filepath.Base(file)
	block, _ := pem.Decode(data)
	if block == nil {
		return Key{}, kap.Errorf(kap.EINVALID, "keyFile %s: no PEM block", name)
	}
	var s any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		s, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		s, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		s, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return Key{}, kap.Errorf(kap.EINVALID, "keyFile %s: PEM block %q is not a private key", name, block.Type)
	}
	if err != nil {
		return Key{}, kap.Errorf(kap.EINVALID, "keyFile %s: cannot parse the private key", name)
	}
	signer, ok := s.(crypto.Signer)
	if !ok {
		return Key{}, kap.Errorf(kap.EINVALID, "keyFile %s: not a signing key", name)
	}
	return newKey(signer, file)
}

// LoadKeys reads the keys that spec names (see ReadKeys). activeKID
// selects the key that signs; "" is allowed only when there is exactly one
// key. alg, when set, must be the active key's algorithm.
//
// When spec is one directory, the set is reloadable: a file named
// "active" in the directory (written by Activate) names the signing kid and
// wins over activeKID, so a rotation made in the console survives a restart.
func LoadKeys(spec, activeKID, alg string) (*KeySet, error) {
	if dir, ok := keyDir(spec); ok {
		return loadDir(dir, activeKID, alg)
	}
	keys, err := ReadKeys(spec)
	if err != nil {
		return nil, err
	}
	return NewKeySet(keys, activeKID, alg)
}

// ReadKeys reads the private keys that spec names: one file, a directory
// (its *.pem files), a glob ("keys/*.pem") or several of these separated by
// commas, in file-name order. Returns EINVALID naming the file (never its content) when one is
// missing or not a supported key.
func ReadKeys(spec string) ([]Key, error) {
	var files []string
	seen := map[string]bool{}
	for _, pat := range strings.Split(spec, ",") {
		pat = strings.TrimSpace(pat)
		if pat == "" {
			continue
		}
		if st, err := os.Stat(pat); err == nil && st.IsDir() {
			pat = filepath.Join(pat, "*.pem")
		}
		m, err := filepath.Glob(pat)
		if err != nil {
			return nil, kap.Errorf(kap.EINVALID, "keyFile: bad pattern %q", pat)
		}
		if len(m) == 0 {
			return nil, kap.Errorf(kap.EINVALID, "keyFile: no file matches %q", pat)
		}
		for _, f := range m {
			if !seen[f] {
				seen[f] = true
				files = append(files, f)
			}
		}
	}
	if len(files) == 0 {
		return nil, kap.Errorf(kap.EINVALID, "keyFile is required")
	}
	sort.Strings(files)
	var keys []Key
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, &kap.Error{Code: kap.EINVALID, Message: fmt.Sprintf("keyFile %s: cannot read it", filepath.Base(f)), Err: err}
		}
		k, err := ParsePEM(data, f)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// NewKeySet returns a set of keys whose active key is activeKID (or the only
// key when activeKID is ""). Two keys with the same kid are one key.
func NewKeySet(keys []Key, activeKID, alg string) (*KeySet, error) {
	ks := &KeySet{active: -1}
	ids := map[string]bool{}
	for _, k := range keys {
		if ids[k.ID] {
			continue
		}
		ids[k.ID] = true
		ks.keys = append(ks.keys, k)
	}
	switch {
	case len(ks.keys) == 0:
		return nil, kap.Errorf(kap.EINVALID, "keyFile: no keys")
	case activeKID == "" && len(ks.keys) == 1:
		ks.active = 0
	case activeKID == "":
		return nil, kap.Errorf(kap.EINVALID, "keyId: required to choose the signing key among %d keys", len(ks.keys))
	default:
		for i, k := range ks.keys {
			if k.ID == activeKID {
				ks.active = i
			}
		}
		if ks.active < 0 {
			return nil, kap.Errorf(kap.EINVALID, "keyId: no loaded key has kid %q", activeKID)
		}
	}
	if alg != "" && alg != ks.keys[ks.active].Alg {
		return nil, kap.Errorf(kap.EINVALID, "alg: the key %s is %s, not %s", ks.keys[ks.active].ID, ks.keys[ks.active].Alg, alg)
	}
	ks.alg = alg
	return ks, nil
}

// Active returns the signing key.
func (ks *KeySet) Active() Key {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	return ks.keys[ks.active]
}

// Keys returns every key of the set, the active one included.
func (ks *KeySet) Keys() []Key {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	return append([]Key(nil), ks.keys...)
}

// JWK is a public key in JSON Web Key form (RFC 7517/7518).
type JWK struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid,omitempty"`
	Alg    string   `json:"alg,omitempty"`
	Use    string   `json:"use,omitempty"`
	KeyOps []string `json:"key_ops,omitempty"`
	Crv    string   `json:"crv,omitempty"`
	X      string   `json:"x,omitempty"`
	Y      string   `json:"y,omitempty"`
	N      string   `json:"n,omitempty"`
	E      string   `json:"e,omitempty"`
}

// JWKS is a JSON Web Key Set.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

var b64 = base64.RawURLEncoding

// jwk returns the public JWK without kid, alg and use (the thumbprint input).
func (k Key) jwk() JWK {
	switch p := k.Signer.Public().(type) {
	case *ecdsa.PublicKey:
		size := (p.Curve.Params().BitSize + 7) / 8
		return JWK{Kty: "EC", Crv: p.Curve.Params().Name, X: b64.EncodeToString(pad(p.X, size)), Y: b64.EncodeToString(pad(p.Y, size))}
	case *rsa.PublicKey:
		return JWK{Kty: "RSA", N: b64.EncodeToString(p.N.Bytes()), E: b64.EncodeToString(big.NewInt(int64(p.E)).Bytes())}
	}
	return JWK{}
}

// PublicJWK returns the key's public half as published in the JWKS.
func (k Key) PublicJWK() JWK {
	j := k.jwk()
	j.Kid, j.Alg, j.Use, j.KeyOps = k.ID, k.Alg, "sig", []string{"verify"}
	return j
}

func pad(x *big.Int, size int) []byte {
	b := x.Bytes()
	if len(b) >= size {
		return b
	}
	out := make([]byte, size)
	copy(out[size-len(b):], b)
	return out
}

// thumbprint is the RFC 7638 SHA-256 thumbprint: the required members in
// lexicographic order, no whitespace.
func thumbprint(j JWK) string {
	var s string
	switch j.Kty {
	case "EC":
		s = fmt.Sprintf(`{"crv":%q,"kty":"EC","x":%q,"y":%q}`, j.Crv, j.X, j.Y)
	case "RSA":
		s = fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, j.E, j.N)
	}
	sum := sha256.Sum256([]byte(s))
	return b64.EncodeToString(sum[:])
}

// PublicJWKS returns the public keys of the sets, each kid once.
func PublicJWKS(sets ...*KeySet) JWKS {
	out := JWKS{Keys: []JWK{}}
	seen := map[string]bool{}
	for _, ks := range sets {
		if ks == nil {
			continue
		}
		for _, k := range ks.Keys() {
			if !seen[k.ID] {
				seen[k.ID] = true
				out.Keys = append(out.Keys, k.PublicJWK())
			}
		}
	}
	return out
}

// JWKSHandler serves the public keys of the sets as a JWKS
// (application/json) for EHRs that fetch the gateway's keys by URL. It
// serves only public keys and needs no authentication. Sets loaded from a
// directory are re-read at most every ReloadInterval, so a key published by
// another process (or the console) appears here within that time.
func JWKSHandler(sets ...*KeySet) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		for _, ks := range sets {
			if ks != nil {
				ks.reloadIfOlder(r.Context(), ReloadInterval)
			}
		}
		body, err := json.Marshal(PublicJWKS(sets...))
		if err != nil { // cannot happen: strings and slices only
			http.Error(w, "the key set could not be encoded", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Write(body)
	})
}
