package kap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

var (
	timeType = reflect.TypeOf(Time{})
	dateType = reflect.TypeOf(Date(""))
)

// checkShape walks a JSON document against the Go type of a record before
// it is decoded, so that every problem encoding/json would hide or report
// without a full path is named: unknown fields (names are case-sensitive,
// unlike encoding/json), duplicate keys, wrong JSON types, and trailing
// data. Values are never echoed.
func checkShape(data []byte, t reflect.Type) []Issue {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var issues []Issue
	add := func(path, format string, args ...any) {
		if path == "" {
			path = "(document)"
		}
		issues = append(issues, Issue{Path: path, Reason: fmt.Sprintf(format, args...)})
	}
	var walk func(path string, t reflect.Type, depth int) error
	walk = func(path string, t reflect.Type, depth int) error {
		if depth > 32 {
			return errors.New("nesting deeper than 32 levels")
		}
		for t != nil && t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		want := expected(t)
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				fields := map[string]reflect.Type{}
				if t != nil && t.Kind() == reflect.Struct && t != timeType {
					for i := 0; i < t.NumField(); i++ {
						f := t.Field(i)
						name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
						if name != "" && name != "-" {
							fields[name] = f.Type
						}
					}
				} else if t != nil {
					add(path, "must be %s, not a JSON object", want)
					t = nil
				}
				seen := map[string]bool{}
				for dec.More() {
					kt, err := dec.Token()
					if err != nil {
						return err
					}
					k := kt.(string)
					p := k
					if path != "" {
						p = path + "." + k
					}
					ft, known := fields[k]
					switch {
					case t == nil:
					case seen[k]:
						add(p, "appears twice in the object")
					case !known:
						hint := ""
						for name := range fields {
							if strings.EqualFold(name, k) {
								hint = fmt.Sprintf(" (field names are case-sensitive: %q)", name)
							}
						}
						add(p, "unknown field%s", hint)
					}
					seen[k] = true
					if err := walk(p, ft, depth+1); err != nil {
						return err
					}
				}
				_, err := dec.Token()
				return err
			case '[':
				var et reflect.Type
				if t != nil && t.Kind() == reflect.Slice {
					et = t.Elem()
				} else if t != nil {
					add(path, "must be %s, not a JSON array", want)
				}
				for i := 0; dec.More(); i++ {
					if err := walk(fmt.Sprintf("%s[%d]", path, i), et, depth+1); err != nil {
						return err
					}
				}
				_, err := dec.Token()
				return err
			}
		case string:
			if t != nil && t.Kind() != reflect.String && t != timeType {
				add(path, "must be %s, not a JSON string", want)
			}
		case json.Number:
			if t != nil {
				switch t.Kind() {
				case reflect.Float64, reflect.Float32:
				case reflect.Int, reflect.Int64, reflect.Int32:
					if strings.ContainsAny(v.String(), ".eE") {
						add(path, "must be a whole number")
					}
				default:
					add(path, "must be %s, not a JSON number", want)
				}
			}
		case bool:
			if t != nil && t.Kind() != reflect.Bool {
				add(path, "must be %s, not true or false", want)
			}
		case nil:
			if t != nil && t.Kind() != reflect.Pointer && t.Kind() != reflect.Slice {
				add(path, "must be %s, not null", want)
			}
		}
		return nil
	}
	if err := walk("", t, 0); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := position(data, se.Offset)
			return []Issue{{Reason: fmt.Sprintf("malformed JSON at line %d, column %d", line, col)}}
		}
		return []Issue{{Reason: "malformed JSON: " + strings.TrimPrefix(err.Error(), "json: ")}}
	}
	if _, err := dec.Token(); err == nil {
		issues = append(issues, Issue{Reason: "unexpected data after the record's JSON object"})
	}
	return issues
}

func expected(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	switch {
	case t == timeType:
		return "a date-time string"
	case t == dateType:
		return "a date string"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Float64, reflect.Float32, reflect.Int, reflect.Int64, reflect.Int32:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "an array"
	case reflect.Struct:
		return "an object"
	}
	return "a " + t.Kind().String()
}
