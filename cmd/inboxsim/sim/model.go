package sim

import (
	"crypto/rand"
	"fmt"
	"net/mail"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Inbox is a server as the API shows it.
type Inbox struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Users    []string `json:"users"`
	Messages int      `json:"messages"`
}

// Address is a sender or recipient: an email address, or a phone number
// for SMS.
type Address struct {
	Name  string `json:"name"`
	Email string `json:"email"`
	Phone string `json:"phone"`
}

// Link is a link found in a message body.
type Link struct {
	Href string `json:"href"`
	Text string `json:"text"`
}

// Image is an image found in an HTML body.
type Image struct {
	Src string `json:"src"`
	Alt string `json:"alt"`
}

// Content is the HTML or text part of a message.
type Content struct {
	Body   string  `json:"body"`
	Links  []Link  `json:"links"`
	Codes  []Code  `json:"codes"`
	Images []Image `json:"images,omitzero"` // HTML only: [] there, absent from text
}

// Code is a verification code found in a message body.
type Code struct {
	Value string `json:"value"`
}

// Attachment is an attachment as listed in a message.
type Attachment struct {
	ID          string `json:"id"`
	ContentType string `json:"contentType"`
	FileName    string `json:"fileName"`
	ContentID   string `json:"contentId"`
	Length      int    `json:"length"`
	URL         string `json:"url"`
}

// Header is one header of a message.
type Header struct {
	Field string `json:"field"`
	Value string `json:"value"`
}

// Metadata is a message's transport metadata.
type Metadata struct {
	Headers  []Header  `json:"headers"`
	Ehlo     string    `json:"ehlo"`
	MailFrom string    `json:"mailFrom"`
	RcptTo   []Address `json:"rcptTo"`
}

// Message is a full message (GET /api/messages/{id}).
type Message struct {
	ID          string       `json:"id"`
	Type        string       `json:"type"`
	Server      string       `json:"server"`
	From        []Address    `json:"from"`
	To          []Address    `json:"to"`
	Cc          []Address    `json:"cc"`
	Bcc         []Address    `json:"bcc"`
	Received    time.Time    `json:"received"`
	Subject     string       `json:"subject"`
	HTML        Content      `json:"html"`
	Text        Content      `json:"text"`
	Attachments []Attachment `json:"attachments"`
	Metadata    Metadata     `json:"metadata"`
}

// MessageSummary is a message as lists show it (M1, M3).
type MessageSummary struct {
	ID          string    `json:"id"`
	Type        string    `json:"type"`
	Server      string    `json:"server"`
	From        []Address `json:"from"`
	To          []Address `json:"to"`
	Cc          []Address `json:"cc"`
	Bcc         []Address `json:"bcc"`
	Received    time.Time `json:"received"`
	Subject     string    `json:"subject"`
	Summary     string    `json:"summary"`
	Attachments int       `json:"attachments"`
}

// NewMessage describes a message to seed. From, To and Cc are
// comma-separated address lists ("Name <a@b.c>, d@e.f"), or phone numbers
// for SMS.
type NewMessage struct {
	Type        string          `json:"type,omitempty"` // "Email" (the default) or "SMS"
	From        string          `json:"from,omitempty"`
	To          string          `json:"to,omitempty"`
	Cc          string          `json:"cc,omitempty"`
	Subject     string          `json:"subject,omitempty"`
	Text        string          `json:"text,omitempty"`
	HTML        string          `json:"html,omitempty"`
	Received    time.Time       `json:"received,omitzero"` // zero: now
	Attachments []NewAttachment `json:"attachments,omitempty"`
}

// NewAttachment is an attachment of a NewMessage. In JSON, Content is
// base64.
type NewAttachment struct {
	FileName    string `json:"fileName"`
	ContentType string `json:"contentType"`
	Content     []byte `json:"content"`
}

// Device is an OTP device.
type Device struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type inbox struct {
	account  string
	id       string
	name     string
	password string
	users    []string
	seq      int64
	messages []*message // in arrival order
}

type message struct {
	account     string
	server      string
	id          string
	typ         string
	from, to    []Address
	cc, bcc     []Address
	received    time.Time
	subject     string
	text, html  string
	attachments []*attachment
	seq         int64
}

type attachment struct {
	id          string
	fileName    string
	contentType string
	content     []byte
	msg         *message
}

type preview struct {
	id            string
	client        string
	disableImages bool
	polls         int
	msg           *message
}

type device struct {
	account string
	id      string
	name    string
	secret  string // base32, as given
	seq     int64
}

// Lookups: nil when the object does not exist or belongs to another account.

