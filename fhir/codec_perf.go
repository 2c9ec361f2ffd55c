package fhir

// A faster JSON encoder for the FHIR R4 protos, byte for byte the output of
// google/fhir/go's jsonformat.Marshaller (compact, pure format).
//
// jsonformat builds a map[string]interface{} tree per resource, looks up
// descriptor annotations (proto.GetExtension) for every field it visits and
// then has encoding/json sort and encode the maps with reflection: about 40 %
// of a submission's CPU. This encoder walks the same protoreflect messages
// with the same rules, but caches the per-type work (annotations, JSON names,
// code spellings), sorts each object's keys itself and writes straight into
// one buffer.
//
// It only handles what it can reproduce exactly. Anything else (a primitive
// with the primitiveHasNoValue extension or a Reference with a typed id or a
// fragment, which jsonformat rewrites in place while marshalling;
// base64Binary, time, dates in other zones than UTC, Any, invalid decimals,
// unset choices) makes it give up with errFallback, and Codec.Marshal then
// runs jsonformat itself, so the output and the errors are always
// jsonformat's. TestFastMarshalMatchesJSONFormat checks the equality on
// every golden Bundle and on crafted edge cases.

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/fhir/go/jsonformat"
	apb "github.com/google/fhir/go/proto/google/fhir/proto/annotations_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// r4Package prefixes the full names of the R4 core messages.
const r4Package = "google.fhir.r4.core."

// errFallback: the fast encoder cannot reproduce jsonformat here.
var errFallback = errors.New("fhir: fast marshal not applicable")

// fallback returns errFallback with where it gave up.
func fallback(where string) error { return fmt.Errorf("%w (%s)", errFallback, where) }

// primitiveHasNoValueURL is jsonformat's marker extension for a primitive
// without a value (jsonpbhelper.PrimitiveHasNoValueURL).
const primitiveHasNoValueURL = "https://g.co/fhir/StructureDefinition/primitiveHasNoValue"

type msgKind uint8

const (
	kindComplex msgKind = iota
	kindPrimitive
	kindChoice
	kindReference
	kindContained
	kindAny
)

type primKind uint8

const (
	primUnsupported primKind = iota
	primString
	primBool
	primInt
	primUint
	primDecimal
	primDate
	primDateTime
	primInstant
	primCodeString
	primCodeEnum
)

// msgInfo is the cached per-type work for one message descriptor.
type msgInfo struct {
	kind     msgKind
	name     string // descriptor name, the resourceType of a resource
	prim     primKind
	value    protoreflect.FieldDescriptor // primitives: the value field
	id       protoreflect.FieldDescriptor // primitives: the id field (nil if none)
	ext      protoreflect.FieldDescriptor // primitives: the extension field
	codes    map[protoreflect.EnumNumber]string
	fields   []fieldInfo // by FieldDescriptor.Index()
	choiceOK bool        // choice: exactly one oneof
}

type fieldInfo struct {
	json, ext string                    // JSON name and "_" + JSON name
	msg       atomic.Pointer[msgInfo]   // of the field's message type
	choice    atomic.Pointer[choiceKey] // a choice type's value field: its keys
}

// choiceKey is the JSON name of a choice value ("valueQuantity") for the
// field holding the choice ("value").
type choiceKey struct {
	outer    protoreflect.Name
	key, ext string
}

// info returns the msgInfo of field f's message type.
func (fi *fieldInfo) info(f protoreflect.FieldDescriptor) *msgInfo {
	if p := fi.msg.Load(); p != nil {
		return p
	}
	p := infoOf(f.Message())
	fi.msg.Store(p)
	return p
}

var infoCache sync.Map // protoreflect.FullName -> *msgInfo

func infoOf(d protoreflect.MessageDescriptor) *msgInfo {
	if v, ok := infoCache.Load(d.FullName()); ok {
		return v.(*msgInfo)
	}
	v, _ := infoCache.LoadOrStore(d.FullName(), buildInfo(d))
	return v.(*msgInfo)
}

