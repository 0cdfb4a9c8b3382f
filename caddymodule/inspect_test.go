package caddymodule

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func gzipped(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.Bytes()
}

func TestCaptureHold(t *testing.T) {
	c := newCapture(httptest.NewRecorder(), true, 1024)
	c.Header().Set("Content-Type", "application/json")
	c.Header().Set("X-Ms-Delay", "1000")
	c.WriteHeader(http.StatusOK)
	io.Copy(c, strings.NewReader(`{"id":"m1",`)) // through ReadFrom
	c.Write([]byte(`"server":"s1"}`))
	c.Flush() // must not reach the client
	body, err := c.body()
	if err != nil || string(body) != `{"id":"m1","server":"s1"}` {
		t.Fatalf("body = %q, %v", body, err)
	}
	w := httptest.NewRecorder()
	if err := c.release(w); err != nil {
		t.Fatal(err)
	}
	if w.Code != 200 || w.Header().Get("X-Ms-Delay") != "1000" || w.Body.String() != `{"id":"m1","server":"s1"}` {
		t.Fatalf("released %d %v %q", w.Code, w.Header(), w.Body)
	}
}

func TestCaptureHoldSendsNothingUntilReleased(t *testing.T) {
	client := httptest.NewRecorder()
	c := newCapture(client, true, 1024)
	c.Header().Set("Content-Type", "application/json")
	c.WriteHeader(http.StatusOK)
	c.Write([]byte(`{"server":"other"}`))
	c.Flush()
	if client.Code != 200 || client.Body.Len() != 0 || len(client.Header()) != 0 || client.Flushed {
		t.Fatalf("a held response reached the client: %d %v %q flushed=%v", client.Code, client.Header(), client.Body, client.Flushed)
	}
}

func TestCaptureTee(t *testing.T) {
	client := httptest.NewRecorder()
	c := newCapture(client, false, 1024)
	c.Header().Set("Content-Encoding", "gzip")
	c.WriteHeader(http.StatusOK)
	z := gzipped(t, `{"items":[]}`)
	c.Write(z[:5])
	c.Flush()
	c.Write(z[5:])
	if !client.Flushed || !bytes.Equal(client.Body.Bytes(), z) || client.Header().Get("Content-Encoding") != "gzip" {
		t.Fatal("teeing changed what the client got")
	}
	body, err := c.body()
	if err != nil || string(body) != `{"items":[]}` {
		t.Fatalf("decoded copy = %q, %v", body, err)
	}
}

func TestCaptureLimits(t *testing.T) {
	client := httptest.NewRecorder()
	c := newCapture(client, false, 8)
	c.WriteHeader(http.StatusOK)
	c.Write([]byte("0123456789"))
	if client.Body.String() != "0123456789" {
		t.Fatal("a body over the limit must still stream to the client")
	}
	if _, err := c.body(); err == nil {
		t.Fatal("body over the limit was readable")
	}

	bomb := gzipped(t, strings.Repeat("0", 1<<20))
	c = newCapture(nil, true, 64<<10)
	c.Header().Set("Content-Encoding", "gzip")
	c.Write(bomb)
	if _, err := c.body(); err == nil || !strings.Contains(err.Error(), "decoded response larger") {
		t.Fatalf("a gzip bomb decoded: %v", err)
	}

	c = newCapture(nil, true, 1024)
	c.Header().Set("Content-Encoding", "br")
	c.Write([]byte("x"))
	if _, err := c.body(); err == nil {
		t.Fatal("an unknown encoding was read")
	}
}

func TestCaptureNon200IsNotCopied(t *testing.T) {
	client := httptest.NewRecorder()
	c := newCapture(client, false, 1024)
	c.WriteHeader(http.StatusAccepted)
	c.Write([]byte("later"))
	if client.Code != http.StatusAccepted || c.buf.Len() != 0 {
		t.Fatalf("202 handled as %d, copied %d bytes", client.Code, c.buf.Len())
	}
}

func TestNarrowAcceptEncoding(t *testing.T) {
	for in, want := range map[string]string{
		"":                     "",
		"gzip":                 "gzip",
		"br, gzip;q=0.5, zstd": "gzip",
		"gzip;q=0":             "",
		"gzip; q=0.000":        "",
		"br":                   "",
		"deflate, GZIP":        "gzip",
		"*":                    "",
	} {
		h := http.Header{}
		if in != "" {
			h.Set("Accept-Encoding", in)
		}
		narrowAcceptEncoding(h)
		if got := h.Get("Accept-Encoding"); got != want {
			t.Errorf("narrowAcceptEncoding(%q) = %q, want %q", in, got, want)
		}
	}
}