func (s *Server) inbox(account, id string) *inbox {
	if in := s.servers[id]; in != nil && in.account == account {
		return in
	}
	return nil
}

func (s *Server) message(account, id string) *message {
	if m := s.messages[id]; m != nil && m.account == account {
		return m
	}
	return nil
}

func (s *Server) attachment(account, id string) *attachment {
	if a := s.attachments[id]; a != nil && a.msg.account == account {
		return a
	}
	return nil
}

func (s *Server) preview(account, id string) *preview {
	if p := s.previews[id]; p != nil && p.msg.account == account {
		return p
	}
	return nil
}

func (s *Server) device(account, id string) *device {
	if d := s.devices[id]; d != nil && d.account == account {
		return d
	}
	return nil
}

// inboxes lists an account's servers in creation order.
func (s *Server) inboxes(account string) []*inbox {
	var out []*inbox
	for _, in := range s.servers {
		if in.account == account {
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

func (s *Server) accountDevices(account string) []*device {
	var out []*device
	for _, d := range s.devices {
		if d.account == account {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

func (s *Server) next() int64 { s.seq++; return s.seq }

func (s *Server) now() time.Time { return s.opts.Now().UTC().Truncate(time.Millisecond) }

// newInbox creates a server; id "" mints one.
func (s *Server) newInbox(account, id, name string) *inbox {
	if id == "" {
		id = s.mintServerID()
	}
	in := &inbox{account: account, id: id, name: name, password: randString(16, alnum), users: []string{}, seq: s.next()}
	s.servers[id] = in
	return in
}

func (s *Server) mintServerID() string {
	for {
		id := randString(8, lowerAlnum)
		if s.servers[id] == nil {
			return id
		}
	}
}

// insert stores a new message in server in and returns it.
func (s *Server) insert(in *inbox, m NewMessage) *message {
	typ := "Email"
	if strings.EqualFold(m.Type, "sms") {
		typ = "SMS"
	}
	msg := &message{
		account: in.account, server: in.id, id: uuid(), typ: typ,
		from: parseAddresses(m.From, typ), to: parseAddresses(m.To, typ), cc: parseAddresses(m.Cc, typ),
		bcc: []Address{}, received: m.Received.UTC().Truncate(time.Millisecond),
		subject: m.Subject, text: m.Text, html: m.HTML, seq: s.next(),
	}
	if m.Received.IsZero() {
		msg.received = s.now()
	}
	for _, a := range m.Attachments {
		att := &attachment{id: uuid(), fileName: a.FileName, contentType: a.ContentType, content: append([]byte(nil), a.Content...), msg: msg}
		if att.contentType == "" {
			att.contentType = "application/octet-stream"
		}
		msg.attachments = append(msg.attachments, att)
		s.attachments[att.id] = att
	}
	in.messages = append(in.messages, msg)
	s.messages[msg.id] = msg
	return msg
}

// deleteMessage removes a message with its attachments and previews.
func (s *Server) deleteMessage(m *message) {
	delete(s.messages, m.id)
	for _, a := range m.attachments {
		delete(s.attachments, a.id)
	}
	for id, p := range s.previews {
		if p.msg == m {
			delete(s.previews, id)
		}
	}
	if in := s.servers[m.server]; in != nil {
		for i, x := range in.messages {
			if x == m {
				in.messages = append(in.messages[:i:i], in.messages[i+1:]...)
				break
			}
		}
	}
}

func (in *inbox) view() Inbox {
	return Inbox{ID: in.id, Name: in.name, Users: append([]string{}, in.users...), Messages: len(in.messages)}
}

// domain is the address domain of a server.
func (in *inbox) domain() string { return in.id + ".mailosaur.net" }

func (m *message) summary() MessageSummary {
	return MessageSummary{
		ID: m.id, Type: m.typ, Server: m.server,
		From: cloneAddrs(m.from), To: cloneAddrs(m.to), Cc: cloneAddrs(m.cc), Bcc: cloneAddrs(m.bcc),
		Received: m.received, Subject: m.subject, Summary: summarize(m.plainText(), 150),
		Attachments: len(m.attachments),
	}
}

func (m *message) full() Message {
	out := Message{
		ID: m.id, Type: m.typ, Server: m.server,
		From: cloneAddrs(m.from), To: cloneAddrs(m.to), Cc: cloneAddrs(m.cc), Bcc: cloneAddrs(m.bcc),
		Received: m.received, Subject: m.subject,
		HTML:        Content{Body: m.html, Links: htmlLinks(m.html), Codes: codes(m.html), Images: htmlImages(m.html)},
		Text:        Content{Body: m.text, Links: textLinks(m.text), Codes: codes(m.text)},
		Attachments: []Attachment{},
		Metadata: Metadata{
			Headers: []Header{
				{"From", joinAddrs(m.from)}, {"To", joinAddrs(m.to)},
				{"Subject", m.subject}, {"Date", m.received.Format(time.RFC1123Z)},
				{"Message-ID", "<" + m.id + "@mailosaur.net>"},
			},
			Ehlo: "mail.example.com", RcptTo: cloneAddrs(m.to),
		},
	}
	if len(m.from) > 0 {
		out.Metadata.MailFrom = m.from[0].Email
	}
	for _, a := range m.attachments {
		out.Attachments = append(out.Attachments, Attachment{
			ID: a.id, ContentType: a.contentType, FileName: a.fileName, Length: len(a.content),
			URL: "/api/files/attachments/" + a.id,
		})
	}
	return out
}

var (
	tagRe   = regexp.MustCompile(`(?s)<[^>]*>`)
	hrefRe  = regexp.MustCompile(`(?is)<a\s[^>]*href\s*=\s*["']([^"']*)["'][^>]*>(.*?)</a>`)
	imgRe   = regexp.MustCompile(`(?is)<img\s[^>]*src\s*=\s*["']([^"']*)["'][^>]*>`)
	altRe   = regexp.MustCompile(`(?is)alt\s*=\s*["']([^"']*)["']`)
	urlRe   = regexp.MustCompile(`https?://[^\s<>"']+`)
	codeRe  = regexp.MustCompile(`\b\d{4,8}\b`)
	spaceRe = regexp.MustCompile(`\s+`)
)

// plainText is the text body, or the HTML body without tags.
func (m *message) plainText() string {
	if m.text != "" {
		return m.text
	}
	return tagRe.ReplaceAllString(m.html, " ")
}

func summarize(s string, n int) string {
	s = strings.TrimSpace(spaceRe.ReplaceAllString(s, " "))
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n])
}

func htmlLinks(h string) []Link {
	out := []Link{}
	for _, m := range hrefRe.FindAllStringSubmatch(h, -1) {
		out = append(out, Link{Href: m[1], Text: strings.TrimSpace(tagRe.ReplaceAllString(m[2], ""))})
	}
	return out
}

func htmlImages(h string) []Image {
	out := []Image{}
	for _, m := range imgRe.FindAllStringSubmatch(h, -1) {
		img := Image{Src: m[1]}
		if a := altRe.FindStringSubmatch(m[0]); a != nil {
			img.Alt = a[1]
		}
		out = append(out, img)
	}
	return out
}

func textLinks(t string) []Link {
	out := []Link{}
	for _, u := range urlRe.FindAllString(t, -1) {
		out = append(out, Link{Href: u, Text: u})
	}
	return out
}

func codes(body string) []Code {
	out := []Code{}
	for _, c := range codeRe.FindAllString(tagRe.ReplaceAllString(body, " "), -1) {
		out = append(out, Code{Value: c})
	}
	return out
}

// parseAddresses reads a comma-separated address list; for SMS each entry
// is a phone number.
func parseAddresses(list, typ string) []Address {
	out := []Address{}
	if strings.TrimSpace(list) == "" {
		return out
	}
	if typ != "SMS" {
		if as, err := mail.ParseAddressList(list); err == nil {
			for _, a := range as {
				out = append(out, Address{Name: a.Name, Email: a.Address})
			}
			return out
		}
	}
	for _, p := range strings.Split(list, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if typ == "SMS" {
			out = append(out, Address{Phone: p})
		} else {
			out = append(out, Address{Email: p})
		}
	}
	return out
}

// addrString formats one address for a header or a seed file.
func addrString(a Address) string {
	switch {
	case a.Phone != "" && a.Email == "":
		return a.Phone
	case a.Name != "":
		return (&mail.Address{Name: a.Name, Address: a.Email}).String()
	default:
		return a.Email
	}
}

func joinAddrs(as []Address) string {
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = addrString(a)
	}
	return strings.Join(parts, ", ")
}

func cloneAddrs(as []Address) []Address { return append([]Address{}, as...) }

const (
	lowerAlnum = "abcdefghijklmnopqrstuvwxyz0123456789"
	alnum      = "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + lowerAlnum
)

func randString(n int, alphabet string) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// uuid returns a random (version 4) UUID in lower case.
func uuid() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// isServerID reports whether id has the shape of a server id.
func isServerID(id string) bool {
	if len(id) != 8 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !strings.ContainsRune(lowerAlnum, rune(id[i])) {
			return false
		}
	}
	return true
}
