package httpapi

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// AuditFile is an audit sink writing <Dir>/audit-YYYY-MM-DD.ndjson (UTC
// date of the write), one file a day, created with mode 0600 in a 0700
// directory and only appended to. It is safe for concurrent use.
type AuditFile struct {
	Dir string
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu  sync.Mutex
	day string
	f   *os.File
}

// NewAuditFile creates dir (mode 0700) and returns the sink.
func NewAuditFile(dir string, now func() time.Time) (*AuditFile, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create the audit directory: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	return &AuditFile{Dir: dir, Now: now}, nil
}

// Write appends p (one event line) to the current day's file.
func (a *AuditFile) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	day := a.Now().UTC().Format("2006-01-02")
	if a.f == nil || day != a.day {
		if a.f != nil {
			a.f.Sync()
			a.f.Close()
			a.f = nil
		}
		f, err := os.OpenFile(filepath.Join(a.Dir, "audit-"+day+".ndjson"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return 0, err
		}
		a.f, a.day = f, day
	}
	return a.f.Write(p)
}

// Sync flushes the current file to disk.
func (a *AuditFile) Sync() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	return a.f.Sync()
}

// Close syncs and closes the current file.
func (a *AuditFile) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Sync()
	if cerr := a.f.Close(); err == nil {
		err = cerr
	}
	a.f = nil
	return err
}
