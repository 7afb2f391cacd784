// Package argocdhealth tests the Argo CD health checks of charts/argocd: each health.lua
// against the cases of its health_test.yaml, run the way Argo CD runs a script from
// argocd-cm, and charts/argocd/argocd-cm.yaml against the scripts it is generated from.
//
//	go test -count=1 ./...               # check
//	go test -count=1 ./... -args -update # regenerate ../../charts/argocd/argocd-cm.yaml
package argocdhealth

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite charts/argocd/argocd-cm.yaml from the scripts")

const (
	charts     = "../../charts/argocd"
	group      = "dr.titan.io"
	apiVersion = "dr.titan.io/v1alpha1"
	crdsFile   = "../../crds/crds.yaml"
	configMap  = charts + "/argocd-cm.yaml"
)

// The format of Argo CD's resource_customizations/<group>/<Kind>/health_test.yaml.
type healthTests struct {
	Tests []struct {
		HealthStatus healthStatus `yaml:"healthStatus"`
		InputPath    string       `yaml:"inputPath"`
	} `yaml:"tests"`
}

type healthStatus struct {
	Status  string `yaml:"status"`
	Message string `yaml:"message"`
}

// kinds are the folders under charts/argocd/dr.titan.io that hold a health.lua, sorted.
func kinds(t *testing.T) []string {
	t.Helper()
	scripts, err := filepath.Glob(filepath.Join(charts, group, "*", "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, script := range scripts {
		kinds = append(kinds, filepath.Base(filepath.Dir(script)))
	}
	sort.Strings(kinds)
	if len(kinds) == 0 {
		t.Fatalf("no %s/*/health.lua under %s", group, charts)
	}
	return kinds
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestHealthChecks(t *testing.T) {
	schemas := crdSchemas(t)
	for _, kind := range kinds(t) {
		t.Run(kind, func(t *testing.T) {
			dir := filepath.Join(charts, group, kind)
			script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
			if err != nil {
				t.Fatal(err)
			}
			testsFile := filepath.Join(dir, "health_test.yaml")
			var cases healthTests
			readYAML(t, testsFile, &cases)
			if len(cases.Tests) == 0 {
				t.Fatalf("%s: no tests", testsFile)
			}
			used := map[string]bool{}
			for _, c := range cases.Tests {
				input := filepath.Join(dir, c.InputPath)
				used[filepath.Clean(input)] = true
				want := c.HealthStatus
				t.Run(strings.TrimSuffix(filepath.Base(c.InputPath), ".yaml"), func(t *testing.T) {
					var obj map[string]any
					readYAML(t, input, &obj)
					if obj["apiVersion"] != apiVersion || obj["kind"] != kind {
						t.Fatalf("%s: a %v %v, not a %s %s", input, obj["apiVersion"], obj["kind"], apiVersion, kind)
					}
					if schema, ok := schemas[kind]; !ok {
						t.Fatalf("%s has no CRD of kind %s", crdsFile, kind)
					} else if problems := validate(schema, obj, ""); len(problems) > 0 {
						t.Fatalf("%s is not a valid %s by %s:\n  %s", input, kind, crdsFile, strings.Join(problems, "\n  "))
					}
					got, err := runHealth(string(script), obj)
					if err != nil {
						t.Fatalf("%s on %s: %v", filepath.Join(dir, "health.lua"), input, err)
					}
					if got != want {
						t.Errorf("%s on %s:\n  got  %s %q\n  want %s %q (%s)",
							filepath.Join(dir, "health.lua"), input, got.Status, got.Message, want.Status, want.Message, testsFile)
					}
				})
			}
			inputs, _ := filepath.Glob(filepath.Join(dir, "testdata", "*.yaml"))
			for _, input := range inputs {
				if !used[filepath.Clean(input)] {
					t.Errorf("%s is in no case of %s", input, testsFile)
				}
			}
		})
	}
}

// runHealth runs a health script as Argo CD runs one from argocd-cm (util/lua/lua.go,
// runLua, with useOpenLibs false): a fresh state without the standard libraries, then only
// package, base and table; obj set as Lua tables; one second to finish. (Argo CD also opens
// a reduced os library, which these scripts do not use; it does not open string.)
func runHealth(script string, obj map[string]any) (healthStatus, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return healthStatus{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	value, err := toLua(l, obj)
	if err != nil {
		return healthStatus{}, err
	}
	l.SetGlobal("obj", value)
	if err := l.DoString(script); err != nil {
		return healthStatus{}, err
	}
	hs, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return healthStatus{}, fmt.Errorf("returned a %s, not a table", l.Get(-1).Type())
	}
	var got healthStatus
	for field, into := range map[string]*string{"status": &got.Status, "message": &got.Message} {
		switch v := hs.RawGetString(field).(type) {
		case lua.LString:
			*into = string(v)
		case *lua.LNilType:
		default:
			return healthStatus{}, fmt.Errorf("hs.%s is a %s, not a string", field, v.Type())
		}
	}
	switch got.Status {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
	default:
		// Argo CD shows such a result as Unknown, "Lua returned an invalid health status".
		return healthStatus{}, fmt.Errorf("hs.status %q is not an Argo CD health status", got.Status)
	}
	return got, nil
}

// toLua converts decoded YAML as Argo CD's decodeValue converts an object: maps and lists
// to tables, numbers to LNumber, booleans to LBool, strings to LString.
func toLua(l *lua.LState, value any) (lua.LValue, error) {
	switch v := value.(type) {
	case nil:
		return lua.LNil, nil
	case bool:
		return lua.LBool(v), nil
	case string:
		return lua.LString(v), nil
	case int:
		return lua.LNumber(v), nil
	case int64:
		return lua.LNumber(v), nil
	case uint64:
		return lua.LNumber(v), nil
	case float64:
		return lua.LNumber(v), nil
	case []any:
		table := l.CreateTable(len(v), 0)
		for _, item := range v {
			converted, err := toLua(l, item)
			if err != nil {
				return nil, err
			}
			table.Append(converted)
		}
		return table, nil
	case map[string]any:
		table := l.CreateTable(0, len(v))
		for key, item := range v {
			converted, err := toLua(l, item)
			if err != nil {
				return nil, err
			}
			table.RawSetString(key, converted)
		}
		return table, nil
	}
	return nil, fmt.Errorf("no Lua value for a %T (%v)", value, value)
}

// crdSchemas reads the operator's CRDs: the openAPIV3Schema of v1alpha1 by kind.
func crdSchemas(t *testing.T) map[string]map[string]any {
	t.Helper()
	data, err := os.ReadFile(crdsFile)
	if err != nil {
		t.Fatal(err)
	}
	schemas := map[string]map[string]any{}
	decoder := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var crd struct {
			Spec struct {
				Group string `yaml:"group"`
				Names struct {
					Kind string `yaml:"kind"`
				} `yaml:"names"`
				Versions []struct {
					Name   string `yaml:"name"`
					Schema struct {
						OpenAPIV3Schema map[string]any `yaml:"openAPIV3Schema"`
					} `yaml:"schema"`
				} `yaml:"versions"`
			} `yaml:"spec"`
		}
		if err := decoder.Decode(&crd); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("%s: %v", crdsFile, err)
		}
		for _, version := range crd.Spec.Versions {
			if crd.Spec.Group+"/"+version.Name == apiVersion {
				root := version.Schema.OpenAPIV3Schema
				// The API server adds these to every CRD's schema; metadata is its ObjectMeta.
				properties, _ := root["properties"].(map[string]any)
				properties["apiVersion"] = map[string]any{"type": "string"}
				properties["kind"] = map[string]any{"type": "string"}
				properties["metadata"] = map[string]any{"type": "object"}
				schemas[crd.Spec.Names.Kind] = root
			}
		}
	}
	return schemas
}

