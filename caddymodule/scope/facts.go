package scope

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Facts is what keygate reads of a response of the inbox API: a message's
// id and server and its attachments' ids, or the ids of a list's items
// (previews). Nothing else of the body is kept.
type Facts struct {
	ID          string
	Server      string
	Attachments []string
	Items       []string
}

// Bounds of ReadFacts. A response past them is one keygate does not read:
// a message must then fail closed.
const (
	maxDepth    = 512  // nesting of objects and arrays
	maxFieldLen = 1024 // bytes of an id or server (they are a few dozen)
	maxIDs      = 4096 // attachment or item ids
	maxKeyLen   = 64   // bytes of a key compared with the names keygate reads
)

// ReadFacts reads one JSON value from r as a stream and picks out the
// fields of Facts: the top-level object's "id" and "server", the "id" of
// each object in its "attachments" and "items" arrays. Every other string,
// however long, is checked and skipped without being kept, so the memory
// it takes does not depend on the body.
//
// It reads as strictly as encoding/json (a body that is not valid JSON, or
// has anything but space after its value, is an error), and names are
// matched the way the clients may: with escapes decoded and letter case
// folded, as Go's encoding/json does. A field read twice with different
// values is an error, for a JavaScript client reads the last and a Go
// client the last of any case: keygate must not pick one.
func ReadFacts(r io.Reader) (Facts, error) {
	p := factReader{r: bufio.NewReaderSize(r, 16<<10)}
	err := p.document()
	return p.facts, err
}

// errSyntax is wrapped by every error of a body that is not valid JSON.
var errSyntax = errors.New("invalid JSON")

type factReader struct {
	r     *bufio.Reader
	facts Facts
	depth int
	off   int64
	key   []byte // scratch for names and fields
}

// where a value sits, for deciding whether it is kept.
type place uint8

const (
	elsewhere  place = iota
	top              // the top-level object
	attachment       // an object in attachments
	item             // an object in items
)

func (p *factReader) document() error {
	c, err := p.next()
	if err != nil {
		return err
	}
	if c != '{' {
		return p.syntax("a response keygate reads is an object")
	}
	if err := p.object(top); err != nil {
		return err
	}
	c, err = p.next()
	switch {
	case err == io.EOF:
		return nil
	case err != nil:
		return err
	}
	return p.syntax(fmt.Sprintf("%q after the top-level value", c))
}

// next returns the next byte that is not white space.
func (p *factReader) next() (byte, error) {
	for {
		c, err := p.r.ReadByte()
		if err != nil {
			return 0, err
		}
		p.off++
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c, nil
	}
}

func (p *factReader) need() (byte, error) {
	c, err := p.next()
	if err == io.EOF {
		return 0, p.syntax("unexpected end of body")
	}
	return c, err
}

func (p *factReader) syntax(what string) error {
	return fmt.Errorf("%w at byte %d: %s", errSyntax, p.off, what)
}

// object reads an object whose '{' was read.
func (p *factReader) object(at place) error {
	if p.depth++; p.depth > maxDepth {
		return p.syntax("nested too deep")
	}
	defer func() { p.depth-- }()
	var id, server string
	var seenID, seenServer bool
	c, err := p.need()
	if err != nil {
		return err
	}
	if c == '}' {
		return nil
	}
	for {
		if c != '"' {
			return p.syntax("expected a name")
		}
		name, err := p.name()
		if err != nil {
			return err
		}
		if c, err = p.need(); err != nil {
			return err
		}
		if c != ':' {
			return p.syntax("expected ':'")
		}
		if c, err = p.need(); err != nil {
			return err
		}
		switch {
		case at != elsewhere && strings.EqualFold(name, "id"):
			v, err := p.field(c, "id")
			if err != nil {
				return err
			}
			if seenID && v != id {
				return fmt.Errorf("reading response: two different ids")
			}
			id, seenID = v, true
		case at == top && strings.EqualFold(name, "server"):
			v, err := p.field(c, "server")
			if err != nil {
				return err
			}
			if seenServer && v != server {
				return fmt.Errorf("reading response: two different servers")
			}
			server, seenServer = v, true
		case at == top && c == '[' && strings.EqualFold(name, "attachments"):
			err = p.array(attachment)
		case at == top && c == '[' && strings.EqualFold(name, "items"):
			err = p.array(item)
		default:
			err = p.value(c, elsewhere)
		}
		if err != nil {
			return err
		}
		if c, err = p.need(); err != nil {
			return err
		}
		if c == '}' {
			break
		}
		if c != ',' {
			return p.syntax("expected ',' or '}'")
		}
		if c, err = p.need(); err != nil {
			return err
		}
	}
	switch at {
	case top:
		p.facts.ID, p.facts.Server = id, server
	case attachment, item:
		if id == "" {
			return nil
		}
		ids := &p.facts.Attachments
		if at == item {
			ids = &p.facts.Items
		}
		if len(*ids) >= maxIDs {
			return fmt.Errorf("reading response: more than %d ids", maxIDs)
		}
		*ids = append(*ids, id)
	}
	return nil
}

