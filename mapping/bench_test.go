package mapping_test

import (
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/mapping"
)

// session40Vitals is a dosing session with 40 vital-sign readings: 10 sets
// of BP, heart rate, SpO2 and respiratory rate, every 15 minutes.
func session40Vitals() *kap.DosingSession {
	s := minimalDosing()
	start := time.Date(2026, 10, 6, 13, 0, 0, 0, time.UTC)
	s.Start, s.End = kap.At(start), kap.At(start.Add(3*time.Hour))
	s.Administrations[0].Start = kap.At(start.Add(20 * time.Minute))
	s.Discharge.Time = kap.At(start.Add(170 * time.Minute))
	s.Vitals = nil
	for i := 0; i < 10; i++ {
		s.Vitals = append(s.Vitals, kap.VitalSigns{Time: kap.At(start.Add(time.Duration(5+15*i) * time.Minute)),
			Systolic: 120 + float64(i), Diastolic: 80, HeartRate: 70 + float64(i), SpO2: 97, RespRate: 14})
	}
	return s
}

func countReadings(s *kap.DosingSession) int {
	n := 0
	for _, v := range s.Vitals {
		for _, x := range []float64{v.Systolic, v.HeartRate, v.SpO2, v.RespRate, v.TempC} {
			if x != 0 {
				n++
			}
		}
	}
	return n
}

// BenchmarkMapDosingSession40Vitals: Map (which validates every resource
// with fhirvalidate) and marshal one session with 40 readings.
func BenchmarkMapDosingSession40Vitals(b *testing.B) {
	m := newMapper(b)
	s := session40Vitals()
	if n := countReadings(s); n != 40 {
		b.Fatalf("%d readings, want 40", n)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.MapJSON(s, mapping.MapInput{Version: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReverseDosingSession40Vitals: map back the parsed Bundle of the
// same session (Reverse alone).
func BenchmarkReverseDosingSession40Vitals(b *testing.B) {
	m := newMapper(b)
	data, err := m.MapJSON(session40Vitals(), mapping.MapInput{Version: 1})
	if err != nil {
		b.Fatal(err)
	}
	cr, err := m.Codec().Unmarshal(data)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		rec, err := m.Reverse(cr.GetBundle())
		if err != nil {
			b.Fatal(err)
		}
		if len(rec.(*kap.DosingSession).Vitals) != 10 {
			b.Fatal("vitals lost")
		}
	}
}

// BenchmarkUnmarshalReverseDosingSession40Vitals: validating unmarshal of
// the Bundle JSON plus Reverse, what an inbound path pays.
func BenchmarkUnmarshalReverseDosingSession40Vitals(b *testing.B) {
	m := newMapper(b)
	data, err := m.MapJSON(session40Vitals(), mapping.MapInput{Version: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		cr, err := m.Codec().Unmarshal(data)
		if err != nil {
			b.Fatal(err)
		}
		rec, err := m.Reverse(cr.GetBundle())
		if err != nil {
			b.Fatal(err)
		}
		if len(rec.(*kap.DosingSession).Vitals) != 10 {
			b.Fatal("vitals lost")
		}
	}
}
