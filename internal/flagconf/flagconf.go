// Package flagconf fills a flag.FlagSet from three sources, each flag taking
// its value from the first that sets it: the command line, the environment
// variable MESHAUTH_<FLAG_NAME> (dashes become underscores), then the config
// file named by --config (YAML or JSON, keys are flag names). Defaults apply
// last. One set of names serves all three, so the docs of a flag are the docs
// of its variable and its config key.
package flagconf

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// EnvPrefix is prepended to a flag's upper-cased name to get its environment
// variable.
const EnvPrefix = "MESHAUTH_"

// EnvName returns the environment variable that sets the named flag.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse registers --config on fs, parses args, then sets every flag not given
// on the command line from the environment or the config file. Repeatable
// flags (flag.Value implementations that append) take a YAML list in the file
// and a comma-separated list in the environment.
func Parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	return ParseWith(fs, args, getenv, nil)
}

// ParseWith is Parse for commands whose config file also has structured
// sections that no flag can express (lists of trusted issuers, route
// policies): keys of the file that are not flag names are decoded into
// structured, a pointer to a struct with yaml tags, and unknown keys are
// errors. A nil structured means every key must be a flag name.
func ParseWith(fs *flag.FlagSet, args []string, getenv func(string) string, structured any) error {
	if getenv == nil {
		getenv = os.Getenv
	}
	configPath := fs.String("config", "", "read flags from this YAML or JSON file (keys are flag names)")
	fs.Usage = func() { Usage(fs) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (flags go before arguments; see --help)", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	if *configPath == "" && !given["config"] {
		*configPath = getenv(EnvName("config"))
	}
	fileValues := map[string][]string{}
	if *configPath != "" {
		var err error
		if fileValues, err = readConfig(*configPath, fs, structured); err != nil {
			return err
		}
	}

	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || f.Name == "config" {
			return
		}
		if v := getenv(EnvName(f.Name)); v != "" {
			for _, part := range splitList(f, v) {
				if err := fs.Set(f.Name, part); err != nil {
					errs = append(errs, fmt.Errorf("environment variable %s: %w", EnvName(f.Name), err))
				}
			}
			return
		}
		for _, v := range fileValues[f.Name] {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("config file %s, key %q: %w", *configPath, f.Name, err))
			}
		}
	})
	return errors.Join(errs...)
}

// repeatable is implemented by flag values that accept the flag several
// times; their environment value is a comma-separated list.
type repeatable interface{ IsRepeatable() bool }

func splitList(f *flag.Flag, v string) []string {
	if r, ok := f.Value.(repeatable); ok && r.IsRepeatable() {
		return strings.Split(v, ",")
	}
	return []string{v}
}

// DecodeSections decodes data, the content of the config file at path,
// as ParseWith does, into structured alone: for a section reloaded while
// the command runs. Keys that are neither flags of fs nor sections are
// errors; flag values are not read.
func DecodeSections(path string, data []byte, fs *flag.FlagSet, structured any) error {
	_, err := decodeConfig(path, data, fs, structured)
	return err
}

func readConfig(path string, fs *flag.FlagSet, structured any) (map[string][]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	return decodeConfig(path, data, fs, structured)
}

func decodeConfig(path string, data []byte, fs *flag.FlagSet, structured any) (map[string][]string, error) {
	var doc map[string]yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse config file %s: %w", path, err)
	}
	out := map[string][]string{}
	rest := &yaml.Node{Kind: yaml.MappingNode}
	for key, node := range doc {
		if fs.Lookup(key) == nil || key == "config" {
			if structured == nil {
				return nil, fmt.Errorf("config file %s, line %d: unknown key %q (keys are the flag names of this command; see --help)", path, node.Line, key)
			}
			rest.Content = append(rest.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, &node)
			continue
		}
		switch node.Kind {
		case yaml.ScalarNode:
			out[key] = []string{node.Value}
		case yaml.SequenceNode:
			for _, item := range node.Content {
				if item.Kind != yaml.ScalarNode {
					return nil, fmt.Errorf("config file %s, line %d: key %q: list items must be plain values", path, item.Line, key)
				}
				out[key] = append(out[key], item.Value)
			}
		default:
			return nil, fmt.Errorf("config file %s, line %d: key %q must be a value or a list of values", path, node.Line, key)
		}
	}
	if isStructPointer(structured) {
		// A typo in a structured section is an error with its line in the
		// file, not a silent default.
		if err := decodeSections(data, structured, func(key string) bool { return key != "config" && fs.Lookup(key) != nil }); err != nil {
			return nil, fmt.Errorf("config file %s: %w (keys are the flag names of this command or its documented sections; see --help)", path, err)
		}
	} else if structured != nil && len(rest.Content) > 0 {
		b, err := yaml.Marshal(rest)
		if err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(structured); err != nil {
			return nil, fmt.Errorf("config file %s: %w (keys are the flag names of this command or its documented sections; see --help)", path, err)
		}
	}
	return out, nil
}

// Usage prints every flag of fs with its environment variable.
func Usage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, "Usage: meshauth %s [flags]\n\nFlags (each also settable as an environment variable or a config file key):\n", fs.Name())
	PrintDefaults(w, fs)
}

// PrintDefaults writes one entry per flag, sorted by name.
func PrintDefaults(w io.Writer, fs *flag.FlagSet) {
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	for _, f := range flags {
		kind, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  --%s %s\n      %s\n      env %s", f.Name, kind, usage, EnvName(f.Name))
		if f.DefValue != "" && f.DefValue != "[]" {
			fmt.Fprintf(w, "; default %s", f.DefValue)
		}
		fmt.Fprintln(w)
	}
}

// StringList is a repeatable string flag.
type StringList []string

func (l *StringList) String() string     { return strings.Join(*l, ",") }
func (l *StringList) Set(v string) error { *l = append(*l, v); return nil }
func (l *StringList) IsRepeatable() bool { return true }

func isStructPointer(v any) bool {
	t := reflect.TypeOf(v)
	return t != nil && t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct
}

// decodeSections decodes the config file data strictly into structured, a
// pointer to a struct of the file's sections, skipping the keys that are
// flags. It decodes the file itself, not a re-encoding of its sections, so
// that errors give the file's own line numbers: into a struct with
// structured's fields plus an inline map that takes the top-level keys that
// are not sections, which must be flags.
func decodeSections(data []byte, structured any, isFlag func(string) bool) error {
	dst := reflect.ValueOf(structured).Elem()
	n := dst.NumField()
	withRest := make([]reflect.StructField, 0, n+1)
	for i := range n {
		f := dst.Type().Field(i) // exported: yaml decodes only those
		withRest = append(withRest, reflect.StructField{Name: f.Name, Type: f.Type, Tag: f.Tag, Anonymous: f.Anonymous})
	}
	withRest = append(withRest, reflect.StructField{Name: "FlagKeys", Type: reflect.TypeFor[map[string]yaml.Node](), Tag: `yaml:",inline"`})
	v := reflect.New(reflect.StructOf(withRest))
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v.Interface()); err != nil && err != io.EOF {
		return err
	}
	for key := range v.Elem().Field(n).Interface().(map[string]yaml.Node) {
		if !isFlag(key) {
			return fmt.Errorf("line %d: unknown key %q", keyLine(data, key), key)
		}
	}
	for i := range n {
		dst.Field(i).Set(v.Elem().Field(i))
	}
	return nil
}

// keyLine returns the line of the top-level key in the YAML document data.
func keyLine(data []byte, key string) int {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil || len(root.Content) == 0 {
		return 0
	}
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i].Line
		}
	}
	return 0
}