// array reads an array whose '[' was read; its objects are read as elem.
func (p *factReader) array(elem place) error {
	if p.depth++; p.depth > maxDepth {
		return p.syntax("nested too deep")
	}
	defer func() { p.depth-- }()
	c, err := p.need()
	if err != nil {
		return err
	}
	if c == ']' {
		return nil
	}
	for {
		if err := p.value(c, elem); err != nil {
			return err
		}
		if c, err = p.need(); err != nil {
			return err
		}
		if c == ']' {
			return nil
		}
		if c != ',' {
			return p.syntax("expected ',' or ']'")
		}
		if c, err = p.need(); err != nil {
			return err
		}
	}
}

// value reads a value whose first byte is c. Only an object at a place
// keygate reads is read for its fields; everything else is skipped.
func (p *factReader) value(c byte, at place) error {
	switch c {
	case '{':
		if at == attachment || at == item {
			return p.object(at)
		}
		return p.object(elsewhere)
	case '[':
		return p.array(elsewhere)
	case '"':
		return p.skipString()
	case 't':
		return p.literal("rue")
	case 'f':
		return p.literal("alse")
	case 'n':
		return p.literal("ull")
	}
	if c == '-' || (c >= '0' && c <= '9') {
		return p.number(c)
	}
	return p.syntax(fmt.Sprintf("unexpected %q", c))
}

// field reads the string value of a field keygate keeps.
func (p *factReader) field(c byte, name string) (string, error) {
	if c != '"' {
		return "", fmt.Errorf("reading response: %s is not a string", name)
	}
	b, err := p.str(maxFieldLen)
	if err != nil {
		return "", err
	}
	if b == nil {
		return "", fmt.Errorf("reading response: %s longer than %d bytes", name, maxFieldLen)
	}
	return string(b), nil
}

// name reads an object's name, decoded; a long one (no name keygate
// reads) comes back empty.
func (p *factReader) name() (string, error) {
	b, err := p.str(maxKeyLen)
	return string(b), err
}

func (p *factReader) skipString() error {
	_, err := p.str(0)
	return err
}

// str reads a string whose '"' was read, checking it as encoding/json
// does, and returns it decoded if it is at most keep bytes long (nil
// otherwise: it was skipped).
func (p *factReader) str(keep int) ([]byte, error) {
	out := p.key[:0]
	long := keep == 0
	add := func(b ...byte) {
		if long {
			return
		}
		if len(out)+len(b) > keep {
			long = true
			return
		}
		out = append(out, b...)
	}
	for {
		if long {
			p.skipPlain()
		}
		c, err := p.r.ReadByte()
		if err == io.EOF {
			return nil, p.syntax("unterminated string")
		}
		if err != nil {
			return nil, err
		}
		p.off++
		switch {
		case c == '"':
			p.key = out[:0]
			if long {
				return nil, nil
			}
			if !utf8.Valid(out) {
				out = []byte(strings.ToValidUTF8(string(out), "\uFFFD"))
			}
			return out, nil
		case c < 0x20:
			return nil, p.syntax("control character in string")
		case c == '\\':
			r, err := p.escape()
			if err != nil {
				return nil, err
			}
			var buf [utf8.UTFMax]byte
			add(buf[:utf8.EncodeRune(buf[:], r)]...)
		default:
			add(c)
		}
	}
}

