package sim

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// handle runs one matched route for an authenticated account, under s.mu.
func (s *Server) handle(c *call) response {
	switch c.req.route {
	case "S1":
		var out []Inbox
		for _, in := range s.inboxes(c.account) {
			c.touch(in.id)
			out = append(out, in.view())
		}
		return ok(items(out))
	case "S2":
		var b struct {
			Name string `json:"name"`
		}
		if res, bad := decode(c.body, &b); bad {
			return res
		}
		if strings.TrimSpace(b.Name) == "" {
			return validation("name", "Please provide a name for the server.", "required")
		}
		return ok(s.newInbox(c.account, "", b.Name).view())
	case "S3", "S4", "S5", "S6":
		return s.handleServer(c)
	case "M1", "M2", "M3", "M4":
		return s.handleServerMessages(c)
	case "M5", "M6", "M7", "M8", "M9", "F2", "A1", "A2":
		m := s.message(c.account, c.req.params["message"])
		if m == nil {
			return notFound()
		}
		c.touch(m.server)
		return s.handleMessage(c, m)
	case "F1":
		a := s.attachment(c.account, c.req.params["attachment"])
		if a == nil {
			return notFound()
		}
		c.touch(a.msg.server)
		return response{
			status: http.StatusOK, raw: bytes.Clone(a.content), contentType: a.contentType,
			header: http.Header{"Content-Disposition": {`attachment; filename="` + strings.ReplaceAll(a.fileName, `"`, "") + `"`}},
		}
	case "F3":
		p := s.preview(c.account, c.req.params["preview"])
		if p == nil {
			return notFound()
		}
		c.touch(p.msg.server)
		p.polls++
		if p.polls <= s.opts.ScreenshotDelay {
			return response{status: http.StatusAccepted}
		}
		return response{status: http.StatusOK, raw: screenshotPNG(p.client), contentType: "image/png"}
	case "P1":
		return ok(items(emailClients))
	case "U1":
		return ok(s.limits(c.account))
	case "U2":
		return ok(items(s.transactions(c.account)))
	default:
		return s.handleDevices(c)
	}
}

// decode reads a JSON body; an empty body is an empty object.
func decode(body []byte, v any) (response, bool) {
	if len(bytes.TrimSpace(body)) == 0 {
		return response{}, false
	}
	if err := json.Unmarshal(body, v); err != nil {
		return validation("", "The request body is not valid JSON: "+err.Error(), "invalid_json"), true
	}
	return response{}, false
}

// S3–S6: a server named in the path.
func (s *Server) handleServer(c *call) response {
	in := s.inbox(c.account, c.req.server)
	if in == nil {
		return notFound()
	}
	c.touch(in.id)
	switch c.req.route {
	case "S3":
		return ok(in.view())
	case "S4":
		return ok(struct {
			Value string `json:"value"`
		}{in.password})
	case "S5":
		var b struct {
			ID    *string  `json:"id"`
			Name  string   `json:"name"`
			Users []string `json:"users"`
		}
		if res, bad := decode(c.body, &b); bad {
			return res
		}
		if b.ID != nil && !strings.EqualFold(*b.ID, in.id) {
			return validation("id", "The id in the body does not match the server in the path.", "mismatch")
		}
		if strings.TrimSpace(b.Name) == "" {
			return validation("name", "Please provide a name for the server.", "required")
		}
		in.name = b.Name
		if b.Users != nil {
			in.users = append([]string{}, b.Users...)
		}
		return ok(in.view())
	default: // S6
		for len(in.messages) > 0 {
			s.deleteMessage(in.messages[0])
		}
		delete(s.servers, in.id)
		return noContent()
	}
}

