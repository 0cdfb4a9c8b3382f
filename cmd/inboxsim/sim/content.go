package sim

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"image"
	"image/color"
	"image/png"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"strings"
	"time"
)

// emailClient is an entry of the screenshot client catalogue (P1).
type emailClient struct {
	ID               string `json:"id"`
	Label            string `json:"label"`
	Name             string `json:"name"`
	PlatformGroup    string `json:"platformGroup"`
	PlatformType     string `json:"platformType"`
	PlatformVersion  string `json:"platformVersion"`
	CanDisableImages bool   `json:"canDisableImages"`
	Status           string `json:"status"`
}

var emailClients = func() []emailClient {
	rows := [][5]string{
		{"iphone-16-applemail-lightmode-portrait", "Apple Mail (iPhone 16)", "Mobile", "iOS", "18"},
		{"iphone-16-gmail-lightmode-portrait", "Gmail (iPhone 16)", "Mobile", "iOS", "18"},
		{"pixel-9-gmail-lightmode-portrait", "Gmail (Pixel 9)", "Mobile", "Android", "15"},
		{"outlook-2021-windows-lightmode", "Outlook 2021 (Windows)", "Desktop", "Windows", "11"},
		{"applemail-macos-lightmode", "Apple Mail (macOS)", "Desktop", "macOS", "15"},
		{"gmail-chrome-lightmode", "Gmail (Chrome)", "Web", "Chrome", "130"},
		{"outlookcom-edge-lightmode", "Outlook.com (Edge)", "Web", "Edge", "130"},
		{"yahoo-firefox-lightmode", "Yahoo Mail (Firefox)", "Web", "Firefox", "132"},
	}
	out := make([]emailClient, len(rows))
	for i, r := range rows {
		out[i] = emailClient{ID: r[0], Label: r[0], Name: r[1], PlatformGroup: r[2], PlatformType: r[3],
			PlatformVersion: r[4], CanDisableImages: r[2] != "Mobile", Status: "Available"}
	}
	return out
}()

func knownClient(id string) bool {
	for _, c := range emailClients {
		if strings.EqualFold(c.ID, id) {
			return true
		}
	}
	return false
}

// screenshotPNG draws a small fake screenshot, tinted per email client.
func screenshotPNG(client string) []byte {
	h := fnv.New32a()
	h.Write([]byte(client))
	sum := h.Sum32()
	tint := color.RGBA{uint8(sum), uint8(sum >> 8), uint8(sum >> 16), 255}
	img := image.NewRGBA(image.Rect(0, 0, 120, 200))
	for y := 0; y < 200; y++ {
		for x := 0; x < 120; x++ {
			c := color.RGBA{250, 250, 250, 255}
			switch {
			case y < 24:
				c = tint
			case y%16 < 6 && x > 10 && x < 110-(y*7)%40:
				c = color.RGBA{180, 180, 180, 255}
			}
			img.Set(x, y, c)
		}
	}
	var buf bytes.Buffer
	png.Encode(&buf, img)
	return buf.Bytes()
}

// rawEmail renders a message as an RFC 5322 MIME email.
func rawEmail(m *message) []byte {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	hdr := func(k, v string) { fmt.Fprintf(&buf, "%s: %s\r\n", k, v) }
	hdr("From", joinAddrs(m.from))
	hdr("To", joinAddrs(m.to))
	if len(m.cc) > 0 {
		hdr("Cc", joinAddrs(m.cc))
	}
	hdr("Subject", mime.QEncoding.Encode("utf-8", m.subject))
	hdr("Date", m.received.Format(time.RFC1123Z))
	hdr("Message-ID", "<"+m.id+"@mailosaur.net>")
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", `multipart/mixed; boundary="`+mw.Boundary()+`"`)
	buf.WriteString("\r\n")

	var alt bytes.Buffer
	aw := multipart.NewWriter(&alt)
	part := func(w *multipart.Writer, ctype, body string) {
		p, _ := w.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {ctype + "; charset=utf-8"},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		qw := quotedprintable.NewWriter(p)
		qw.Write([]byte(body))
		qw.Close()
	}
	if m.text != "" || m.html == "" {
		part(aw, "text/plain", m.text)
	}
	if m.html != "" {
		part(aw, "text/html", m.html)
	}
	aw.Close()
	p, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {`multipart/alternative; boundary="` + aw.Boundary() + `"`}})
	p.Write(alt.Bytes())

	for _, a := range m.attachments {
		p, _ := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {a.contentType},
			"Content-Disposition":       {mime.FormatMediaType("attachment", map[string]string{"filename": a.fileName})},
			"Content-Transfer-Encoding": {"base64"},
		})
		enc := base64.StdEncoding.EncodeToString(a.content)
		for len(enc) > 76 {
			p.Write([]byte(enc[:76] + "\r\n"))
			enc = enc[76:]
		}
		p.Write([]byte(enc + "\r\n"))
	}
	mw.Close()
	return buf.Bytes()
}

