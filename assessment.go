package kap

import (
	"fmt"
	"strconv"
	"time"
)

// Assessment is one completed outcome measure: item answers and the total.
type Assessment struct {
	Kind                 Kind   `json:"kind"`
	ID                   string `json:"id"`
	ClientID             string `json:"clientId"`
	Instrument           string `json:"instrument"` // Instruments
	Date                 Time   `json:"date"`
	Items                []int  `json:"items"`
	Total                int    `json:"total"`
	DosingSessionID      string `json:"dosingSessionId,omitempty"`
	IntegrationSessionID string `json:"integrationSessionId,omitempty"`
}

// instrumentShape gives the item count and the item value range.
var instrumentShape = map[string]struct{ items, lo, hi int }{
	InstrumentPHQ9:  {9, 0, 3},
	InstrumentGAD7:  {7, 0, 3},
	InstrumentPCL5:  {20, 0, 4},
	InstrumentCSSRS: {6, 0, 1}, // C-SSRS screener: six yes/no questions
}

// ItemCount returns the number of items of an instrument.
func ItemCount(instrument string) int { return instrumentShape[instrument].items }

// TotalRange returns the range of an instrument's total score. For C-SSRS
// the total is the number of "yes" answers of the screener.
func TotalRange(instrument string) (lo, hi int, ok bool) {
	s, ok := instrumentShape[instrument]
	return s.items * s.lo, s.items * s.hi, ok
}

func (a *Assessment) RecordKind() Kind       { return KindAssessment }
func (a *Assessment) RecordID() string       { return a.ID }
func (a *Assessment) RecordClientID() string { return a.ClientID }
func (a *Assessment) RecordDate() time.Time  { return a.Date.Time }

// Validate checks the assessment, including that the total is the sum of
// the items.
func (a *Assessment) Validate() error {
	var v validator
	v.kind(a.Kind, KindAssessment)
	v.id("id", a.ID, true)
	v.id("clientId", a.ClientID, true)
	v.oneOf("instrument", a.Instrument, Instruments, true)
	v.time("date", a.Date, true)
	v.id("dosingSessionId", a.DosingSessionID, false)
	v.id("integrationSessionId", a.IntegrationSessionID, false)
	if a.DosingSessionID != "" && a.IntegrationSessionID != "" {
		v.add("integrationSessionId", "give dosingSessionId or integrationSessionId, not both")
	}
	if sh, ok := instrumentShape[a.Instrument]; ok {
		if len(a.Items) != sh.items {
			v.add("items", "%s has %d items, got %d", a.Instrument, sh.items, len(a.Items))
		}
		sum := 0
		for i, x := range a.Items {
			if x < sh.lo || x > sh.hi {
				v.add(fmt.Sprintf("items[%d]", i), "must be between %d and %d", sh.lo, sh.hi)
			}
			sum += x
		}
		if len(a.Items) == sh.items && sum != a.Total {
			v.add("total", "must be the sum of the items (%d)", sum)
		}
	}
	return v.err()
}

func itoa(i int) string { return strconv.Itoa(i) }
