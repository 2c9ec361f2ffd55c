package admin

import (
	"fmt"
	"html/template"
	"strings"
	"sync"
	"time"

	"github.com/kapbridge/kap/internal/delivery"
)

// The worker counts deliveries and failures since it started; the sampler
// keeps the counts once a sample period (a minute by default) for a day, so
// the overview can show the last hour and the last day of this process.

const sampleWindow = 24 * time.Hour

type point struct {
	At                time.Time
	Delivered, Failed int64
}

type sampler struct {
	now func() time.Time
	mu  sync.Mutex
	pts map[string][]point // target -> samples, oldest first
}

func newSampler(now func() time.Time) *sampler {
	return &sampler{now: now, pts: map[string][]point{}}
}

func (s *sampler) record(h delivery.Health) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range h.Targets {
		ps := append(s.pts[t.Name], point{At: now, Delivered: t.Delivered, Failed: t.Failed})
		i := 0
		for i < len(ps)-1 && now.Sub(ps[i].At) > sampleWindow+time.Hour {
			i++
		}
		s.pts[t.Name] = ps[i:]
	}
}

// window is what happened to a target over a period.
type window struct {
	Delivered, Failed int64
}

// buckets returns n buckets of width w ending now, oldest first, counting the
// deliveries and failures between consecutive samples (and up to cur, the
// worker's current counts).
func (s *sampler) buckets(target string, cur delivery.TargetHealth, n int, w time.Duration) []window {
	now := s.now()
	s.mu.Lock()
	ps := append([]point(nil), s.pts[target]...)
	s.mu.Unlock()
	ps = append(ps, point{At: now, Delivered: cur.Delivered, Failed: cur.Failed})
	out := make([]window, n)
	start := now.Add(-time.Duration(n) * w)
	for i := 1; i < len(ps); i++ {
		a, b := ps[i-1], ps[i]
		if b.At.Before(start) || b.Delivered < a.Delivered { // too old, or the worker restarted
			continue
		}
		k := int(b.At.Sub(start) / w)
		if k >= n {
			k = n - 1
		}
		if k < 0 {
			continue
		}
		out[k].Delivered += b.Delivered - a.Delivered
		out[k].Failed += b.Failed - a.Failed
	}
	return out
}

func sum(ws []window) window {
	var t window
	for _, w := range ws {
		t.Delivered += w.Delivered
		t.Failed += w.Failed
	}
	return t
}

// chart draws the buckets as an inline SVG bar chart (deliveries up in
// green, failures in red below them) with a text alternative.
func chart(ws []window, label string) template.HTML {
	const width, height = 240, 48
	var max int64 = 1
	for _, w := range ws {
		max = maxInt(max, w.Delivered+w.Failed)
	}
	bw := float64(width) / float64(len(ws))
	var b strings.Builder
	total := sum(ws)
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s: %d delivered, %d failed">`,
		width, height, width, height, template.HTMLEscapeString(label), total.Delivered, total.Failed)
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="#f4f6f8"/>`, width, height)
	for i, w := range ws {
		x := float64(i) * bw
		hd := float64(w.Delivered) / float64(max) * (height - 2)
		hf := float64(w.Failed) / float64(max) * (height - 2)
		if w.Delivered > 0 {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#1b7f3b"/>`, x, height-hd-hf, bw*0.8, hd)
		}
		if w.Failed > 0 {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#b3261e"/>`, x, height-hf, bw*0.8, hf)
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func maxInt(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// ago renders a past time as "3 min ago"; the zero time as "—".
func ago(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	d := time.Since(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%d s ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%.1f h ago", d.Hours())
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}

func when(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func circuitWords(s string) string {
	switch s {
	case "closed":
		return "closed (delivering)"
	case "open":
		return "open (paused after repeated failures)"
	case "half-open":
		return "half-open (trying one delivery)"
	}
	return s
}

// plainReason turns a delivery error or dead-letter reason into words an IT
// administrator can act on; the original text follows in parentheses.
func plainReason(s string) string {
	if s == "" {
		return ""
	}
	l := strings.ToLower(s)
	var w string
	switch {
	case strings.Contains(l, "connection refused"), strings.Contains(l, "no such host"),
		strings.Contains(l, "connection reset"), strings.Contains(l, "eof"), strings.Contains(l, "broken pipe"),
		strings.Contains(l, "server closed"), strings.Contains(l, "closed network connection"),
		strings.Contains(l, "network is unreachable"), strings.Contains(l, "no route to host"):
		w = "The target could not be reached (its server is down or the network is blocked)."
	case strings.Contains(l, "timeout"), strings.Contains(l, "deadline exceeded"):
		w = "The target did not answer in time."
	case strings.Contains(l, "permission denied"), strings.Contains(l, "read-only"):
		w = "The gateway may not write to the target's folder (check its permissions)."
	case strings.Contains(l, "no such file"):
		w = "The target's folder does not exist."
	case strings.Contains(l, "http 401"), strings.Contains(l, "http 403"), strings.Contains(l, "token"):
		w = "The target refused the gateway's credentials (check the client id, key or secret)."
	case strings.Contains(l, "http 429"):
		w = "The target asked the gateway to slow down."
	case strings.Contains(l, "http 5"):
		w = "The target had an internal error."
	case strings.Contains(l, "refused by the target"), strings.Contains(l, "http 4"):
		w = "The target refused the content; its answer (OperationOutcome) says which field."
	case strings.Contains(l, "no response"):
		w = "The target did not answer (it may be down, or the connection was cut)."
	case strings.Contains(l, "attempts failed"):
		w = "Every delivery attempt failed; the last error follows."
	default:
		return s
	}
	return w + " (" + s + ")"
}