func buildInfo(d protoreflect.MessageDescriptor) *msgInfo {
	in := &msgInfo{name: string(d.Name())}
	opts := d.Options()
	fs := d.Fields()
	in.fields = make([]fieldInfo, fs.Len())
	for i := 0; i < fs.Len(); i++ {
		j := fs.Get(i).JSONName()
		in.fields[i].json, in.fields[i].ext = j, "_"+j
	}
	sdk, _ := proto.GetExtension(opts, apb.E_StructureDefinitionKind).(apb.StructureDefinitionKindValue)
	isChoice, _ := proto.GetExtension(opts, apb.E_IsChoiceType).(bool)
	switch {
	case sdk == apb.StructureDefinitionKindValue_KIND_PRIMITIVE_TYPE:
		in.kind = kindPrimitive
		in.value = fs.ByName("value")
		in.id = fs.ByName("id")
		in.ext = fs.ByName("extension")
		in.prim = primKindOf(d, in.value)
		if in.prim == primCodeEnum {
			in.codes = map[protoreflect.EnumNumber]string{}
			vals := in.value.Enum().Values()
			for i := 0; i < vals.Len(); i++ {
				ev := vals.Get(i)
				code, _ := proto.GetExtension(ev.Options(), apb.E_FhirOriginalCode).(string)
				if code == "" {
					code = strings.Replace(strings.ToLower(string(ev.Name())), "_", "-", -1)
				}
				in.codes[ev.Number()] = code
			}
		}
		if in.id == nil {
			in.prim = primUnsupported
		}
	case isChoice:
		in.kind = kindChoice
		in.choiceOK = d.Oneofs().Len() == 1
	case d.Name() == "ContainedResource":
		in.kind = kindContained
	case d.FullName() == "google.protobuf.Any":
		in.kind = kindAny
	case proto.HasExtension(opts, apb.E_FhirReferenceType):
		in.kind = kindReference
	}
	return in
}

func primKindOf(d protoreflect.MessageDescriptor, value protoreflect.FieldDescriptor) primKind {
	switch d.Name() {
	case "Date":
		return primDate
	case "DateTime":
		return primDateTime
	case "Instant":
		return primInstant
	}
	if value == nil {
		return primUnsupported
	}
	switch d.Name() {
	case "Base64Binary", "Time":
		return primUnsupported
	case "Canonical", "Code", "Markdown", "Oid", "String", "Uri", "Url", "Uuid", "Xhtml", "ReferenceId", "Id":
		if value.Kind() != protoreflect.StringKind {
			return primUnsupported
		}
		return primString
	case "Boolean":
		if value.Kind() != protoreflect.BoolKind {
			return primUnsupported
		}
		return primBool
	case "Integer":
		if value.Kind() != protoreflect.Int32Kind && value.Kind() != protoreflect.Sint32Kind {
			return primUnsupported
		}
		return primInt
	case "PositiveInt", "UnsignedInt":
		if value.Kind() != protoreflect.Uint32Kind {
			return primUnsupported
		}
		return primUint
	case "Decimal":
		if value.Kind() != protoreflect.StringKind {
			return primUnsupported
		}
		return primDecimal
	}
	if !proto.HasExtension(d.Options(), apb.E_FhirValuesetUrl) {
		return primUnsupported
	}
	switch value.Kind() {
	case protoreflect.StringKind:
		return primCodeString
	case protoreflect.EnumKind:
		return primCodeEnum
	}
	return primUnsupported
}

// member is one key of a JSON object being written.
type member struct {
	key  string
	what uint8
	f    protoreflect.FieldDescriptor
	m    protoreflect.Message // single values
	l    protoreflect.List    // repeated values
	info *msgInfo             // of the value's message type
}

const (
	wPrim uint8 = iota
	wPrimExt
	wPrimList
	wPrimExtList
	wMsg
	wMsgList
	wString // the resourceType
)