type spamRule struct {
	Rule        string  `json:"rule"`
	Description string  `json:"description"`
	Score       float64 `json:"score"`
}

// spamReport is A1: a few SpamAssassin-like rules derived from the message.
func spamReport(m *message) any {
	rules := []spamRule{}
	if m.html != "" {
		rules = append(rules, spamRule{"HTML_MESSAGE", "BODY: HTML included in message", 0.001})
		if m.text == "" {
			rules = append(rules, spamRule{"MIME_HTML_ONLY", "BODY: Message only has text/html MIME parts", 0.1})
		}
	}
	if strings.ToUpper(m.subject) == m.subject && strings.ContainsAny(m.subject, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
		rules = append(rules, spamRule{"SUBJ_ALL_CAPS", "Subject is all capitals", 0.5})
	}
	if len(m.attachments) > 0 {
		rules = append(rules, spamRule{"T_HAS_ATTACHMENT", "Message has an attachment", 0.01})
	}
	rules = append(rules, spamRule{"DKIM_VALID", "Message has at least one valid DKIM or DK signature", -0.1})
	score := 0.0
	for _, r := range rules {
		score += r.Score
	}
	return struct {
		SpamFilterResults struct {
			SpamAssassin []spamRule `json:"spamAssassin"`
		} `json:"spamFilterResults"`
		Score float64 `json:"score"`
	}{struct {
		SpamAssassin []spamRule `json:"spamAssassin"`
	}{rules}, float64(int(score*1000)) / 1000}
}

// deliverability is A2: a plausible, all-passing report.
func deliverability(m *message) any {
	type result struct {
		Result      string            `json:"result"`
		Description string            `json:"description"`
		RawValue    string            `json:"rawValue"`
		Tags        map[string]string `json:"tags"`
	}
	domain := "example.com"
	if len(m.from) > 0 {
		if _, d, ok := strings.Cut(m.from[0].Email, "@"); ok {
			domain = d
		}
	}
	return map[string]any{
		"spf": result{"Pass", "SPF record found and the sender is authorised.", "v=spf1 include:_spf." + domain + " ~all",
			map[string]string{"v": "spf1"}},
		"dkim": []result{{"Pass", "DKIM signature valid.", "v=1; a=rsa-sha256; d=" + domain + "; s=mail",
			map[string]string{"v": "1", "a": "rsa-sha256", "d": domain, "s": "mail"}}},
		"dmarc": result{"Pass", "DMARC policy found.", "v=DMARC1; p=none",
			map[string]string{"v": "DMARC1", "p": "none"}},
		"blockLists": []map[string]string{
			{"id": "spamhaus", "name": "Spamhaus ZEN", "result": "Pass"},
			{"id": "barracuda", "name": "Barracuda", "result": "Pass"},
		},
		"content": map[string]any{
			"embed": false, "iframe": false, "object": false, "script": strings.Contains(strings.ToLower(m.html), "<script"),
			"shortUrls": false, "textSize": len(m.text), "totalSize": len(m.text) + len(m.html),
			"missingAlt": false, "missingListUnsubscribe": true,
		},
		"dnsRecords": map[string][]string{
			"a": {"192.0.2.10"}, "mx": {"10 mx." + domain}, "ptr": {"mail." + domain},
		},
		"spamAssassin": map[string]any{"score": 0.0, "result": "Pass", "rules": []spamRule{}},
	}
}

// decodeSecret reads a base32 TOTP secret (case, spaces and padding
// tolerated).
func decodeSecret(s string) ([]byte, error) {
	s = strings.ToUpper(strings.ReplaceAll(strings.TrimRight(s, "="), " ", ""))
	if s == "" {
		return nil, fmt.Errorf("empty secret")
	}
	return base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(s)
}

// totp is RFC 6238 (HMAC-SHA1, 6 digits, 30 s steps): the code at now and
// the time it expires.
func totp(key []byte, now time.Time) (string, time.Time) {
	step := now.Unix() / 30
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(step))
	mac := hmac.New(sha1.New, key)
	mac.Write(msg[:])
	sum := mac.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	v := binary.BigEndian.Uint32(sum[off:]) & 0x7fffffff
	return fmt.Sprintf("%06d", v%1000000), time.Unix((step+1)*30, 0).UTC()
}