// M1–M4: a server named by the `server` query parameter.
func (s *Server) handleServerMessages(c *call) response {
	if !c.req.hasServer || c.req.server == "" {
		return validation("server", "Please provide the server (inbox) id in the `server` query parameter.", "required")
	}
	in := s.inbox(c.account, c.req.server)
	if in == nil {
		return notFound()
	}
	c.touch(in.id)
	switch c.req.route {
	case "M1":
		msgs, res, bad := s.page(c, in.messages, nil)
		if bad {
			return res
		}
		return ok(items(msgs))
	case "M2":
		for len(in.messages) > 0 {
			s.deleteMessage(in.messages[0])
		}
		return noContent()
	case "M3":
		var b struct {
			SentTo   string `json:"sentTo"`
			SentFrom string `json:"sentFrom"`
			Subject  string `json:"subject"`
			Body     string `json:"body"`
			Match    string `json:"match"`
		}
		if res, bad := decode(c.body, &b); bad {
			return res
		}
		anyMode := false
		switch strings.ToUpper(b.Match) {
		case "", "ALL":
		case "ANY":
			anyMode = true
		default:
			return validation("match", "match must be ALL or ANY.", "invalid")
		}
		var tests []func(*message) bool
		if b.SentTo != "" {
			tests = append(tests, func(m *message) bool { return hasAddr(m.to, b.SentTo) || hasAddr(m.cc, b.SentTo) })
		}
		if b.SentFrom != "" {
			tests = append(tests, func(m *message) bool { return hasAddr(m.from, b.SentFrom) })
		}
		if b.Subject != "" {
			tests = append(tests, func(m *message) bool { return containsFold(m.subject, b.Subject) })
		}
		if b.Body != "" {
			tests = append(tests, func(m *message) bool { return containsFold(m.text, b.Body) || containsFold(m.html, b.Body) })
		}
		match := func(m *message) bool {
			if len(tests) == 0 {
				return true
			}
			for _, t := range tests {
				if t(m) == anyMode {
					return anyMode
				}
			}
			return !anyMode
		}
		msgs, res, bad := s.page(c, in.messages, match)
		if bad {
			return res
		}
		res = ok(items(msgs))
		// Lower case as the real service sends it (clients poll with it).
		res.header = http.Header{"x-ms-delay": {"1000"}}
		return res
	default: // M4
		var b struct {
			Subject     string        `json:"subject"`
			From        string        `json:"from"`
			To          string        `json:"to"`
			Cc          string        `json:"cc"`
			Send        bool          `json:"send"`
			Text        string        `json:"text"`
			HTML        string        `json:"html"`
			Attachments []wireAttachm `json:"attachments"`
		}
		if res, bad := decode(c.body, &b); bad {
			return res
		}
		atts, res, bad := decodeAttachments(b.Attachments)
		if bad {
			return res
		}
		nm := NewMessage{Subject: b.Subject, From: b.From, To: b.To, Cc: b.Cc, Text: b.Text, HTML: b.HTML, Attachments: atts}
		if nm.From == "" {
			nm.From = "noreply@" + in.domain()
		}
		if nm.To == "" {
			nm.To = "anything@" + in.domain()
		}
		return ok(s.insert(in, nm).full())
	}
}

type wireAttachm struct {
	FileName    string `json:"fileName"`
	ContentType string `json:"contentType"`
	Content     string `json:"content"` // base64
}

func decodeAttachments(in []wireAttachm) ([]NewAttachment, response, bool) {
	var out []NewAttachment
	for _, a := range in {
		b, err := base64.StdEncoding.DecodeString(a.Content)
		if err != nil {
			return nil, validation("attachments", "Attachment content must be base64.", "invalid"), true
		}
		out = append(out, NewAttachment{FileName: a.FileName, ContentType: a.ContentType, Content: b})
	}
	return out, response{}, false
}

// page applies page, itemsPerPage and receivedAfter to a server's messages,
// newest first.
func (s *Server) page(c *call, all []*message, keep func(*message) bool) ([]MessageSummary, response, bool) {
	q := c.req.query
	page, per := 0, 50
	if v, ok := q["page"]; ok && v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, validation("page", "page must be a whole number, 0 or more.", "invalid"), true
		}
		page = n
	}
	if v, ok := q["itemsperpage"]; ok && v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return nil, validation("itemsPerPage", "itemsPerPage must be between 1 and 1000.", "invalid"), true
		}
		per = n
	}
	var after time.Time
	if v, ok := q["receivedafter"]; ok && v != "" {
		t, err := parseTime(v)
		if err != nil {
			return nil, validation("receivedAfter", "receivedAfter must be an ISO 8601 date and time.", "invalid"), true
		}
		after = t
	}
	var sel []*message
	for _, m := range all {
		if !m.received.Before(after) && (keep == nil || keep(m)) {
			sel = append(sel, m)
		}
	}
	sort.SliceStable(sel, func(i, j int) bool {
		if !sel[i].received.Equal(sel[j].received) {
			return sel[i].received.After(sel[j].received)
		}
		return sel[i].seq > sel[j].seq
	})
	out := []MessageSummary{}
	for i := page * per; i < len(sel) && i < (page+1)*per; i++ {
		out = append(out, sel[i].summary())
	}
	return out, response{}, false
}

