package scope_test

import (
	"encoding/json"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/keygate/keygate/caddymodule/scope"
)

func TestReadFacts(t *testing.T) {
	f, err := scope.ReadFacts(strings.NewReader(`{"id":"m1","type":"Email","server":"s1","from":[{"name":"a","email":"a@x"}],
		"html":{"body":"<p>\"id\":\"m2\",\"server\":\"s2\"</p>","links":[{"id":"nested","server":"s9"}]},
		"attachments":[{"id":"a1","fileName":"a.pdf","length":12.5e3},{"contentType":"x"},{"id":"a2","id":"a2"}],
		"metadata":{"headers":[{"field":"server","value":"s3"}]},"received":null,"ok":true,"n":-0.5E-2}`))
	if err != nil {
		t.Fatal(err)
	}
	if f.ID != "m1" || f.Server != "s1" || strings.Join(f.Attachments, ",") != "a1,a2" || len(f.Items) != 0 {
		t.Fatalf("facts = %+v", f)
	}
	f, err = scope.ReadFacts(strings.NewReader(`{"items":[{"id":"p1","emailClient":"x"},{"id":"p2"}],"attachments":3}`))
	if err != nil || strings.Join(f.Items, ",") != "p1,p2" || len(f.Attachments) != 0 {
		t.Fatalf("previews = %+v, %v", f, err)
	}
}

// Names are matched as a client may read them: escaped, or in another
// letter case (Go's encoding/json folds case, ſ and K included).
func TestReadFactsNames(t *testing.T) {
	for _, body := range []string{
		`{"\u0073erver":"s1"}`,
		`{"SERVER":"s1"}`,
		`{"ſerver":"s1"}`,
		`{"server":"s\u0031"}`,
	} {
		f, err := scope.ReadFacts(strings.NewReader(body))
		if err != nil || f.Server != "s1" {
			t.Errorf("%s: server %q, %v", body, f.Server, err)
		}
	}
}

// A body that names two servers is not read at all: a JavaScript client
// reads the last server, Go's encoding/json the last of any letter case,
// another parser the first. Same for two ids.
func TestReadFactsRefusesTwoReadings(t *testing.T) {
	for _, body := range []string{
		`{"id":"m1","server":"mine","html":"x","server":"other"}`,
		`{"id":"m1","server":"mine","Server":"other"}`,
		`{"id":"m1","server":"mine","\u0053erver":"other"}`,
		`{"id":"m1","server":"mine","ſerver":"other"}`,
		`{"id":"m1","id":"m2","server":"mine"}`,
		`{"server":"mine","attachments":[{"id":"a1","ID":"a2"}]}`,
	} {
		if f, err := scope.ReadFacts(strings.NewReader(body)); err == nil {
			t.Errorf("%s read as %+v", body, f)
		}
	}
	// The same value twice is one reading.
	if f, err := scope.ReadFacts(strings.NewReader(`{"server":"s1","SERVER":"s1"}`)); err != nil || f.Server != "s1" {
		t.Errorf("a repeated identical server: %+v %v", f, err)
	}
}

// Whatever encoding/json would refuse, ReadFacts refuses: keygate never
// reads a body that a client would read otherwise.
func TestReadFactsRefusesWhatEncodingJSONRefuses(t *testing.T) {
	for _, body := range []string{
		``, ` `,
		`{"server":"s1"`, `{"server":"s1"}x`, `{"server":"s1"}{}`, `{"server":"s1",}`,
		`{"server":"s1" "id":"m"}`, `{server:"s1"}`, `{'server':'s1'}`,
		"\xef\xbb\xbf{\"server\":\"s1\"}", // a byte-order mark
		`{"server":"s1","x":tru}`, `{"server":"s1","x":truex}`, `{"server":"s1","x":nul}`,
		`{"server":"s1","x":01}`, `{"server":"s1","x":1.}`, `{"server":"s1","x":.5}`, `{"server":"s1","x":1e}`,
		`{"server":"s1","x":-}`, `{"server":"s1","x":+1}`, `{"server":"s1","x":0x1}`, `{"server":"s1","x":NaN}`,
		`{"server":"s1","x":"a` + "\n" + `b"}`, `{"server":"s1","x":"\x"}`, `{"server":"s1","x":"\u12"}`,
		`{"server":"s1","x":[1,]}`, `{"server":"s1","x":[1 2]}`, `{"server":"s1","x":{"a"}}`,
	} {
		if json.Valid([]byte(body)) {
			t.Fatalf("test case %q is valid JSON", body)
		}
		if f, err := scope.ReadFacts(strings.NewReader(body)); err == nil {
			t.Errorf("%q read as %+v", body, f)
		}
	}
}

// A server that is not a string is not one: fail closed rather than
// guess what a client makes of it.
func TestReadFactsServerMustBeAString(t *testing.T) {
	for _, body := range []string{`[]`, `"s1"`, `null`, `[{"server":"s1"}]`, `{"server":null}`, `{"server":1}`, `{"server":["s1"]}`, `{"server":{"id":"s1"}}`} {
		if f, err := scope.ReadFacts(strings.NewReader(body)); err == nil {
			t.Errorf("%s read as %+v", body, f)
		}
	}
}

// Adversarial shapes take bounded memory: deep nesting is refused, huge
// strings are skipped without being kept, huge ids are refused.
func TestReadFactsBounds(t *testing.T) {
	deep := `{"server":"s1","x":` + strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000) + `}`
	if _, err := scope.ReadFacts(strings.NewReader(deep)); err == nil || !strings.Contains(err.Error(), "nested too deep") {
		t.Errorf("deep nesting: %v", err)
	}
	ok := `{"server":"s1","x":` + strings.Repeat(`{"a":[`, 200) + strings.Repeat(`]}`, 200) + `}`
	if _, err := scope.ReadFacts(strings.NewReader(ok)); err != nil {
		t.Errorf("nesting of 400: %v", err)
	}
	if _, err := scope.ReadFacts(strings.NewReader(`{"server":"` + strings.Repeat("s", 2000) + `"}`)); err == nil {
		t.Error("a 2000-byte server was read")
	}
	many := `{"server":"s1","attachments":[` + strings.Repeat(`{"id":"a"},`, 5000) + `{"id":"a"}]}`
	if _, err := scope.ReadFacts(strings.NewReader(many)); err == nil {
		t.Error("5001 attachment ids were kept")
	}

	// 64 MiB of string, streamed: read without keeping it.
	huge := io.MultiReader(strings.NewReader(`{"id":"m1","html":"`), &repeat{b: 'x', n: 64 << 20}, strings.NewReader(`","server":"s1"}`))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f, err := scope.ReadFacts(huge)
	runtime.ReadMemStats(&after)
	if err != nil || f.Server != "s1" || f.ID != "m1" {
		t.Fatalf("huge string: %+v, %v", f, err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("reading a 64 MiB string allocated %d bytes", n)
	}
}

// repeat reads n bytes of b.
type repeat struct {
	b byte
	n int
}

func (r *repeat) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.n)
	for i := range n {
		p[i] = r.b
	}
	r.n -= n
	return n, nil
}
