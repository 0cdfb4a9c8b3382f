package caddymodule

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
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
	defer c.close()
	f, err := c.facts()
	if err != nil || f.ID != "m1" || f.Server != "s1" {
		t.Fatalf("facts = %+v, %v", f, err)
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
	z := gzipped(t, `{"items":[{"id":"p1"}]}`)
	c.Write(z[:5])
	c.Flush()
	c.Write(z[5:])
	if !client.Flushed || !bytes.Equal(client.Body.Bytes(), z) || client.Header().Get("Content-Encoding") != "gzip" {
		t.Fatal("teeing changed what the client got")
	}
	defer c.close()
	f, err := c.facts()
	if err != nil || len(f.Items) != 1 || f.Items[0] != "p1" {
		t.Fatalf("decoded facts = %+v, %v", f, err)
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
	if _, err := c.facts(); err == nil {
		t.Fatal("body over the limit was readable")
	}
	c.close()

	bomb := gzipped(t, `{"server":"s1","html":"`+strings.Repeat("0", 1<<20)+`"}`)
	c = newCapture(nil, true, 64<<10)
	c.Header().Set("Content-Encoding", "gzip")
	c.Write(bomb)
	if _, err := c.facts(); err == nil || !strings.Contains(err.Error(), "decoded response larger") {
		t.Fatalf("a gzip bomb decoded: %v", err)
	}
	c.close()

	c = newCapture(nil, true, 1024)
	c.Header().Set("Content-Encoding", "br")
	c.Write([]byte("x"))
	if _, err := c.facts(); err == nil {
		t.Fatal("an unknown encoding was read")
	}
	c.close()
}

func TestCaptureNon200IsNotCopied(t *testing.T) {
	client := httptest.NewRecorder()
	c := newCapture(client, false, 1024)
	c.WriteHeader(http.StatusAccepted)
	c.Write([]byte("later"))
	if client.Code != http.StatusAccepted || c.n != 0 || c.read != nil {
		t.Fatalf("202 handled as %d, read %d bytes", client.Code, c.n)
	}
}

// A held body past heldInMemory waits in a file, not in memory, and comes
// back byte for byte, gzip included.
func TestCaptureHoldSpillsLargeBodies(t *testing.T) {
	noise := make([]byte, 1<<20)
	rand.Read(noise)
	html := strings.Repeat("<p>ab\\u00e9 \\\"q\\\"</p>", 100_000) + hex.EncodeToString(noise) // ~4 MB, escapes included
	body := `{"id":"m1","type":"Email","server":"s1","html":"` + html + `","attachments":[{"id":"a1"},{"id":"a2"}]}`
	z := gzipped(t, body)
	c := newCapture(httptest.NewRecorder(), true, 8<<20)
	defer c.close()
	c.Header().Set("Content-Encoding", "gzip")
	c.WriteHeader(http.StatusOK)
	for p := z; len(p) > 0; {
		n := min(len(p), 32<<10)
		c.Write(p[:n])
		p = p[n:]
	}
	if c.held.file == nil || len(c.held.mem) > heldInMemory {
		t.Fatalf("held %d bytes in memory, file %v", len(c.held.mem), c.held.file)
	}
	f, err := c.facts()
	if err != nil || f.ID != "m1" || f.Server != "s1" || len(f.Attachments) != 2 {
		t.Fatalf("facts = %+v, %v", f, err)
	}
	w := httptest.NewRecorder()
	if err := c.release(w); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.Body.Bytes(), z) {
		t.Fatalf("released %d bytes, want the %d held", w.Body.Len(), len(z))
	}
}

// A response keygate stops reading (broken JSON early on) still streams
// whole to the client.
func TestCaptureTeeAfterReadingFails(t *testing.T) {
	client := httptest.NewRecorder()
	c := newCapture(client, false, 1<<20)
	defer c.close()
	c.WriteHeader(http.StatusOK)
	c.Write([]byte("not json"))
	c.Write([]byte(strings.Repeat("x", 100_000)))
	if client.Body.Len() != 8+100_000 {
		t.Fatalf("client got %d bytes", client.Body.Len())
	}
	if _, err := c.facts(); err == nil {
		t.Fatal("broken JSON was read")
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