// parseTime reads an ISO 8601 time; a space where the '+' of an offset
// was (an unencoded '+' decoded as a space) is tolerated.
func parseTime(v string) (time.Time, error) {
	var err error
	for _, s := range []string{v, strings.Replace(v, " ", "+", 1)} {
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02"} {
			var t time.Time
			if t, err = time.Parse(layout, s); err == nil {
				return t, nil
			}
		}
	}
	return time.Time{}, err
}

func hasAddr(as []Address, want string) bool {
	for _, a := range as {
		if strings.EqualFold(a.Email, want) || (a.Phone != "" && a.Phone == want) {
			return true
		}
	}
	return false
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// M5–M9, F2, A1, A2: a message named in the path.
func (s *Server) handleMessage(c *call, m *message) response {
	in := s.servers[m.server]
	switch c.req.route {
	case "M5":
		return ok(m.full())
	case "M6":
		s.deleteMessage(m)
		return noContent()
	case "M7":
		var b struct {
			To   string `json:"to"`
			Cc   string `json:"cc"`
			Text string `json:"text"`
			HTML string `json:"html"`
		}
		if res, bad := decode(c.body, &b); bad {
			return res
		}
		if strings.TrimSpace(b.To) == "" {
			return validation("to", "Please provide the address to forward to.", "required")
		}
		nm := NewMessage{
			Type: m.typ, From: firstAddr(m.to, "noreply@"+in.domain()), To: b.To, Cc: b.Cc,
			Subject: prefixed("FW: ", m.subject),
			Text:    joinBody(b.Text, "---------- Forwarded message ----------", m.text),
			HTML:    joinBody(b.HTML, "<p>---------- Forwarded message ----------</p>", m.html),
		}
		for _, a := range m.attachments {
			nm.Attachments = append(nm.Attachments, NewAttachment{FileName: a.fileName, ContentType: a.contentType, Content: a.content})
		}
		return ok(s.insert(in, nm).full())
	case "M8":
		var b struct {
			Cc          string        `json:"cc"`
			Text        string        `json:"text"`
			HTML        string        `json:"html"`
			Attachments []wireAttachm `json:"attachments"`
		}
		if res, bad := decode(c.body, &b); bad {
			return res
		}
		atts, res, bad := decodeAttachments(b.Attachments)
		if bad {
			return res
		}
		nm := NewMessage{
			Type: m.typ, From: firstAddr(m.to, "noreply@"+in.domain()), To: joinAddrs(m.from), Cc: b.Cc,
			Subject: prefixed("RE: ", m.subject), Text: b.Text, HTML: b.HTML, Attachments: atts,
		}
		return ok(s.insert(in, nm).full())
	case "M9":
		var b struct {
			EmailClients  []string `json:"emailClients"`
			DisableImages bool     `json:"disableImages"`
			Previews      []struct {
				EmailClient   string `json:"emailClient"`
				DisableImages bool   `json:"disableImages"`
			} `json:"previews"`
		}
		if res, bad := decode(c.body, &b); bad {
			return res
		}
		type want struct {
			client  string
			disable bool
		}
		var wants []want
		for _, e := range b.EmailClients {
			wants = append(wants, want{e, b.DisableImages})
		}
		for _, p := range b.Previews {
			wants = append(wants, want{p.EmailClient, p.DisableImages})
		}
		if len(wants) == 0 {
			return validation("emailClients", "Please provide at least one email client.", "required")
		}
		for _, w := range wants {
			if !knownClient(w.client) {
				return validation("emailClients", "Unknown email client "+strconv.Quote(w.client)+"; see GET /api/screenshots/clients.", "invalid")
			}
		}
		type previewView struct {
			ID            string `json:"id"`
			EmailClient   string `json:"emailClient"`
			DisableImages bool   `json:"disableImages"`
		}
		var out []previewView
		for _, w := range wants {
			p := &preview{id: uuid(), client: w.client, disableImages: w.disable, msg: m}
			s.previews[p.id] = p
			out = append(out, previewView{p.id, p.client, p.disableImages})
		}
		return ok(items(out))
	case "F2":
		return response{status: http.StatusOK, raw: rawEmail(m), contentType: "message/rfc822"}
	case "A1":
		return ok(spamReport(m))
	default: // A2
		return ok(deliverability(m))
	}
}

func firstAddr(as []Address, def string) string {
	if len(as) > 0 {
		return addrString(as[0])
	}
	return def
}

func prefixed(prefix, subject string) string {
	if strings.HasPrefix(strings.ToUpper(subject), strings.ToUpper(prefix)) {
		return subject
	}
	return prefix + subject
}

func joinBody(top, sep, orig string) string {
	if orig == "" {
		return top
	}
	return strings.TrimLeft(top+"\n\n"+sep+"\n"+orig, "\n")
}

// limits is U1.
func (s *Server) limits(account string) any {
	type usage struct {
		Current int `json:"current"`
		Limit   int `json:"limit"`
	}
	email, sms := 0, 0
	for _, m := range s.messages {
		if m.account == account {
			if m.typ == "SMS" {
				sms++
			} else {
				email++
			}
		}
	}
	return struct {
		Servers usage `json:"servers"`
		Users   usage `json:"users"`
		Email   usage `json:"email"`
		SMS     usage `json:"sms"`
	}{
		Servers: usage{len(s.inboxes(account)), 100},
		Users:   usage{1, 10},
		Email:   usage{email, 10000},
		SMS:     usage{sms, 100},
	}
}

// transaction is one day of U2.
type transaction struct {
	Timestamp time.Time `json:"timestamp"`
	Email     int       `json:"email"`
	SMS       int       `json:"sms"`
}

// transactions is U2: the account's messages counted per day, newest first.
func (s *Server) transactions(account string) []transaction {
	days := map[time.Time]*transaction{}
	for _, m := range s.messages {
		if m.account != account {
			continue
		}
		d := m.received.Truncate(24 * time.Hour)
		t := days[d]
		if t == nil {
			t = &transaction{Timestamp: d}
			days[d] = t
		}
		if m.typ == "SMS" {
			t.SMS++
		} else {
			t.Email++
		}
	}
	out := []transaction{}
	for _, t := range days {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Timestamp.After(out[j].Timestamp) })
	return out
}