// validate checks value against the structural part of an OpenAPI schema as the API server
// would (types, unknown fields, required, enums, patterns, lengths); not the CEL rules.
func validate(schema map[string]any, value any, path string) []string {
	if value == nil {
		if schema["nullable"] == true {
			return nil
		}
		return []string{path + ": null"}
	}
	var problems []string
	fail := func(format string, args ...any) {
		problems = append(problems, path+": "+fmt.Sprintf(format, args...))
	}
	if schema["x-kubernetes-int-or-string"] == true {
		switch value.(type) {
		case int, string:
		default:
			fail("%v is neither an integer nor a string", value)
		}
		return problems
	}
	switch schema["type"] {
	case "object":
		object, ok := value.(map[string]any)
		if !ok {
			fail("%v is not an object", value)
			return problems
		}
		properties, _ := schema["properties"].(map[string]any)
		additional, _ := schema["additionalProperties"].(map[string]any)
		for _, name := range sortedKeys(object) {
			if property, ok := properties[name].(map[string]any); ok {
				problems = append(problems, validate(property, object[name], path+"."+name)...)
			} else if additional != nil {
				problems = append(problems, validate(additional, object[name], path+"."+name)...)
			} else if properties != nil && schema["x-kubernetes-preserve-unknown-fields"] != true {
				fail("unknown field %q", name)
			}
		}
		required, _ := schema["required"].([]any)
		for _, name := range required {
			if _, ok := object[name.(string)]; !ok {
				fail("required field %q is missing", name)
			}
		}
	case "array":
		list, ok := value.([]any)
		if !ok {
			fail("%v is not an array", value)
			return problems
		}
		if limit, ok := schema["maxItems"].(int); ok && len(list) > limit {
			fail("%d items, more than %d", len(list), limit)
		}
		if limit, ok := schema["minItems"].(int); ok && len(list) < limit {
			fail("%d items, fewer than %d", len(list), limit)
		}
		items, _ := schema["items"].(map[string]any)
		for i, item := range list {
			problems = append(problems, validate(items, item, fmt.Sprintf("%s[%d]", path, i))...)
		}
	case "string":
		text, ok := value.(string)
		if !ok {
			fail("%v is not a string", value)
			return problems
		}
		if pattern, ok := schema["pattern"].(string); ok && !regexp.MustCompile(pattern).MatchString(text) {
			fail("%q does not match %s", text, pattern)
		}
		if limit, ok := schema["maxLength"].(int); ok && len([]rune(text)) > limit {
			fail("%q is longer than %d", text, limit)
		}
		if limit, ok := schema["minLength"].(int); ok && len([]rune(text)) < limit {
			fail("%q is shorter than %d", text, limit)
		}
	case "integer":
		number, ok := value.(int)
		if !ok {
			fail("%v is not an integer", value)
			return problems
		}
		// The CRDs write bounds as floats (1.0).
		if limit, ok := schema["minimum"].(float64); ok && float64(number) < limit {
			fail("%d is less than %v", number, limit)
		}
		if limit, ok := schema["maximum"].(float64); ok && float64(number) > limit {
			fail("%d is more than %v", number, limit)
		}
	case "number":
		switch value.(type) {
		case int, float64:
		default:
			fail("%v is not a number", value)
		}
	case "boolean":
		if _, ok := value.(bool); !ok {
			fail("%v is not a boolean", value)
		}
	}
	if enum, ok := schema["enum"].([]any); ok {
		found := false
		for _, allowed := range enum {
			found = found || allowed == value
		}
		if !found {
			fail("%v is not one of %v", value, enum)
		}
	}
	return problems
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for key := range m {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	return keys
}

// generate renders argocd-cm.yaml: every script verbatim, as a literal block, under the
// key by which Argo CD finds a health check for <group>/<Kind>.
func generate(t *testing.T) []byte {
	t.Helper()
	var out bytes.Buffer
	out.WriteString(`# Generated from charts/argocd/dr.titan.io/*/health.lua by tests/argocd-health; do not edit.
# Regenerate: cd tests/argocd-health && go test -count=1 ./... -args -update
#
# Argo CD health checks for the titan-dr kinds, for Argo CD's own argocd-cm ConfigMap:
#   kubectl -n argocd patch configmap argocd-cm --patch-file charts/argocd/argocd-cm.yaml
# or put the data entries under configs.cm of the argo-cd Helm chart.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
`)
	for _, kind := range kinds(t) {
		path := filepath.Join(charts, group, kind, "health.lua")
		script, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		text := string(script)
		// A literal block keeps the text verbatim only if it ends in exactly one newline
		// and has no tab or leading space where the block's indentation is read.
		if !strings.HasSuffix(text, "\n") || strings.HasSuffix(text, "\n\n") || strings.HasPrefix(text, " ") {
			t.Fatalf("%s must start without a space and end in exactly one newline", path)
		}
		fmt.Fprintf(&out, "  %s: |\n", configKey(kind))
		for _, line := range strings.SplitAfter(strings.TrimSuffix(text, "\n"), "\n") {
			if strings.TrimSpace(line) == "" {
				out.WriteString("\n")
			} else {
				out.WriteString("    " + line)
			}
		}
		out.WriteString("\n")
	}
	return out.Bytes()
}

func configKey(kind string) string {
	return "resource.customizations.health." + group + "_" + kind
}

func TestArgoCDConfigMapIsGenerated(t *testing.T) {
	want := generate(t)
	// The generated text must read back as the scripts, byte for byte.
	var cm struct {
		Metadata struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
		Data map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal(want, &cm); err != nil {
		t.Fatalf("the generated ConfigMap does not parse: %v", err)
	}
	if cm.Metadata.Name != "argocd-cm" || len(cm.Data) != len(kinds(t)) {
		t.Fatalf("the generated ConfigMap is %q with %d entries", cm.Metadata.Name, len(cm.Data))
	}
	for _, kind := range kinds(t) {
		script, _ := os.ReadFile(filepath.Join(charts, group, kind, "health.lua"))
		if cm.Data[configKey(kind)] != string(script) {
			t.Errorf("data[%s] of the generated ConfigMap is not %s/%s/health.lua verbatim", configKey(kind), group, kind)
		}
	}
	if *update {
		if err := os.WriteFile(configMap, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(configMap)
	if err != nil {
		t.Fatalf("%v (generate it: cd tests/argocd-health && go test ./... -args -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is not what the scripts generate (first difference at line %d); "+
			"regenerate it: cd tests/argocd-health && go test ./... -args -update", configMap, firstDifference(got, want))
	}
}

func firstDifference(a, b []byte) int {
	al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return i + 1
		}
	}
	return min(len(al), len(bl)) + 1
}
