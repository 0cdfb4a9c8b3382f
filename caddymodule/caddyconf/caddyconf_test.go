package caddyconf

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"secret", "secret", 0}, {"secrte", "secret", 2}, {"realm", "relam", 2}, {"dns", "dsn", 2}, {"x", "store", 5}} {
		if got := EditDistance(c.a, c.b); got != c.want {
			t.Errorf("EditDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

func TestUnknownOption(t *testing.T) {
	d := caddyfile.NewTestDispenser("x {\n\trelam y\n}")
	d.Next()
	d.NextBlock(0)
	err := UnknownOption(d, "keygate directive", "realm", "header")
	if err == nil || !strings.Contains(err.Error(), `unknown keygate directive "relam": did you mean realm?`) || !strings.Contains(err.Error(), "Testfile:2") {
		t.Fatalf("error = %v", err)
	}
	d = caddyfile.NewTestDispenser("x {\n\tzzz\n}")
	d.Next()
	d.NextBlock(0)
	if err := UnknownOption(d, "option", "realm"); err == nil || strings.Contains(err.Error(), "did you mean") {
		t.Fatalf("a far-off word got a suggestion: %v", err)
	}
}

func TestValidHeaderName(t *testing.T) {
	for s, want := range map[string]bool{"X-Keygate-Account": true, "x_a.b~c": true, "": false, "X A": false, "X:A": false, "X\nA": false, "Ä": false} {
		if got := ValidHeaderName(s); got != want {
			t.Errorf("ValidHeaderName(%q) = %v", s, got)
		}
	}
}
