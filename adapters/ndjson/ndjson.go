// Package ndjson is the NDJSON file delivery target: a kap.Sender that
// appends each delivered FHIR Bundle as one line to <Dir>/<YYYY-MM-DD>.ndjson
// (the UTC day of delivery), and fsyncs before it reports success. Dir is
// the target's own folder (kapbridge's default is <dataDir>/<target name>).
// Files are created 0600 and folders 0700.
//
// One process writes a target folder at a time: New takes an exclusive lock
// (flock on <Dir>/.index/lock) and Close releases it.
//
// Delivery is idempotent across redelivery: a message already written (the
// process died after the write and before the outbox Ack) is not written
// again. An index per day file, <Dir>/.index/<YYYY-MM-DD>.idx,
// records an intent line (tenant, message id, offset, length) before each
// data line is written; on open, a last intent whose data line is missing
// or incomplete is rolled back (the partial line is truncated away), so the
// index and the data files always agree. The index of the last
// Options.IndexDays days is kept in memory; a message redelivered after
// that is written again.
//
// SendResult.Resources reports, for each resource of the message, TargetID
// "<YYYY-MM-DD>.ndjson:<line>" (the 1-based line of the Bundle) and
// VersionID the record version.
//
// The recipient may move or delete day files it has processed: the index
// keeps their messages delivered, and the next line of the day starts a new
// file whose lines count from 1 again.
package ndjson

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kapbridge/kap"
)

// Options configure a Sender.
type Options struct {
	// Name is the target name (the outbox target); required.
	Name string
	// Dir is the target's folder; required.
	Dir string
	// Now is the clock that picks the day file; nil means time.Now.
	Now func() time.Time
	// IndexDays is how many days of the index are loaded (the window in
	// which redelivery is detected); default 14.
	IndexDays int
}

// Sender writes Bundles to NDJSON files.
type Sender struct {
	opt Options
	dir string // Dir

	lock *os.File // held while the Sender is open

	mu      sync.Mutex
	closed  bool
	written map[string]position // tenant "\x00" message id -> where
	queue   []*pending          // sends waiting for the next group commit
	leading bool                // a send is writing a batch
	batch   int64               // the last batch number
	lines   map[string]int      // day file -> lines written (the leader's)
}

// pending is one Send waiting for its batch.
type pending struct {
	key  string
	msg  kap.OutboxMessage
	line []byte
	pos  position
	err  error
	done chan struct{}
}

type position struct {
	File string
	Line int
}

// intent is one index line.
type intent struct {
	Tenant string `json:"t"`
	ID     string `json:"m"`
	Offset int64  `json:"o"`
	Len    int64  `json:"n"`
	Line   int    `json:"l"`
	CRC    uint32 `json:"c"` // CRC-32 (IEEE) of the line
	Batch  int64  `json:"b"` // the group commit that wrote it
}

var _ kap.Sender = (*Sender)(nil)