// D1–D5.
func (s *Server) handleDevices(c *call) response {
	switch c.req.route {
	case "D1":
		var out []Device
		for _, d := range s.accountDevices(c.account) {
			out = append(out, Device{d.id, d.name})
		}
		return ok(items(out))
	case "D2":
		var b struct {
			Name         string `json:"name"`
			SharedSecret string `json:"sharedSecret"`
		}
		if res, bad := decode(c.body, &b); bad {
			return res
		}
		if strings.TrimSpace(b.Name) == "" {
			return validation("name", "Please provide a name for the device.", "required")
		}
		if _, err := decodeSecret(b.SharedSecret); err != nil {
			return validation("sharedSecret", "The shared secret must be a base32 string.", "invalid")
		}
		d := s.newDevice(c.account, b.Name, b.SharedSecret)
		return ok(Device{d.id, d.name})
	case "D3":
		d := s.device(c.account, c.req.params["device"])
		if d == nil {
			return notFound()
		}
		return ok(s.otp(d.secret))
	case "D4":
		var b struct {
			SharedSecret string `json:"sharedSecret"`
		}
		if res, bad := decode(c.body, &b); bad {
			return res
		}
		if _, err := decodeSecret(b.SharedSecret); err != nil {
			return validation("sharedSecret", "The shared secret must be a base32 string.", "invalid")
		}
		return ok(s.otp(b.SharedSecret))
	default: // D5
		d := s.device(c.account, c.req.params["device"])
		if d == nil {
			return notFound()
		}
		delete(s.devices, d.id)
		return noContent()
	}
}

func (s *Server) newDevice(account, name, secret string) *device {
	d := &device{account: account, id: uuid(), name: name, secret: secret, seq: s.next()}
	s.devices[d.id] = d
	return d
}

// otp is a device's current one-time password.
func (s *Server) otp(secret string) any {
	key, _ := decodeSecret(secret)
	code, expires := totp(key, s.opts.Now())
	return struct {
		Code    string    `json:"code"`
		Expires time.Time `json:"expires"`
	}{code, expires}
}