type encoder struct {
	buf     []byte
	members []member
	// The Range callback collecting an object's members, bound once (a
	// closure per object would be an allocation per object); cur and err
	// are its state. Collecting never recurses into another object.
	collect func(protoreflect.FieldDescriptor, protoreflect.Value) bool
	cur     *msgInfo
	err     error
}

var encPool = sync.Pool{New: func() any {
	e := &encoder{buf: make([]byte, 0, 64<<10)}
	e.collect = e.collectField
	return e
}}

func (e *encoder) collectField(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
	if f.Message() == nil || f.IsMap() {
		e.err = fallback("non-message or map field")
		return false
	}
	fi := &e.cur.fields[f.Index()]
	switch f.Cardinality() {
	case protoreflect.Optional:
		e.err = e.collectSingle(fi, f, v.Message())
	case protoreflect.Repeated:
		e.err = e.collectList(fi, f, v.List())
	default:
		e.err = fallback("field cardinality")
	}
	return e.err == nil
}

// fastMarshal encodes a ContainedResource or a bare resource like
// jsonformat's Marshal and MarshalResource, or returns errFallback.
func fastMarshal(res proto.Message) ([]byte, error) {
	e := encPool.Get().(*encoder)
	defer func() {
		if cap(e.buf) <= 4<<20 {
			e.buf = e.buf[:0]
			clear(e.members[:cap(e.members)])
			e.members = e.members[:0]
			encPool.Put(e)
		}
	}()
	pb := res.ProtoReflect()
	if !strings.HasPrefix(string(pb.Descriptor().FullName()), r4Package) {
		return nil, fallback("not an R4 message") // the rules above are R4's
	}
	var err error
	if infoOf(pb.Descriptor()).kind == kindContained {
		err = e.contained(pb)
	} else {
		err = e.resource(pb)
	}
	if err != nil {
		return nil, err
	}
	return slices.Clone(e.buf), nil
}

func (e *encoder) contained(pb protoreflect.Message) error {
	od := pb.Descriptor().Oneofs().ByName("oneof_resource")
	if od == nil {
		return fallback("no resource oneof")
	}
	f := pb.WhichOneof(od)
	if f == nil || f.Message() == nil {
		return fallback("resource oneof unset")
	}
	return e.resource(pb.Get(f).Message())
}

func (e *encoder) resource(pb protoreflect.Message) error {
	return e.object(pb, infoOf(pb.Descriptor()), true)
}

// object writes a message as jsonformat's marshalMessageToMap does, plus
// "resourceType" for resources.
func (e *encoder) object(pb protoreflect.Message, in *msgInfo, resourceType bool) error {
	base := len(e.members)
	err := e.object1(pb, in, resourceType)
	e.members = e.members[:base]
	return err
}

func (e *encoder) object1(pb protoreflect.Message, in *msgInfo, resourceType bool) error {
	base := len(e.members)
	if resourceType {
		e.members = append(e.members, member{key: "resourceType", what: wString, info: in})
	}
	e.cur, e.err = in, nil
	pb.Range(e.collect)
	if err := e.err; err != nil {
		e.err = nil
		return err
	}
	ms := e.members[base:]
	slices.SortFunc(ms, func(a, b member) int { return strings.Compare(a.key, b.key) })
	for i := 1; i < len(ms); i++ {
		if ms[i].key == ms[i-1].key {
			return fallback("duplicate key") // a map would keep only one of them
		}
	}
	e.buf = append(e.buf, '{')
	n := len(e.members) - base
	for i := 0; i < n; i++ {
		m := e.members[base+i]
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.buf = appendString(e.buf, m.key)
		e.buf = append(e.buf, ':')
		if err := e.value(m); err != nil {
			return err
		}
	}
	e.buf = append(e.buf, '}')
	return nil
}

