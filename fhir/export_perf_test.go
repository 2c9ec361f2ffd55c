package fhir

import "google.golang.org/protobuf/proto"

// MarshalJSONFormat is Codec.Marshal with jsonformat alone, the reference
// the fast encoder must equal.
func (c *Codec) MarshalJSONFormat(res proto.Message) ([]byte, error) { return c.marshalJSONFormat(res) }

// FastMarshal is the fast encoder alone; it fails where Marshal falls back.
func FastMarshal(res proto.Message) ([]byte, error) { return fastMarshal(res) }

// SlowCodec is a Codec whose Marshal is jsonformat's alone (benchmarks).
func SlowCodec() *Codec {
	c := MustCodec()
	c.slowMarshal = true
	c.slowValidate = true
	return c
}

// ValidFast is the fast validity proof alone.
func ValidFast(res proto.Message) bool { return validFast(res) }
