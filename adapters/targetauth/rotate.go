package targetauth

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kapbridge/kap"
)

// Key rotation on a key directory.
//
// A target whose keyFile is a directory keeps its whole key state on disk:
// every *.pem file in it is published in the JWKS, the file named
// ActiveFile names the kid that signs (when it is missing, the configured
// keyId, or the only key), and retired keys are moved to the RetiredDir
// subfolder, which is never read. Every process that loaded the directory
// (console, JWKS handler, delivery workers, other replicas) sees a change
// by re-reading it: before every token request and, for the JWKS, at most
// every ReloadInterval. Files are written to a temporary name and renamed,
// so a reader never sees half a key or half a kid.
//
// The order is what keeps EHRs that cache the JWKS working: Publish adds a
// key that does not sign; Activate makes a published key sign (the previous
// one stays published); Retire removes a key that no longer signs.
const (
	ActiveFile     = "active"
	RetiredDir     = "retired"
	ReloadInterval = 10 * time.Second
)

// keyDir reports whether spec names exactly one directory.
func keyDir(spec string) (string, bool) {
	spec = strings.TrimSpace(spec)
	if spec == "" || strings.Contains(spec, ",") {
		return "", false
	}
	st, err := os.Stat(spec)
	if err != nil || !st.IsDir() {
		return "", false
	}
	return filepath.Clean(spec), true
}

func loadDir(dir, defaultKID, alg string) (*KeySet, error) {
	ks := &KeySet{dir: dir, alg: alg, defaultKID: defaultKID, now: time.Now, active: -1}
	if err := ks.Reload(); err != nil {
		return nil, err
	}
	return ks, nil
}

// Dir returns the key directory of a reloadable set, "" when the set was
// loaded from files or a glob (and cannot be rotated at run time).
func (ks *KeySet) Dir() string { return ks.dir }

// Alg returns the algorithm of new keys: the target's alg, or the active
// key's when the target sets none.
func (ks *KeySet) Alg() string {
	if ks.alg != "" {
		return ks.alg
	}
	return ks.Active().Alg
}

