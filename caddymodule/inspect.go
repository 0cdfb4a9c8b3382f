package caddymodule

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// capture stands in for the client's ResponseWriter on the routes whose
// responses keygate reads. Holding, it keeps the whole response (headers
// included) until the handler has checked it; teeing, it passes everything
// on at once and keeps a copy of a 200 body, up to limit bytes, to learn
// from. Everything else streams untouched: keygate wraps only the routes of
// the table that teach or need checking.
type capture struct {
	w      http.ResponseWriter // the client's; nil for a look-up of keygate's own
	hold   bool
	limit  int
	header http.Header
	status int
	buf    bytes.Buffer
	over   bool // the body passed the limit: it cannot be read
}

func newCapture(w http.ResponseWriter, hold bool, limit int) *capture {
	c := &capture{w: w, hold: hold || w == nil, limit: limit}
	if c.hold {
		c.header = http.Header{}
	} else {
		c.header = w.Header()
	}
	return c
}

func (c *capture) Header() http.Header { return c.header }

func (c *capture) WriteHeader(status int) {
	if c.status != 0 {
		return
	}
	if status >= 100 && status < 200 && status != http.StatusSwitchingProtocols {
		if !c.hold {
			c.w.WriteHeader(status) // informational: pass on, wait for the real one
		}
		return
	}
	c.status = status
	if !c.hold {
		c.w.WriteHeader(status)
	}
}

func (c *capture) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.WriteHeader(http.StatusOK)
	}
	if c.status == http.StatusOK || c.hold {
		if c.buf.Len()+len(p) > c.limit {
			c.over = true
			c.buf.Reset()
		} else if !c.over {
			c.buf.Write(p)
		}
	}
	if c.hold {
		return len(p), nil
	}
	return c.w.Write(p)
}

// ReadFrom keeps io.Copy from going around Write.
func (c *capture) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{c}, r)
}

// FlushError is what http.ResponseController calls: held responses are
// not flushed, teed ones are.
func (c *capture) FlushError() error {
	if c.hold {
		return nil
	}
	return http.NewResponseController(c.w).Flush()
}

func (c *capture) Flush() { c.FlushError() }

// Unwrap lets http.ResponseController reach the client's writer for
// deadlines, and for hijacking when teeing.
func (c *capture) Unwrap() http.ResponseWriter {
	if c.hold || c.w == nil {
		return nil
	}
	return c.w
}

// body returns the 200 body, decoded, if it can be read within the limit.
func (c *capture) body() ([]byte, error) {
	if c.over {
		return nil, fmt.Errorf("response larger than the %d-byte inspect limit", c.limit)
	}
	switch enc := strings.ToLower(strings.TrimSpace(c.header.Get("Content-Encoding"))); enc {
	case "", "identity":
		return c.buf.Bytes(), nil
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(c.buf.Bytes()))
		if err != nil {
			return nil, fmt.Errorf("reading gzip response: %w", err)
		}
		// Bound the decoded size too: a small gzip body can expand a lot.
		b, err := io.ReadAll(io.LimitReader(zr, int64(c.limit)+1))
		if err != nil {
			return nil, fmt.Errorf("reading gzip response: %w", err)
		}
		if len(b) > c.limit {
			return nil, fmt.Errorf("decoded response larger than the %d-byte inspect limit", c.limit)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("response in an encoding keygate does not read (%s)", enc)
	}
}

// release sends a held response to the client as the upstream gave it.
func (c *capture) release(w http.ResponseWriter) error {
	if c.over {
		return errors.New("held response was over the limit")
	}
	h := w.Header()
	for k, v := range c.header {
		h[k] = v
	}
	if c.status == 0 {
		c.status = http.StatusOK
	}
	w.WriteHeader(c.status)
	_, err := w.Write(c.buf.Bytes())
	return err
}

// narrowAcceptEncoding keeps only the encodings keygate can read on a
// route whose response it reads: gzip when the client takes it.
func narrowAcceptEncoding(h http.Header) {
	ae := h.Values("Accept-Encoding")
	if len(ae) == 0 {
		return
	}
	gz := false
	for _, v := range ae {
		for _, part := range strings.Split(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			q := strings.TrimPrefix(strings.ReplaceAll(params, " ", ""), "q=")
			refused := q != "" && strings.Trim(q, "0.") == "" // q=0, q=0.0 …
			if strings.EqualFold(strings.TrimSpace(name), "gzip") && !refused {
				gz = true
			}
		}
	}
	if gz {
		h.Set("Accept-Encoding", "gzip")
	} else {
		h.Del("Accept-Encoding")
	}
}

// Interface guards
var (
	_ http.ResponseWriter = (*capture)(nil)
	_ io.ReaderFrom       = (*capture)(nil)
	_ http.Flusher        = (*capture)(nil)
)
