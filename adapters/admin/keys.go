package admin

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/targetauth"
	"github.com/kapbridge/kap/internal/config"
)

// --- keys -----------------------------------------------------------------------------

// jwksMaxAge is how long an EHR may cache the JWKS the gateway serves
// (targetauth.JWKSHandler's Cache-Control) plus how long another replica
// may take to re-read the key directory: a key published more recently may
// not be in every cached JWKS yet.
const jwksMaxAge = 300*time.Second + targetauth.ReloadInterval

type keyRow struct {
	KID, Alg, File string
	Active         bool
	Targets        []string
}

// rotation is the rotation section of one smart-backend target of the
// session's tenant.
type rotation struct {
	Target    string
	Alg       string
	Rotatable bool
	Why       string // why the target cannot be rotated here
	Error     string // the directory could not be re-read
	Keys      []rotKey
}

type rotKey struct {
	KID, Alg, File string
	Active         bool
	Published      time.Time
	Young          bool // published less than jwksMaxAge ago
}

// keySet returns the loaded key set whose directory is the target's
// keyFile, nil (and why) when there is none.
func (c *Console) keySet(t config.Target) (*targetauth.KeySet, string) {
	if t.Auth.Type != targetauth.TypeSMARTBackend || t.Auth.KeyFile == "" {
		return nil, "The target does not sign with a private key."
	}
	st, err := os.Stat(t.Auth.KeyFile)
	if err != nil || !st.IsDir() {
		return nil, "The target's auth.keyFile names a file (or a pattern), not a directory. The console rotates keys by " +
			"adding and moving files in the key directory, where every replica re-reads them; set auth.keyFile to the " +
			"directory that holds the PEM file and restart to rotate here."
	}
	dir := filepath.Clean(t.Auth.KeyFile)
	for _, ks := range c.cfg.KeySets {
		if ks != nil && ks.Dir() == dir {
			return ks, ""
		}
	}
	return nil, "The console has not loaded this target's key directory."
}

func (c *Console) keys(w http.ResponseWriter, r *http.Request, s *session) {
	// Re-read the key directories: another replica's console may have
	// rotated since.
	reloadErr := map[*targetauth.KeySet]string{}
	for _, ks := range c.cfg.KeySets {
		if ks != nil && ks.Dir() != "" {
			if err := ks.Reload(); err != nil {
				reloadErr[ks] = kap.ErrorMessage(err)
			}
		}
	}
	var rows []keyRow
	for _, ks := range c.cfg.KeySets {
		if ks == nil {
			continue
		}
		active := ks.Active().ID
		for _, k := range ks.Keys() {
			row := keyRow{KID: k.ID, Alg: k.Alg, File: filepath.Base(k.File), Active: k.ID == active}
			for _, t := range c.cfg.Config.Targets {
				if t.Auth.Type != targetauth.TypeSMARTBackend {
					continue
				}
				if own, _ := c.keySet(t); own != nil {
					if own == ks && row.Active {
						row.Targets = append(row.Targets, t.Name)
					}
				} else if t.Auth.KeyID == k.ID || (t.Auth.KeyID == "" && row.Active) {
					row.Targets = append(row.Targets, t.Name)
				}
			}
			rows = append(rows, row)
		}
	}
	var rots []rotation
	now := c.cfg.Now()
	for _, t := range c.targetsOf(s.Tenant) {
		if t.Auth.Type != targetauth.TypeSMARTBackend || t.Auth.KeyFile == "" {
			continue
		}
		rot := rotation{Target: t.Name}
		ks, why := c.keySet(t)
		if ks == nil {
			rot.Why = why
			rots = append(rots, rot)
			continue
		}
		rot.Rotatable, rot.Alg, rot.Error = true, ks.Alg(), reloadErr[ks]
		active := ks.Active().ID
		for _, k := range ks.Keys() {
			rk := rotKey{KID: k.ID, Alg: k.Alg, File: filepath.Base(k.File), Active: k.ID == active}
			if st, err := os.Stat(k.File); err == nil {
				rk.Published = st.ModTime()
				rk.Young = now.Sub(rk.Published) < jwksMaxAge
			}
			rot.Keys = append(rot.Keys, rk)
		}
		rots = append(rots, rot)
	}
	jwks, _ := json.MarshalIndent(targetauth.PublicJWKS(c.cfg.KeySets...), "", "  ")
	c.render(w, r, http.StatusOK, "keys", s, map[string]any{"Keys": rows, "Rotations": rots, "JWKS": string(jwks),
		"JWKSPath": c.cfg.JWKSPath, "MaxAge": jwksMaxAge.String()})
}

// formKeySet returns the target named in the form (of the session's
// tenant) and its rotatable key set, or answers with why not.
func (c *Console) formKeySet(w http.ResponseWriter, r *http.Request, s *session) (config.Target, *targetauth.KeySet, bool) {
	t, ok := c.formTarget(w, r, s)
	if !ok {
		return t, nil, false
	}
	ks, why := c.keySet(t)
	if ks == nil {
		c.fail(w, r, s, http.StatusUnprocessableEntity, "target "+t.Name+": "+why)
		return t, nil, false
	}
	return t, ks, true
}

// keyError answers a failed rotation step with its reason (never key
// material: the errors name kids and file names only).
func (c *Console) keyError(w http.ResponseWriter, r *http.Request, s *session, err error) {
	status := http.StatusInternalServerError
	switch kap.ErrorCode(err) {
	case kap.EINVALID:
		status = http.StatusUnprocessableEntity
	case kap.ENOTFOUND:
		status = http.StatusNotFound
	case kap.EPRECONDITION, kap.ECONFLICT:
		status = http.StatusConflict
	default:
		c.log.Error("admin key rotation failed", "err", err)
	}
	c.fail(w, r, s, status, kap.ErrorMessage(err))
}

// keyPublish generates a key with the target's alg into its key directory:
// published in the JWKS at once, not signing.
func (c *Console) keyPublish(w http.ResponseWriter, r *http.Request, s *session) {
	t, ks, ok := c.formKeySet(w, r, s)
	if !ok {
		return
	}
	k, err := ks.Publish("")
	if err != nil {
		c.keyError(w, r, s, err)
		return
	}
	c.audit(r, s, "key-publish", map[string]any{"target": t.Name, "kid": k.ID, "alg": k.Alg})
	http.Redirect(w, r, Prefix+"/keys?done=key-published", http.StatusSeeOther)
}

// keyActivate makes a published key the target's signing key.
func (c *Console) keyActivate(w http.ResponseWriter, r *http.Request, s *session) {
	t, ks, ok := c.formKeySet(w, r, s)
	if !ok {
		return
	}
	kid := r.PostFormValue("kid")
	prev := ks.Active().ID
	if err := ks.Activate(kid); err != nil {
		c.keyError(w, r, s, err)
		return
	}
	c.audit(r, s, "key-activate", map[string]any{"target": t.Name, "kid": kid, "previous": prev})
	http.Redirect(w, r, Prefix+"/keys?done=key-activated", http.StatusSeeOther)
}

// keyRetire moves a key that does not sign out of the JWKS.
func (c *Console) keyRetire(w http.ResponseWriter, r *http.Request, s *session) {
	t, ks, ok := c.formKeySet(w, r, s)
	if !ok {
		return
	}
	kid := r.PostFormValue("kid")
	if err := ks.Retire(kid); err != nil {
		c.keyError(w, r, s, err)
		return
	}
	c.audit(r, s, "key-retire", map[string]any{"target": t.Name, "kid": kid})
	http.Redirect(w, r, Prefix+"/keys?done=key-retired", http.StatusSeeOther)
}