// New creates the target folder if needed, recovers an interrupted write and
// loads the index.
func New(opt Options) (*Sender, error) {
	if err := kap.ValidateName("target name", opt.Name); err != nil {
		return nil, fmt.Errorf("ndjson: %w", err)
	}
	if opt.Dir == "" {
		return nil, errors.New("ndjson: target " + opt.Name + ": dir is required")
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.IndexDays <= 0 {
		opt.IndexDays = 14
	}
	s := &Sender{opt: opt, dir: opt.Dir, written: map[string]position{}, lines: map[string]int{}}
	if err := os.MkdirAll(filepath.Join(s.dir, ".index"), 0o700); err != nil {
		return nil, fmt.Errorf("ndjson: create the target folder: %w", err)
	}
	lock, err := lockDir(filepath.Join(s.dir, ".index", "lock"))
	if err != nil {
		if errors.Is(err, errLocked) {
			return nil, fmt.Errorf("ndjson: target %s: another process (or an open Sender) writes %s", opt.Name, s.dir)
		}
		return nil, fmt.Errorf("ndjson: lock the target folder: %w", err)
	}
	s.lock = lock
	s.batch = time.Now().UnixNano() // batch numbers differ across restarts
	if err := s.load(); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

var errLocked = errors.New("locked")

// Close releases the folder lock. Send fails after Close.
func (s *Sender) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.lock.Close()
}

// Target returns the target name.
func (s *Sender) Target() string { return s.opt.Name }

// Dir returns the folder the day files are written to.
func (s *Sender) Dir() string { return s.dir }

func (s *Sender) indexPath(day string) string { return filepath.Join(s.dir, ".index", day+".idx") }
func (s *Sender) dataPath(day string) string  { return filepath.Join(s.dir, day+".ndjson") }

// load reads the index files of the last IndexDays days, repairing the last
// intent of each.
func (s *Sender) load() error {
	ents, err := os.ReadDir(filepath.Join(s.dir, ".index"))
	if err != nil {
		return fmt.Errorf("ndjson: read the index: %w", err)
	}
	var days []string
	for _, e := range ents {
		if day, ok := strings.CutSuffix(e.Name(), ".idx"); ok && !e.IsDir() {
			if _, err := time.Parse(time.DateOnly, day); err == nil {
				days = append(days, day)
			}
		}
	}
	sort.Strings(days)
	oldest := s.opt.Now().UTC().AddDate(0, 0, -s.opt.IndexDays).Format(time.DateOnly)
	for _, day := range days {
		// Every day file is repaired (a crash leaves at most one
		// incomplete intent per file); only recent ones are indexed.
		ints, err := s.repair(day)
		if err != nil {
			return err
		}
		if day < oldest {
			continue
		}
		for _, in := range ints {
			s.written[in.Tenant+"\x00"+in.ID] = position{File: day + ".ndjson", Line: in.Line}
		}
		if n := len(ints); n > 0 {
			s.lines[day] = ints[n-1].Line
		}
	}
	return nil
}

// repair reads a day's index. When the data line of its last intent is not
// complete (the process died while writing it) it truncates the data file
// back to where that line began and drops the intent; a torn last index
// line is dropped too.
func (s *Sender) repair(day string) ([]intent, error) {
	ip := s.indexPath(day)
	raw, err := os.ReadFile(ip)
	if err != nil {
		return nil, fmt.Errorf("ndjson: read the index of %s: %w", day, err)
	}
	var ints []intent
	var starts []int
	good := 0 // bytes of intact intent lines
	for good < len(raw) {
		nl := bytes.IndexByte(raw[good:], '\n')
		if nl < 0 {
			break // a torn last line
		}
		var in intent
		if json.Unmarshal(raw[good:good+nl], &in) != nil || in.ID == "" {
			break
		}
		ints = append(ints, in)
		starts = append(starts, good)
		good += nl + 1
	}
	if _, err := os.Stat(s.dataPath(day)); errors.Is(err, fs.ErrNotExist) {
		// The recipient took the day file away: what it held was
		// delivered; keep the index so it is not written again.
		return ints, nil
	}
	// Only the last batch's lines can be missing or torn: every earlier
	// batch was fsynced before the next one began. Check each of them
	// against its CRC; from the first bad one on, drop them all.
	first := len(ints)
	for first > 0 && ints[first-1].Batch == ints[len(ints)-1].Batch {
		first--
	}
	for i := first; i < len(ints); i++ {
		ok, err := lineIntact(s.dataPath(day), ints[i])
		if err != nil {
			return nil, err
		}
		if !ok {
			if err := truncateSync(s.dataPath(day), ints[i].Offset); err != nil {
				return nil, err
			}
			good, ints = starts[i], ints[:i]
			break
		}
	}
	if good != len(raw) {
		if err := truncateSync(ip, int64(good)); err != nil {
			return nil, err
		}
	}
	return ints, nil
}

// lineIntact reports whether the data file holds the whole line of in.
func lineIntact(path string, in intent) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ndjson: %w", err)
	}
	defer f.Close()
	if in.Len <= 0 || in.Len > 1<<30 {
		return false, nil
	}
	b := make([]byte, in.Len)
	if _, err := f.ReadAt(b, in.Offset); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, fmt.Errorf("ndjson: %w", err)
	}
	return b[len(b)-1] == '\n' && crc32.ChecksumIEEE(b) == in.CRC, nil
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0o600)
	if errors.Is(err, fs.ErrNotExist) && size == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ndjson: repair: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("ndjson: repair: %w", err)
	}
	return f.Sync()
}