func (e *encoder) collectSingle(fi *fieldInfo, f protoreflect.FieldDescriptor, pb protoreflect.Message) error {
	in := fi.info(f)
	key, extKey := fi.json, fi.ext
	if in.kind == kindChoice {
		if !in.choiceOK {
			return fallback("choice without one oneof")
		}
		fd := pb.WhichOneof(pb.Descriptor().Oneofs().Get(0))
		if fd == nil || fd.Message() == nil {
			return fallback("choice unset")
		}
		vi := &in.fields[fd.Index()]
		ck := vi.choice.Load()
		if ck == nil || ck.outer != f.Name() {
			ck = &choiceKey{outer: f.Name(), key: choiceName(f.Name(), fd)}
			ck.ext = "_" + ck.key
			vi.choice.Store(ck)
		}
		key, extKey = ck.key, ck.ext
		f = fd
		pb = pb.Get(fd).Message()
		in = vi.info(fd)
	}
	if in.kind == kindPrimitive {
		isNil, hasExt, err := primState(pb, in)
		if err != nil {
			return err
		}
		if !isNil {
			e.members = append(e.members, member{key: key, what: wPrim, m: pb, info: in})
		}
		if hasExt {
			e.members = append(e.members, member{key: extKey, what: wPrimExt, m: pb, info: in})
		}
		return nil
	}
	e.members = append(e.members, member{key: key, what: wMsg, f: f, m: pb, info: in})
	return nil
}

func (e *encoder) collectList(fi *fieldInfo, f protoreflect.FieldDescriptor, l protoreflect.List) error {
	if l.Len() == 0 {
		return nil
	}
	in := fi.info(f)
	if in.kind != kindPrimitive {
		e.members = append(e.members, member{key: fi.json, what: wMsgList, f: f, l: l, info: in})
		return nil
	}
	anyValue, anyExt := false, false
	for i := 0; i < l.Len(); i++ {
		isNil, hasExt, err := primState(l.Get(i).Message(), in)
		if err != nil {
			return err
		}
		anyValue = anyValue || !isNil
		anyExt = anyExt || hasExt
	}
	if anyValue {
		e.members = append(e.members, member{key: fi.json, what: wPrimList, f: f, l: l, info: in})
	}
	if anyExt {
		e.members = append(e.members, member{key: fi.ext, what: wPrimExtList, f: f, l: l, info: in})
	}
	return nil
}

// primState reports whether a primitive marshals to no value (a code
// enum left at 0) and whether it has an id or extensions ("_field").
func primState(pb protoreflect.Message, in *msgInfo) (isNil, hasExt bool, err error) {
	if in.prim == primUnsupported {
		return false, false, fallback("unsupported primitive " + in.name)
	}
	if in.ext != nil && pb.Has(in.ext) { // Has: no List wrapper to allocate
		exts := pb.Get(in.ext).List()
		for i := 0; i < exts.Len(); i++ {
			x, ok := exts.Get(i).Message().Interface().(*dpb.Extension)
			if !ok || x.GetUrl().GetValue() == primitiveHasNoValueURL {
				return false, false, fallback("primitiveHasNoValue")
			}
		}
		hasExt = exts.Len() > 0
	}
	if in.prim == primCodeEnum {
		n := pb.Get(in.value).Enum()
		if _, ok := in.codes[n]; !ok && n != 0 {
			return false, false, fallback("unknown code")
		}
		isNil = n == 0
	}
	return isNil, hasExt || pb.Has(in.id), nil
}

func (e *encoder) value(m member) error {
	switch m.what {
	case wString:
		e.buf = appendString(e.buf, m.info.name)
	case wPrim:
		return e.primitive(m.m, m.info)
	case wPrimExt:
		return e.primitiveExt(m.m, m.info)
	case wPrimList, wPrimExtList:
		e.buf = append(e.buf, '[')
		for i := 0; i < m.l.Len(); i++ {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			pb := m.l.Get(i).Message()
			isNil, hasExt, err := primState(pb, m.info)
			if err != nil {
				return err
			}
			switch {
			case m.what == wPrimList && !isNil:
				err = e.primitive(pb, m.info)
			case m.what == wPrimExtList && hasExt:
				err = e.primitiveExt(pb, m.info)
			default:
				e.buf = append(e.buf, "null"...)
			}
			if err != nil {
				return err
			}
		}
		e.buf = append(e.buf, ']')
	case wMsg:
		return e.nonPrimitive(m.m, m.info)
	case wMsgList:
		e.buf = append(e.buf, '[')
		for i := 0; i < m.l.Len(); i++ {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			if err := e.nonPrimitive(m.l.Get(i).Message(), m.info); err != nil {
				return err
			}
		}
		e.buf = append(e.buf, ']')
	default:
		return fallback("member kind")
	}
	return nil
}