// Reload re-reads the key directory. On any error (a key that does not
// parse, an active file naming a kid that is not there) the set keeps what
// it had and the error says why; the signing key never silently changes to
// one that is not published.
func (ks *KeySet) Reload() error {
	if ks.dir == "" {
		return nil
	}
	keys, err := ReadKeys(ks.dir)
	if err != nil {
		return err
	}
	kid := ks.defaultKID
	if b, err := os.ReadFile(filepath.Join(ks.dir, ActiveFile)); err == nil {
		kid = strings.TrimSpace(string(b))
		if kid == "" {
			return kap.Errorf(kap.EINVALID, "keyFile %s: the %s file is empty", filepath.Base(ks.dir), ActiveFile)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return &kap.Error{Code: kap.EINVALID, Message: fmt.Sprintf("keyFile %s: cannot read the %s file", filepath.Base(ks.dir), ActiveFile), Err: err}
	}
	fresh, err := NewKeySet(keys, kid, ks.alg)
	if err != nil {
		return err
	}
	ks.mu.Lock()
	ks.keys, ks.active = fresh.keys, fresh.active
	ks.loaded = ks.clock()
	ks.mu.Unlock()
	return nil
}

func (ks *KeySet) clock() time.Time {
	if ks.now == nil {
		return time.Now()
	}
	return ks.now()
}

// reloadIfOlder re-reads the directory when it was last read more than d
// ago (d = 0: always). A failed reload is logged (the directory and the
// reason, never key material) and the set keeps its keys.
func (ks *KeySet) reloadIfOlder(ctx context.Context, d time.Duration) {
	if ks.dir == "" {
		return
	}
	ks.mu.RLock()
	fresh := d > 0 && ks.clock().Sub(ks.loaded) < d
	ks.mu.RUnlock()
	if fresh {
		return
	}
	if err := ks.Reload(); err != nil {
		slog.Default().LogAttrs(ctx, slog.LevelWarn, "key directory reload failed; keeping the loaded keys",
			slog.String("dir", filepath.Base(ks.dir)), slog.String("error", err.Error()))
	}
}

func (ks *KeySet) rotatable() error {
	if ks.dir == "" {
		return kap.Errorf(kap.EPRECONDITION, "keyFile: rotation needs keyFile to be a directory")
	}
	return nil
}

// Publish generates a new key (alg "" means Alg()), writes it into the
// directory as <kid>.pem (mode 0600) and reloads: the key is published in
// the JWKS at once and does not sign until Activate.
func (ks *KeySet) Publish(alg string) (Key, error) {
	if err := ks.rotatable(); err != nil {
		return Key{}, err
	}
	if alg == "" {
		alg = ks.Alg()
	}
	if ks.alg != "" && alg != ks.alg {
		return Key{}, kap.Errorf(kap.EINVALID, "alg: the target signs with %s, not %s", ks.alg, alg)
	}
	// Pin the signing key first: with no active file and no keyId, a
	// second key would leave the set without a choice.
	active := filepath.Join(ks.dir, ActiveFile)
	if _, err := os.Stat(active); errors.Is(err, fs.ErrNotExist) {
		if err := writeAtomic(active, []byte(ks.Active().ID+"\n")); err != nil {
			return Key{}, err
		}
	}
	k, err := GenerateKey(alg)
	if err != nil {
		return Key{}, err
	}
	data, err := k.MarshalPEM()
	if err != nil {
		return Key{}, err
	}
	k.File = filepath.Join(ks.dir, k.ID+".pem")
	if err := writeAtomic(k.File, data); err != nil {
		return Key{}, err
	}
	return k, ks.Reload()
}

// Activate makes the published key kid the signing key: it writes the
// active file and reloads. The previous key stays published.
func (ks *KeySet) Activate(kid string) error {
	if err := ks.rotatable(); err != nil {
		return err
	}
	if err := ks.Reload(); err != nil {
		return err
	}
	k, ok := ks.find(kid)
	if !ok {
		return kap.Errorf(kap.ENOTFOUND, "kid: no published key has this kid")
	}
	if ks.alg != "" && k.Alg != ks.alg {
		return kap.Errorf(kap.EINVALID, "kid: the key is %s and the target signs with %s", k.Alg, ks.alg)
	}
	if err := writeAtomic(filepath.Join(ks.dir, ActiveFile), []byte(kid+"\n")); err != nil {
		return err
	}
	return ks.Reload()
}

// Retire moves the key kid, which must not be the signing key, into the
// retired subfolder and reloads: it leaves the JWKS. The file is kept
// (mode unchanged) so a mistaken retirement can be undone by moving it back.
func (ks *KeySet) Retire(kid string) error {
	if err := ks.rotatable(); err != nil {
		return err
	}
	if err := ks.Reload(); err != nil {
		return err
	}
	k, ok := ks.find(kid)
	if !ok {
		return kap.Errorf(kap.ENOTFOUND, "kid: no published key has this kid")
	}
	if ks.Active().ID == kid {
		return kap.Errorf(kap.EPRECONDITION, "kid: the signing key cannot be retired; make another key the signing key first")
	}
	rdir := filepath.Join(ks.dir, RetiredDir)
	if err := os.MkdirAll(rdir, 0o700); err != nil {
		return &kap.Error{Code: kap.EINTERNAL, Message: "keyFile: cannot create the retired folder", Err: err}
	}
	dst := filepath.Join(rdir, filepath.Base(k.File))
	if _, err := os.Stat(dst); err == nil {
		dst = filepath.Join(rdir, fmt.Sprintf("%s.%d", filepath.Base(k.File), ks.clock().UnixNano()))
	}
	if err := os.Rename(k.File, dst); err != nil {
		return &kap.Error{Code: kap.EINTERNAL, Message: "keyFile: cannot move the key to the retired folder", Err: err}
	}
	if err := ks.Reload(); err != nil {
		// Typically another process made it the signing key meanwhile:
		// put it back rather than leave a signing key unpublished.
		if os.Rename(dst, k.File) == nil {
			ks.Reload()
		}
		return &kap.Error{Code: kap.ECONFLICT, Message: "kid: the key directory did not load without this key (" +
			kap.ErrorMessage(err) + "); the key was put back, not retired", Err: err}
	}
	return nil
}

func (ks *KeySet) find(kid string) (Key, bool) {
	for _, k := range ks.Keys() {
		if k.ID == kid {
			return k, true
		}
	}
	return Key{}, false
}

// writeAtomic writes data to path with mode 0600 through a temporary file
// in the same directory (not matching *.pem) and a rename.
func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return &kap.Error{Code: kap.EINTERNAL, Message: "keyFile: cannot write " + filepath.Base(path), Err: err}
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return &kap.Error{Code: kap.EINTERNAL, Message: "keyFile: cannot write " + filepath.Base(path), Err: err}
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
