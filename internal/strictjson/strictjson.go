// Package strictjson reads chosen members of a JSON object from another
// party (a token or introspection answer) the way a careful parser must:
// names matched exactly, not case-insensitively as encoding/json's struct
// decoding does, and a chosen member given twice refused, since parsers
// disagree on which one counts.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Members reads body, which must be one JSON object, and returns the values
// of the members named, nil for those absent. Other members are ignored
// (RFC 6749 §5.1, RFC 7662 §2.2). A named member that appears twice is
// refused.
func Members(body []byte, names ...string) ([]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	values := make([]json.RawMessage, len(names))
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		name, _ := t.(string) // a member name, since Token checks the syntax
		if i := slices.Index(names, name); i >= 0 {
			if values[i] != nil {
				return nil, fmt.Errorf("member %q repeated", name)
			}
			values[i] = v
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return values, nil
}

// String returns the JSON string v, which must be one.
func String(v json.RawMessage) (string, bool) {
	var s string
	if len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &s) != nil {
		return "", false
	}
	return s, true
}
