package targetauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/internal/config"
)

// AssertionType is the client_assertion_type of private_key_jwt.
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// AssertionLifetime is the exp - iat of a client assertion; SMART Backend
// Services allows at most five minutes.
const AssertionLifetime = 5 * time.Minute

// DefaultTokenLifetime is assumed when a token response has no expires_in.
const DefaultTokenLifetime = 5 * time.Minute

const maxTokenResponse = 1 << 20

// TokenError is a failed token request. Its text names the target, the
// HTTP status and the OAuth error code; never a token, secret or assertion.
type TokenError struct {
	Target string
	Status int    // 0 when no response came
	Code   string // the OAuth "error" code, e.g. invalid_client; "" if none
	Err    error  // the cause (transport errors), for logs
}

func (e *TokenError) Error() string {
	msg := "targetauth: token request for target " + e.Target + " failed"
	if e.Status != 0 {
		msg += ": HTTP " + strconv.Itoa(e.Status)
	}
	if e.Code != "" {
		msg += " " + e.Code
	}
	if e.Status == 0 && e.Err != nil {
		msg += ": " + safeCause(e.Err)
	}
	return msg
}

func (e *TokenError) Unwrap() error { return e.Err }

// Permanent reports whether retrying will not help until the configuration
// changes (the server refused the client or its grant).
func (e *TokenError) Permanent() bool {
	switch e.Code {
	case "invalid_client", "unauthorized_client", "invalid_scope", "unsupported_grant_type", "invalid_grant":
		return true
	}
	return false
}

// safeCause describes a transport error without its URL.
func safeCause(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	if errors.Is(err, context.Canceled) {
		return "cancelled"
	}
	return err.Error()
}

// token is an access token and when to stop using it.
type token struct {
	Value     string    `json:"access_token"`
	Expiry    time.Time `json:"expires_at"`
	RefreshAt time.Time `json:"refresh_at"` // Expiry minus the skew
}

// oauth gets client_credentials tokens (basic or smart-backend) and adds
// them to requests.
type oauth struct {
	cfg      config.TargetAuth
	opts     Options
	base     http.RoundTripper
	client   *http.Client
	secret   string
	keys     *KeySet
	cacheKey string

	mu      sync.Mutex // one token request at a time
	cur     atomic.Pointer[token]
	fetches atomic.Int64
}

var (
	_ Refresher         = (*oauth)(nil)
	_ http.RoundTripper = (*oauth)(nil)
)

