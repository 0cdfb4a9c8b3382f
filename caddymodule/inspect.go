package caddymodule

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/keygate/keygate/caddymodule/scope"
)

// capture stands in for the client's ResponseWriter on the routes whose
// responses keygate reads. Holding, it keeps the whole response (headers
// included) until the handler has checked it; teeing, it passes everything
// on at once. Either way a 200 body, up to limit bytes, is read as it goes
// by (scope.ReadFacts, on a goroutine fed through a pipe) for the few
// fields keygate learns from: no body is parsed whole, and a held body
// past a small size waits in an unlinked temporary file, not in memory.
// Everything else streams untouched: keygate wraps only the routes of the
// table that teach or need checking.
type capture struct {
	w      http.ResponseWriter // the client's; nil for a look-up of keygate's own
	hold   bool
	limit  int64
	header http.Header
	status int
	n      int64 // body bytes written
	over   bool  // the body passed the limit: it cannot be read

	held heldBody    // holding for a client: the body to release
	read *bodyReader // the 200 body's facts, once it starts
}

// Memory one inspection may take, charged to the handler's budget:
// ReadFacts's buffer and a gzip reader's window and tables, and for a
// held body the part kept in memory (append may double it).
const (
	inspectCost  = 64 << 10
	heldInMemory = 64 << 10
	holdCost     = inspectCost + 2*heldInMemory
)

func newCapture(w http.ResponseWriter, hold bool, limit int) *capture {
	c := &capture{w: w, hold: hold || w == nil, limit: int64(limit)}
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
		c.inspect(p)
	}
	if c.hold {
		return len(p), nil
	}
	return c.w.Write(p)
}

// inspect keeps (holding) and reads (a 200) a part of the body.
func (c *capture) inspect(p []byte) {
	if c.over {
		return
	}
	if c.n += int64(len(p)); c.n > c.limit {
		c.over = true
		c.held.close()
		if c.read != nil {
			c.read.stop()
		}
		return
	}
	if c.hold && c.w != nil {
		c.held.write(p)
	}
	if c.status == http.StatusOK {
		if c.read == nil {
			c.read = readBody(c.header.Get("Content-Encoding"), c.limit)
		}
		c.read.feed(p)
	}
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

// facts returns what the 200 body says, if it could be read within the
// limit. Call it once the body is complete.
func (c *capture) facts() (scope.Facts, error) {
	if c.over {
		return scope.Facts{}, fmt.Errorf("response larger than the %d-byte inspect limit", c.limit)
	}
	if c.read == nil {
		c.read = readBody(c.header.Get("Content-Encoding"), c.limit)
	}
	return c.read.result()
}

// close ends the reading and drops the held body; the handler defers it.
func (c *capture) close() {
	if c.read != nil {
		c.read.stop()
	}
	c.held.close()
}

// release sends a held response to the client as the upstream gave it.
func (c *capture) release(w http.ResponseWriter) error {
	if c.over {
		return errors.New("held response was over the limit")
	}
	if c.held.err != nil {
		return fmt.Errorf("holding the response: %w", c.held.err)
	}
	h := w.Header()
	for k, v := range c.header {
		h[k] = v
	}
	if c.status == 0 {
		c.status = http.StatusOK
	}
	w.WriteHeader(c.status)
	return c.held.writeTo(w)
}

// heldBody keeps a held body: its first heldInMemory bytes in memory, the
// rest in a temporary file that is unlinked at once, so that it goes when
// keygate does.
type heldBody struct {
	mem  []byte
	file *os.File
	err  error
}

func (b *heldBody) write(p []byte) {
	if b.err != nil {
		return
	}
	if b.file == nil && len(b.mem)+len(p) <= heldInMemory {
		b.mem = append(b.mem, p...)
		return
	}
	if b.file == nil {
		f, err := os.CreateTemp("", "keygate-held-*")
		if err != nil {
			b.err = err
			return
		}
		os.Remove(f.Name()) // on systems that cannot, close() does
		b.file = f
	}
	_, b.err = b.file.Write(p)
}

func (b *heldBody) writeTo(w io.Writer) error {
	if _, err := w.Write(b.mem); err != nil || b.file == nil {
		return err
	}
	if _, err := b.file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	_, err := io.CopyBuffer(struct{ io.Writer }{w}, b.file, *buf)
	return err
}

func (b *heldBody) close() {
	if b.file != nil {
		b.file.Close()
		os.Remove(b.file.Name())
		b.file = nil
	}
	b.mem = nil
	if b.err == nil {
		b.err = errors.New("held body dropped")
	}
}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// bodyReader reads a body with scope.ReadFacts as it is written, decoding
// gzip on the way, without keeping it.
type bodyReader struct {
	pw      *io.PipeWriter
	done    chan struct{}
	stopped bool // the reader is done with the body, or was stopped
	facts   scope.Facts
	err     error
}

var errStopped = errors.New("reading stopped")

func readBody(encoding string, limit int64) *bodyReader {
	b := &bodyReader{done: make(chan struct{})}
	var decode func(io.Reader) (io.Reader, error)
	switch enc := strings.ToLower(strings.TrimSpace(encoding)); enc {
	case "", "identity":
		decode = func(r io.Reader) (io.Reader, error) { return r, nil }
	case "gzip", "x-gzip":
		decode = func(r io.Reader) (io.Reader, error) {
			zr, err := gzip.NewReader(r)
			if err != nil {
				return nil, fmt.Errorf("reading gzip response: %w", err)
			}
			// Bound the decoded size too: a small gzip body can expand a lot.
			return &boundedReader{r: zr, left: limit}, nil
		}
	default:
		b.err, b.stopped = fmt.Errorf("response in an encoding keygate does not read (%s)", enc), true
		close(b.done)
		return b
	}
	r, w := io.Pipe()
	b.pw = w
	go func() {
		defer close(b.done)
		src, err := decode(r)
		if err == nil {
			b.facts, err = scope.ReadFacts(src)
		}
		b.err = err
		// Whatever is left is not read: writes fail fast from now on.
		r.CloseWithError(errStopped)
	}()
	return b
}

func (b *bodyReader) feed(p []byte) {
	if b.stopped {
		return
	}
	if _, err := b.pw.Write(p); err != nil {
		b.stopped = true
	}
}

// result waits for the reader to see the end of the body.
func (b *bodyReader) result() (scope.Facts, error) {
	if b.pw != nil {
		b.pw.Close()
	}
	<-b.done
	return b.facts, b.err
}

// stop ends the reading early (the body was too large, or the request is
// over) and waits for the reader to go.
func (b *bodyReader) stop() {
	if b.pw != nil {
		b.pw.CloseWithError(errStopped)
	}
	b.stopped = true
	<-b.done
	if b.err == nil {
		b.err = errStopped
	}
}

// boundedReader fails, rather than ending, past its limit.
type boundedReader struct {
	r    io.Reader
	left int64
}

var errDecodedTooLarge = errors.New("decoded response larger than the inspect limit")

func (l *boundedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		var one [1]byte
		if n, err := l.r.Read(one[:]); n == 0 && err == io.EOF {
			return 0, io.EOF
		}
		return 0, errDecodedTooLarge
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
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