// nonPrimitive is jsonformat's marshalNonPrimitiveFieldValue.
func (e *encoder) nonPrimitive(pb protoreflect.Message, in *msgInfo) error {
	switch in.kind {
	case kindContained:
		return e.contained(pb)
	case kindAny:
		return fallback("Any")
	case kindReference:
		// jsonformat rewrites fragments and typed ids into the uri in
		// place (DenormalizeReference); leave those to it.
		r, ok := pb.Interface().(*dpb.Reference)
		if !ok || r.GetFragment() != nil || (r.GetReference() != nil && r.GetUri() == nil) {
			return fallback("reference rewritten by jsonformat")
		}
	case kindPrimitive:
		return fallback("nested primitive")
	}
	return e.object(pb, in, false)
}

// primitiveExt is jsonformat's marshalPrimitiveExtensions (pure format):
// {"id": ..., "extension": [...]}.
func (e *encoder) primitiveExt(pb protoreflect.Message, in *msgInfo) error {
	e.buf = append(e.buf, '{')
	comma := false
	if in.ext != nil && pb.Has(in.ext) {
		exts := pb.Get(in.ext).List()
		e.buf = append(e.buf, `"extension":[`...)
		ei := infoOf(in.ext.Message())
		for i := 0; i < exts.Len(); i++ {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			if err := e.nonPrimitive(exts.Get(i).Message(), ei); err != nil {
				return err
			}
		}
		e.buf = append(e.buf, ']')
		comma = true
	}
	if pb.Has(in.id) {
		id := pb.Get(in.id).Message()
		vf := id.Descriptor().Fields().ByName("value")
		if vf == nil || vf.Kind() != protoreflect.StringKind {
			return fallback("primitive id")
		}
		if comma {
			e.buf = append(e.buf, ',')
		}
		e.buf = append(e.buf, `"id":`...)
		e.buf = appendString(e.buf, id.Get(vf).String())
	}
	e.buf = append(e.buf, '}')
	return nil
}