// Send appends msg.Bundle as one line, unless this message was written
// already. A message without a Bundle is refused (permanent).
func (s *Sender) Send(ctx context.Context, msg kap.OutboxMessage) (kap.SendResult, error) {
	if err := ctx.Err(); err != nil {
		return kap.SendResult{}, &kap.SendError{Kind: kap.SendTransient, Err: err}
	}
	if len(bytes.TrimSpace(msg.Bundle)) == 0 {
		return kap.SendResult{}, &kap.SendError{Kind: kap.SendPermanent, Err: errors.New("the message carries no Bundle")}
	}
	var line bytes.Buffer
	if err := json.Compact(&line, msg.Bundle); err != nil {
		return kap.SendResult{}, &kap.SendError{Kind: kap.SendPermanent, Err: errors.New("the message's Bundle is not valid JSON")}
	}
	line.WriteByte('\n')

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return kap.SendResult{}, &kap.SendError{Kind: kap.SendTransient, Err: errors.New("the ndjson target is closed")}
	}
	key := msg.Tenant + "\x00" + msg.ID
	if pos, ok := s.written[key]; ok {
		s.mu.Unlock()
		return s.result(msg, pos), nil
	}
	p := &pending{key: key, msg: msg, line: line.Bytes(), done: make(chan struct{})}
	s.queue = append(s.queue, p)
	if !s.leading {
		// Group commit: this send writes every queued line with one
		// fsync of the index and one of the day file, and again while
		// more arrived meanwhile.
		s.leading = true
		for len(s.queue) > 0 {
			batch := s.queue
			s.queue = nil
			s.batch++
			n := s.batch
			day := s.opt.Now().UTC().Format(time.DateOnly)
			s.mu.Unlock()
			s.writeBatch(day, n, batch)
			s.mu.Lock()
			for _, q := range batch {
				if q.err == nil {
					s.written[q.key] = q.pos
				}
				close(q.done)
			}
		}
		s.leading = false
	}
	s.mu.Unlock()
	<-p.done
	if p.err != nil {
		// A transient error makes the outbox retry; the failed write was
		// rolled back (or is repaired on the next open).
		return kap.SendResult{}, &kap.SendError{Kind: kap.SendTransient, Err: p.err}
	}
	return s.result(msg, p.pos), nil
}

func (s *Sender) result(msg kap.OutboxMessage, pos position) kap.SendResult {
	res := kap.SendResult{}
	tid := pos.File + ":" + strconv.Itoa(pos.Line)
	for _, r := range msg.Resources {
		res.Resources = append(res.Resources, kap.LedgerEntry{
			LedgerKey: kap.LedgerKey{Tenant: msg.Tenant, Target: s.opt.Name, ResourceType: r.Type, Identifier: r.System + "|" + r.Value},
			TargetID:  tid, VersionID: strconv.Itoa(msg.Version), State: kap.LedgerConfirmed,
		})
	}
	return res
}

// writeBatch appends the lines of batch to the day file: first their
// intents to the index (fsync), then the lines (fsync). It sets each
// pending's position or error. Only the leader calls it.
func (s *Sender) writeBatch(day string, n int64, batch []*pending) {
	fail := func(err error) {
		for _, p := range batch {
			p.err = err
		}
	}
	df, err := os.OpenFile(s.dataPath(day), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		fail(fmt.Errorf("open the day file: %w", err))
		return
	}
	defer df.Close()
	st, err := df.Stat()
	if err != nil {
		fail(err)
		return
	}
	xf, err := os.OpenFile(s.indexPath(day), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		fail(fmt.Errorf("open the index: %w", err))
		return
	}
	defer xf.Close()
	xst, err := xf.Stat()
	if err != nil {
		fail(err)
		return
	}
	if st.Size() == 0 || xst.Size() == 0 {
		// A new file's directory entry must be durable before anything
		// is written to it.
		if err := syncDir(s.dir); err != nil {
			fail(err)
			return
		}
		if err := syncDir(filepath.Join(s.dir, ".index")); err != nil {
			fail(err)
			return
		}
	}
	var idx, data bytes.Buffer
	line := s.lines[day]
	if st.Size() == 0 {
		line = 0 // a new file (or one the recipient took away): lines count from 1
	}
	first := map[string]*pending{} // a message twice in one batch is written once
	for _, p := range batch {
		if first[p.key] != nil {
			continue
		}
		first[p.key] = p
		line++
		in := intent{Tenant: p.msg.Tenant, ID: p.msg.ID, Offset: st.Size() + int64(data.Len()), Len: int64(len(p.line)),
			Line: line, CRC: crc32.ChecksumIEEE(p.line), Batch: n}
		idx.Write(mustJSON(in))
		idx.WriteByte('\n')
		data.Write(p.line)
		p.pos = position{File: day + ".ndjson", Line: line}
	}
	for _, p := range batch {
		p.pos = first[p.key].pos
	}
	undo := func(err error) {
		// Roll the intents back so the index never names a line that is
		// not there (best effort; the next open repairs it otherwise).
		xf.Truncate(xst.Size())
		xf.Sync()
		df.Truncate(st.Size())
		df.Sync()
		fail(err)
	}
	if _, err := xf.Write(idx.Bytes()); err != nil {
		undo(fmt.Errorf("write the index: %w", err))
		return
	}
	if err := xf.Sync(); err != nil {
		undo(fmt.Errorf("sync the index: %w", err))
		return
	}
	if _, err := df.WriteAt(data.Bytes(), st.Size()); err != nil {
		undo(fmt.Errorf("write the day file: %w", err))
		return
	}
	if err := df.Sync(); err != nil {
		undo(fmt.Errorf("sync the day file: %w", err))
		return
	}
	s.lines[day] = line
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