func newOAuth(cfg config.TargetAuth, opts Options, base http.RoundTripper) (*oauth, error) {
	var errs []error
	if cfg.TokenURL == "" {
		errs = append(errs, kap.Errorf(kap.EINVALID, "auth.tokenUrl is required for %s", cfg.Type))
	} else if u, err := url.Parse(cfg.TokenURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, kap.Errorf(kap.EINVALID, "auth.tokenUrl: must be an absolute http(s) URL"))
	}
	if cfg.ClientID == "" {
		errs = append(errs, kap.Errorf(kap.EINVALID, "auth.clientId is required for %s", cfg.Type))
	}
	o := &oauth{cfg: cfg, opts: opts, base: base}
	switch cfg.Type {
	case TypeBasic:
		if cfg.SecretEnv == "" {
			errs = append(errs, kap.Errorf(kap.EINVALID, "auth.secretEnv is required for basic"))
		} else if o.secret = opts.Getenv(cfg.SecretEnv); o.secret == "" {
			errs = append(errs, kap.Errorf(kap.EINVALID, "auth.secretEnv: the environment variable %s is not set", cfg.SecretEnv))
		}
	case TypeSMARTBackend:
		o.keys = opts.Keys
		if o.keys == nil && cfg.KeyFile == "" && cfg.SecretEnv != "" {
			// SMART's symmetric confidential client: the secret in Basic.
			if o.secret = opts.Getenv(cfg.SecretEnv); o.secret == "" {
				errs = append(errs, kap.Errorf(kap.EINVALID, "auth.secretEnv: the environment variable %s is not set", cfg.SecretEnv))
			}
			break
		}
		if o.keys == nil {
			ks, err := LoadKeys(cfg.KeyFile, cfg.KeyID, cfg.Alg)
			if err != nil {
				errs = append(errs, err)
			}
			o.keys = ks
		} else if cfg.Alg != "" && o.keys.Active().Alg != cfg.Alg {
			errs = append(errs, kap.Errorf(kap.EINVALID, "auth.alg: the active key is %s, not %s", o.keys.Active().Alg, cfg.Alg))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	o.client = &http.Client{
		Transport: base,
		// A token endpoint that redirects gets no second POST of the
		// credentials to wherever it points.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	sum := sha256.Sum256([]byte(cfg.Type + "\x00" + cfg.TokenURL + "\x00" + cfg.ClientID + "\x00" + cfg.Scope))
	o.cacheKey = "targetauth:token:" + opts.Target + ":" + hex.EncodeToString(sum[:16])
	return o, nil
}

// RoundTrip adds the access token to a copy of r.
func (o *oauth) RoundTrip(r *http.Request) (*http.Response, error) {
	t, err := o.token(r.Context())
	if err != nil {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, err
	}
	r2 := r.Clone(r.Context())
	r2.Header.Set("Authorization", "Bearer "+t.Value)
	return o.base.RoundTrip(r2)
}

// Refresh gets a new token unless another caller already replaced the one
// in use (in this process or, through the shared cache, in another).
func (o *oauth) Refresh(ctx context.Context) error {
	failed := o.cur.Load()
	o.mu.Lock()
	defer o.mu.Unlock()
	if t := o.cur.Load(); t != failed && o.usable(t) {
		return nil
	}
	if t := o.fromCache(ctx); t != nil && (failed == nil || t.Value != failed.Value) {
		o.cur.Store(t)
		return nil
	}
	o.cur.Store(nil)
	_, err := o.fetch(ctx)
	return err
}

// Fetches returns how many token requests this transport made (for tests
// and metrics).
func (o *oauth) Fetches() int64 { return o.fetches.Load() }

func (o *oauth) usable(t *token) bool {
	return t != nil && o.opts.Now().Before(t.RefreshAt)
}

// token returns a usable token: this process's, the shared cache's, or a
// new one.
func (o *oauth) token(ctx context.Context) (*token, error) {
	if t := o.cur.Load(); o.usable(t) {
		return t, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if t := o.cur.Load(); o.usable(t) {
		return t, nil
	}
	if t := o.fromCache(ctx); t != nil {
		o.cur.Store(t)
		return t, nil
	}
	return o.fetch(ctx)
}

func (o *oauth) fromCache(ctx context.Context) *token {
	if o.opts.Cache == nil {
		return nil
	}
	b, err := o.opts.Cache.Get(ctx, o.cacheKey)
	if err != nil {
		if kap.ErrorCode(err) != kap.ENOTFOUND {
			o.opts.Logger.LogAttrs(ctx, slog.LevelWarn, "target token cache unavailable",
				slog.String("target", o.opts.Target), slog.String("error", kap.ErrorCode(err)))
		}
		return nil
	}
	var t token
	if json.Unmarshal(b, &t) != nil || t.Value == "" || !o.usable(&t) {
		return nil
	}
	return &t
}

// fetch requests a token (o.mu held) and keeps it in this process and the
// shared cache.
func (o *oauth) fetch(ctx context.Context) (*token, error) {
	ctx, cancel := context.WithTimeout(ctx, o.opts.TokenTimeout)
	defer cancel()
	form := url.Values{"grant_type": {"client_credentials"}}
	if o.cfg.Scope != "" {
		form.Set("scope", o.cfg.Scope)
	}
	kid := ""
	if o.keys != nil {
		// A key directory is re-read before every token request, so a
		// rotation made by the console or another replica takes effect.
		o.keys.reloadIfOlder(ctx, 0)
		k := o.keys.Active()
		kid = k.ID
		assertion, err := o.assertion(k)
		if err != nil {
			return nil, &TokenError{Target: o.opts.Target, Err: err}
		}
		form.Set("client_assertion_type", AssertionType)
		form.Set("client_assertion", assertion)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.cfg.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, &TokenError{Target: o.opts.Target, Err: err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if o.keys == nil {
		// RFC 6749 §2.3.1: both parts form-urlencoded, then Basic.
		req.SetBasicAuth(url.QueryEscape(o.cfg.ClientID), url.QueryEscape(o.secret))
	}
	o.fetches.Add(1)
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, &TokenError{Target: o.opts.Target, Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse+1))
	if err != nil {
		return nil, &TokenError{Target: o.opts.Target, Status: resp.StatusCode, Err: err}
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   any    `json:"expires_in"`
		Error       string `json:"error"`
	}
	jerr := json.Unmarshal(body, &tr)
	if resp.StatusCode != http.StatusOK {
		o.log(ctx, resp.StatusCode, kid, 0)
		return nil, &TokenError{Target: o.opts.Target, Status: resp.StatusCode, Code: oauthCode(tr.Error)}
	}
	switch {
	case len(body) > maxTokenResponse:
		return nil, &TokenError{Target: o.opts.Target, Status: resp.StatusCode, Err: errors.New("token response too large")}
	case jerr != nil:
		return nil, &TokenError{Target: o.opts.Target, Status: resp.StatusCode, Code: "malformed_response", Err: errors.New("token response is not JSON")}
	case tr.AccessToken == "":
		return nil, &TokenError{Target: o.opts.Target, Status: resp.StatusCode, Code: "malformed_response", Err: errors.New("no access_token")}
	case tr.TokenType != "" && !strings.EqualFold(tr.TokenType, "bearer"):
		return nil, &TokenError{Target: o.opts.Target, Status: resp.StatusCode, Code: "unsupported_token_type"}
	}
	life := expiresIn(tr.ExpiresIn)
	now := o.opts.Now()
	skew := min(o.opts.Skew, life/4)
	t := &token{Value: tr.AccessToken, Expiry: now.Add(life), RefreshAt: now.Add(life - skew)}
	o.cur.Store(t)
	o.log(ctx, resp.StatusCode, kid, life)
	if o.opts.Cache != nil {
		b, _ := json.Marshal(t)
		if err := kap.CacheToken(ctx, o.opts.Cache, o.cacheKey, string(b), t.Expiry, skew, now); err != nil {
			o.opts.Logger.LogAttrs(ctx, slog.LevelWarn, "target token not cached",
				slog.String("target", o.opts.Target), slog.String("error", kap.ErrorCode(err)))
		}
	}
	return t, nil
}

func (o *oauth) log(ctx context.Context, status int, kid string, life time.Duration) {
	attrs := []slog.Attr{slog.String("target", o.opts.Target), slog.String("auth", o.cfg.Type), slog.Int("status", status)}
	if kid != "" {
		attrs = append(attrs, slog.String("kid", kid))
	}
	level := slog.LevelWarn
	if status == http.StatusOK {
		level = slog.LevelInfo
		attrs = append(attrs, slog.Int("expires_in", int(life/time.Second)))
	}
	o.opts.Logger.LogAttrs(ctx, level, "target token request", attrs...)
}

// assertion is the private_key_jwt client assertion (SMART Backend
// Services): iss = sub = client_id, aud = the token URL, a unique jti, exp
// five minutes on, the kid in the header.
func (o *oauth) assertion(k Key) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	now := o.opts.Now()
	method := jwt.SigningMethod(jwt.SigningMethodES384)
	if k.Alg == RS384 {
		method = jwt.SigningMethodRS384
	}
	t := jwt.NewWithClaims(method, jwt.MapClaims{
		"iss": o.cfg.ClientID,
		"sub": o.cfg.ClientID,
		"aud": o.cfg.TokenURL,
		"jti": hex.EncodeToString(jti[:]),
		"iat": now.Unix(),
		"exp": now.Add(AssertionLifetime).Unix(),
	})
	t.Header["kid"] = k.ID
	return t.SignedString(k.Signer)
}

// expiresIn reads expires_in (a number, or a string some servers send).
func expiresIn(v any) time.Duration {
	var s float64
	switch x := v.(type) {
	case float64:
		s = x
	case string:
		s, _ = strconv.ParseFloat(x, 64)
	}
	if s <= 0 || s > 366*24*3600 {
		return DefaultTokenLifetime
	}
	return time.Duration(s * float64(time.Second))
}

// oauthCode keeps an OAuth error code if it looks like one (it goes into
// errors and logs; error_description is never kept).
func oauthCode(s string) string {
	if s == "" || len(s) > 40 {
		return ""
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '_') {
			return ""
		}
	}
	return s
}