// primitive is jsonformat's marshalPrimitiveType for the kinds it supports.
func (e *encoder) primitive(pb protoreflect.Message, in *msgInfo) error {
	switch in.prim {
	case primString, primCodeString:
		e.buf = appendString(e.buf, pb.Get(in.value).String())
	case primBool:
		e.buf = strconv.AppendBool(e.buf, pb.Get(in.value).Bool())
	case primInt:
		e.buf = strconv.AppendInt(e.buf, pb.Get(in.value).Int(), 10)
	case primUint:
		e.buf = strconv.AppendUint(e.buf, pb.Get(in.value).Uint(), 10)
	case primDecimal:
		s := pb.Get(in.value).String()
		if !jsonNumber(s) {
			return fallback("decimal")
		}
		e.buf = append(e.buf, s...)
	case primCodeEnum:
		e.buf = appendString(e.buf, in.codes[pb.Get(in.value).Enum()])
	case primDate:
		d, ok := pb.Interface().(*dpb.Date)
		if !ok || (d.GetTimezone() != "UTC" && d.GetTimezone() != "Z") {
			return fallback("date zone")
		}
		var layout string
		switch d.GetPrecision() {
		case dpb.Date_DAY:
			layout = "2006-01-02"
		case dpb.Date_MONTH:
			layout = "2006-01"
		case dpb.Date_YEAR:
			layout = "2006"
		default:
			return fallback("date precision")
		}
		e.buf = append(e.buf, '"')
		e.buf = utcTime(d.GetValueUs()).AppendFormat(e.buf, layout)
		e.buf = append(e.buf, '"')
	case primDateTime:
		// jsonpbhelper.GetTimeFromUsec: "Z" and "UTC" are both the UTC
		// location; only "Z" gets the ...Z layouts, "UTC" the offset ones
		// (+00:00). Other zones are left to jsonformat.
		d, ok := pb.Interface().(*dpb.DateTime)
		if !ok || (d.GetTimezone() != "Z" && d.GetTimezone() != "UTC") {
			return fallback("dateTime zone")
		}
		z := d.GetTimezone() == "Z"
		var layout string
		switch d.GetPrecision() {
		case dpb.DateTime_SECOND:
			layout = pick(z, "2006-01-02T15:04:05Z", "2006-01-02T15:04:05-07:00")
		case dpb.DateTime_MILLISECOND:
			layout = pick(z, "2006-01-02T15:04:05.000Z", "2006-01-02T15:04:05.000-07:00")
		case dpb.DateTime_MICROSECOND:
			layout = pick(z, "2006-01-02T15:04:05.000000Z", "2006-01-02T15:04:05.000000-07:00")
		case dpb.DateTime_DAY:
			layout = "2006-01-02"
		case dpb.DateTime_MONTH:
			layout = "2006-01"
		case dpb.DateTime_YEAR:
			layout = "2006"
		default:
			return fallback("dateTime precision")
		}
		e.buf = append(e.buf, '"')
		e.buf = utcTime(d.GetValueUs()).AppendFormat(e.buf, layout)
		e.buf = append(e.buf, '"')
	case primInstant:
		s, err := jsonformat.SerializeInstant(pb.Interface())
		if err != nil {
			return fallback("instant")
		}
		e.buf = appendString(e.buf, s)
	default:
		return fallback("primitive kind")
	}
	return nil
}

func pick(cond bool, a, b string) string {
	if cond {
		return a
	}
	return b
}

// utcTime is jsonpbhelper.GetTimeFromUsec for the UTC zone.
func utcTime(us int64) time.Time {
	return time.Unix(us/1e6, (us%1e6)*1000).In(time.UTC)
}

// jsonNumber reports whether s is a JSON number with nothing around it
// (what encoding/json passes through unchanged for a raw value).
func jsonNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - j
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// choiceName is jsonformat's JSON name of a choice field value:
// SnakeToLowerCamel(field + "_" + CamelToSnake(oneof field JSON name)).
func choiceName(field protoreflect.Name, fd protoreflect.FieldDescriptor) string {
	return snakeToLowerCamel(string(field) + "_" + camelToSnake(fd.JSONName()))
}

func camelToSnake(camelCase string) string {
	snakeCase := make([]rune, 0, len(camelCase))
	for _, c := range camelCase {
		if !unicode.IsLower(c) {
			if len(snakeCase) > 0 {
				snakeCase = append(snakeCase, '_')
			}
		}
		snakeCase = append(snakeCase, unicode.ToLower(c))
	}
	return string(snakeCase)
}

func snakeToLowerCamel(s string) string {
	if len(s) == 0 {
		return s
	}
	camel := make([]rune, 0, len(s))
	upper := true
	for _, c := range s {
		if c == '_' {
			upper = true
		} else if upper {
			upper = false
			camel = append(camel, unicode.ToUpper(c))
		} else {
			camel = append(camel, unicode.ToLower(c))
		}
	}
	cs := string(camel)
	return strings.ToLower(cs[:1]) + cs[1:]
}

const hexDigits = "0123456789abcdef"

// appendString is encoding/json's string encoding with HTML escaping off
// (jsonformat's Encoder uses SetEscapeHTML(false)).
func appendString(dst []byte, src string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(src); {
		if b := src[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, src[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(src[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, src[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, src[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, src[start:]...)
	return append(dst, '"')
}
