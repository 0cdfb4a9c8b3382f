package scope

import (
	"errors"
	"net/http"
	"testing"
)

func TestMethodOverride(t *testing.T) {
	refused := []struct {
		header http.Header
		query  string
	}{
		{http.Header{"X-Http-Method-Override": {"DELETE"}}, ""},
		{http.Header{"x-http-method-override": {"GET"}}, ""},
		{http.Header{"X-Http-Method": {"PUT"}}, ""},
		{http.Header{"X-Method-Override": {"DELETE"}}, ""},
		{http.Header{"X_http_method_override": {"DELETE"}}, ""},
		{http.Header{"X-Method_Override": {"DELETE"}}, ""},
		{http.Header{"X.Http.Method": {"DELETE"}}, ""},
		{nil, "_method=DELETE"},
		{nil, "server=abcd1234&_METHOD=delete"},
		{nil, "%5Fmethod=DELETE"},
		{nil, "%5fMethod"},
		{nil, "x=1;_method=DELETE"},
		{nil, "+_method=DELETE"},
	}
	for _, c := range refused {
		if err := MethodOverride(c.header, c.query); !errors.Is(err, ErrAmbiguous) {
			t.Errorf("MethodOverride(%v, %q) = %v, want ErrAmbiguous", c.header, c.query, err)
		}
	}
	for _, q := range []string{"", "server=abcd1234", "method=DELETE", "_methods=x", "x=_method", "%zz=1"} {
		h := http.Header{"Content-Type": {"application/json"}, "X-Http-Method-Overrides": {"x"}}
		if err := MethodOverride(h, q); err != nil {
			t.Errorf("MethodOverride(%q) = %v", q, err)
		}
	}
}