// skipPlain skips the buffered bytes of a string that need no checking
// one by one: a long string goes by at the speed of a byte scan.
func (p *factReader) skipPlain() {
	b, _ := p.r.Peek(p.r.Buffered())
	i := 0
	for i < len(b) && b[i] >= 0x20 && b[i] != '"' && b[i] != '\\' {
		i++
	}
	p.r.Discard(i)
	p.off += int64(i)
}

// escape reads an escape sequence after its '\'.
func (p *factReader) escape() (rune, error) {
	c, err := p.r.ReadByte()
	if err != nil {
		return 0, p.syntax("unterminated string")
	}
	p.off++
	switch c {
	case '"', '\\', '/':
		return rune(c), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
		r, err := p.hex4()
		if err != nil {
			return 0, err
		}
		if !utf16.IsSurrogate(r) {
			return r, nil
		}
		// A high surrogate is one rune with a following \u low surrogate;
		// encoding/json reads anything else as U+FFFD.
		if b, _ := p.r.Peek(2); len(b) == 2 && b[0] == '\\' && b[1] == 'u' {
			p.r.Discard(2)
			p.off += 2
			r2, err := p.hex4()
			if err != nil {
				return 0, err
			}
			if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
				return d, nil
			}
			// Two runes: encoding/json keeps the second as it is, when it
			// is not a surrogate; keygate only compares names and ids, so
			// reading both as U+FFFD is stricter, never looser.
		}
		return utf8.RuneError, nil
	}
	return 0, p.syntax("invalid escape")
}

func (p *factReader) hex4() (rune, error) {
	var r rune
	for range 4 {
		c, err := p.r.ReadByte()
		if err != nil {
			return 0, p.syntax("unterminated string")
		}
		p.off++
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, p.syntax("invalid \\u escape")
		}
		r = r<<4 | rune(c)
	}
	return r, nil
}

func (p *factReader) literal(rest string) error {
	for i := range len(rest) {
		c, err := p.r.ReadByte()
		if err != nil || c != rest[i] {
			return p.syntax("invalid literal")
		}
		p.off++
	}
	return p.delimited()
}

// delimited checks that a number or literal ends where it should: a
// letter or digit after it would make another token of it.
func (p *factReader) delimited() error {
	b, err := p.r.Peek(1)
	if err != nil || len(b) == 0 {
		return nil // end of body: document() decides
	}
	switch b[0] {
	case ' ', '\t', '\n', '\r', ',', ']', '}':
		return nil
	}
	return p.syntax(fmt.Sprintf("unexpected %q after a value", b[0]))
}

// number checks a number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *factReader) number(c byte) error {
	digits := func() int {
		n := 0
		for {
			b, err := p.r.Peek(1)
			if err != nil || len(b) == 0 || b[0] < '0' || b[0] > '9' {
				return n
			}
			p.r.Discard(1)
			p.off++
			n++
		}
	}
	if c == '-' {
		var err error
		if c, err = p.r.ReadByte(); err != nil {
			return p.syntax("invalid number")
		}
		p.off++
	}
	switch {
	case c == '0':
	case c >= '1' && c <= '9':
		digits()
	default:
		return p.syntax("invalid number")
	}
	if b, _ := p.r.Peek(1); len(b) == 1 && b[0] == '.' {
		p.r.Discard(1)
		p.off++
		if digits() == 0 {
			return p.syntax("invalid number")
		}
	}
	if b, _ := p.r.Peek(1); len(b) == 1 && (b[0] == 'e' || b[0] == 'E') {
		p.r.Discard(1)
		p.off++
		if b, _ := p.r.Peek(1); len(b) == 1 && (b[0] == '+' || b[0] == '-') {
			p.r.Discard(1)
			p.off++
		}
		if digits() == 0 {
			return p.syntax("invalid number")
		}
	}
	return p.delimited()
}
