package kap

import "encoding/json"

// The record and the Bundle are the bulk of every stored record and outbox
// message (a dosing session's Bundle is about 80 kB). encoding/json
// re-validates and compacts a json.RawMessage each time it encodes one, and a
// Put encodes them once for the record and once per target; instead they are
// checked once (CheckRawJSON) and spliced into the encoded envelope.

// CheckRawJSON reports EINVALID when a non-empty raw field is not JSON.
func CheckRawJSON(field string, raw json.RawMessage) error {
	if len(raw) > 0 && !json.Valid(raw) {
		return Errorf(EINVALID, "%s is not valid JSON", field)
	}
	return nil
}

// splice encodes v, whose record and bundle fields the caller left empty,
// and appends "record" and "bundle" (already checked) before the closing
// brace.
func splice(v any, record, bundle json.RawMessage) ([]byte, error) {
	head, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(record) == 0 && len(bundle) == 0 {
		return head, nil
	}
	out := make([]byte, 0, len(head)+len(record)+len(bundle)+24)
	out = append(out, head[:len(head)-1]...)
	sep := len(head) > 2 // "{}" has no field before ours
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"record", record}, {"bundle", bundle}} {
		if len(f.raw) == 0 {
			continue
		}
		if sep {
			out = append(out, ',')
		}
		out = append(out, '"')
		out = append(out, f.name...)
		out = append(out, `":`...)
		out = append(out, f.raw...)
		sep = true
	}
	return append(out, '}'), nil
}

// MarshalStoredRecord encodes a stored record whose Record and Bundle were
// checked with CheckRawJSON; every RecordStore implementation stores this form.
func MarshalStoredRecord(r StoredRecord) ([]byte, error) {
	rec, b := r.Record, r.Bundle
	r.Record, r.Bundle = nil, nil
	return splice(r, rec, b)
}

// MarshalOutboxMessage encodes an outbox message whose Record and Bundle were
// checked with CheckRawJSON.
func MarshalOutboxMessage(m OutboxMessage) ([]byte, error) {
	rec, b := m.Record, m.Bundle
	m.Record, m.Bundle = nil, nil
	return splice(m, rec, b)
}
