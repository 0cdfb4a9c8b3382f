package sim

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Seed is the JSON seed file format:
//
//	{"accounts": {"<account-id>": {
//	    "servers": [{"id": "abcd1234", "name": "Staging", "password": "…", "users": [],
//	                 "messages": [{"type": "Email", "from": "Acme <hi@acme.example>",
//	                               "to": "ada@abcd1234.mailosaur.net", "subject": "…",
//	                               "text": "…", "html": "…", "received": "2025-01-02T03:04:05Z",
//	                               "attachments": [{"fileName": "a.pdf", "contentType": "application/pdf",
//	                                                "content": "<base64>"}]}]}],
//	    "devices": [{"name": "…", "sharedSecret": "<base32>"}]}}}
//
// Only the server name is needed: an absent id is minted (8 lower-case
// letters and digits; a given one must have that shape and be unused), an
// absent password is generated, an absent received time is now, an absent
// type is "Email". Unknown fields are an error.
type Seed struct {
	Accounts map[string]SeedAccount `json:"accounts"`
}

// SeedAccount is one account of a Seed.
type SeedAccount struct {
	Servers []SeedServer `json:"servers,omitempty"`
	Devices []SeedDevice `json:"devices,omitempty"`
}

// SeedServer is one server (inbox) of a SeedAccount, with its messages
// oldest first.
type SeedServer struct {
	ID       string       `json:"id,omitempty"`
	Name     string       `json:"name"`
	Password string       `json:"password,omitempty"`
	Users    []string     `json:"users,omitempty"`
	Messages []NewMessage `json:"messages,omitempty"`
}

// SeedDevice is one OTP device of a SeedAccount.
type SeedDevice struct {
	Name         string `json:"name"`
	SharedSecret string `json:"sharedSecret"`
}

// AddServer creates a server named name in account and returns it.
func (s *Server) AddServer(account, name string) Inbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newInbox(account, "", name).view()
}

// AddMessage stores m in server serverID of account, as if it had been
// received, and returns the full message. It panics if the account has no
// such server.
func (s *Server) AddMessage(account, serverID string, m NewMessage) Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.inbox(account, serverID)
	if in == nil {
		panic(fmt.Sprintf("sim: account %q has no server %q", account, serverID))
	}
	return s.insert(in, m).full()
}

// LoadSeed adds the accounts, servers, messages and devices of a JSON seed
// (see Seed) to the current state. Nothing is added if the seed is invalid.
func (s *Server) LoadSeed(r io.Reader) error {
	var seed Seed
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&seed); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	ids := map[string]bool{}
	for acct, a := range seed.Accounts {
		if acct == "" {
			return fmt.Errorf("seed: empty account id")
		}
		for i, sv := range a.Servers {
			if sv.ID != "" {
				if !isServerID(sv.ID) {
					return fmt.Errorf("seed: account %q server %d: id %q is not 8 lower-case letters and digits", acct, i, sv.ID)
				}
				if s.servers[sv.ID] != nil || ids[sv.ID] {
					return fmt.Errorf("seed: server id %q is already used", sv.ID)
				}
				ids[sv.ID] = true
			}
			for j, m := range sv.Messages {
				if m.Type != "" && !strings.EqualFold(m.Type, "email") && !strings.EqualFold(m.Type, "sms") {
					return fmt.Errorf("seed: account %q server %d message %d: type %q is neither Email nor SMS", acct, i, j, m.Type)
				}
			}
		}
		for i, d := range a.Devices {
			if _, err := decodeSecret(d.SharedSecret); err != nil {
				return fmt.Errorf("seed: account %q device %d: sharedSecret is not base32", acct, i)
			}
		}
	}

	accounts := make([]string, 0, len(seed.Accounts))
	for acct := range seed.Accounts {
		accounts = append(accounts, acct)
	}
	sort.Strings(accounts)
	for _, acct := range accounts {
		a := seed.Accounts[acct]
		for _, sv := range a.Servers {
			in := s.newInbox(acct, sv.ID, sv.Name)
			if sv.Password != "" {
				in.password = sv.Password
			}
			if sv.Users != nil {
				in.users = append([]string{}, sv.Users...)
			}
			for _, m := range sv.Messages {
				s.insert(in, m)
			}
		}
		for _, d := range a.Devices {
			s.newDevice(acct, d.Name, d.SharedSecret)
		}
	}
	return nil
}

// WriteSeed writes the whole state (previews and the request log aside)
// as an indented JSON seed that LoadSeed reads back into an equal state,
// ids of servers included (ids of messages and attachments are minted
// anew).
func (s *Server) WriteSeed(w io.Writer) error {
	s.mu.Lock()
	seed := Seed{Accounts: map[string]SeedAccount{}}
	accounts := map[string]bool{}
	for _, in := range s.servers {
		accounts[in.account] = true
	}
	for _, d := range s.devices {
		accounts[d.account] = true
	}
	for acct := range accounts {
		var a SeedAccount
		for _, in := range s.inboxes(acct) {
			sv := SeedServer{ID: in.id, Name: in.name, Password: in.password, Users: append([]string(nil), in.users...)}
			msgs := append([]*message(nil), in.messages...)
			sort.SliceStable(msgs, func(i, j int) bool {
				if !msgs[i].received.Equal(msgs[j].received) {
					return msgs[i].received.Before(msgs[j].received)
				}
				return msgs[i].seq < msgs[j].seq
			})
			for _, m := range msgs {
				nm := NewMessage{
					Type: m.typ, From: joinAddrs(m.from), To: joinAddrs(m.to), Cc: joinAddrs(m.cc),
					Subject: m.subject, Text: m.text, HTML: m.html, Received: m.received,
				}
				for _, at := range m.attachments {
					nm.Attachments = append(nm.Attachments, NewAttachment{FileName: at.fileName, ContentType: at.contentType, Content: at.content})
				}
				sv.Messages = append(sv.Messages, nm)
			}
			a.Servers = append(a.Servers, sv)
		}
		for _, d := range s.accountDevices(acct) {
			a.Devices = append(a.Devices, SeedDevice{Name: d.name, SharedSecret: d.secret})
		}
		seed.Accounts[acct] = a
	}
	b, err := json.MarshalIndent(seed, "", "  ")
	s.mu.Unlock()
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// SeedDemo gives account a demo data set: two servers, "Staging" and
// "Production", each with a few messages (most with attachments, one SMS),
// and one OTP device. Each call adds another such set.
func (s *Server) SeedDemo(account string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	pdf := func(title string) NewAttachment {
		return NewAttachment{FileName: strings.ToLower(strings.ReplaceAll(title, " ", "-")) + ".pdf", ContentType: "application/pdf", Content: tinyPDF(title)}
	}

	// Ids derived from the account: a demo restarted for the same account
	// has the same inboxes, so keys restricted to them keep working.
	staging := s.newInbox(account, s.demoServerID(account, "Staging"), "Staging")
	to := "ada@" + staging.domain()
	s.insert(staging, NewMessage{
		From: "Acme <hello@acme.example>", To: to, Received: ago(3 * time.Hour),
		Subject: "Welcome to Acme, Ada!",
		Text:    "Hi Ada,\n\nWelcome to Acme. Confirm your address: https://acme.example/confirm?t=7f3a\n\nThe Acme team",
		HTML: `<html><body><h1>Welcome to Acme</h1><p>Hi Ada,</p><p><a href="https://acme.example/confirm?t=7f3a">Confirm your address</a></p>` +
			`<img src="https://acme.example/logo.png" alt="Acme logo"></body></html>`,
		Attachments: []NewAttachment{pdf("Getting started")},
	})
	s.insert(staging, NewMessage{
		From: "Acme Security <security@acme.example>", To: to, Received: ago(2 * time.Hour),
		Subject:     "Reset your password",
		Text:        "Your password reset code is 482913. It expires in 10 minutes.\nOr open https://acme.example/reset?c=482913",
		HTML:        `<p>Your password reset code is <b>482913</b>.</p><p><a href="https://acme.example/reset?c=482913">Reset password</a></p>`,
		Attachments: []NewAttachment{{FileName: "security-tips.txt", ContentType: "text/plain", Content: []byte("1. Never share your code.\n2. Use a password manager.\n")}},
	})
	s.insert(staging, NewMessage{
		From: "Acme Billing <billing@acme.example>", To: to, Received: ago(time.Hour),
		Subject: "Your invoice INV-1042",
		Text:    "Invoice INV-1042: 3 seats, 87.00 EUR. Details attached.",
		HTML:    `<p>Invoice <b>INV-1042</b>: 3 seats, 87.00 EUR.</p>`,
		Attachments: []NewAttachment{pdf("Invoice INV-1042"),
			{FileName: "invoice-1042.csv", ContentType: "text/csv", Content: []byte("item,qty,price\nseat,3,29.00\n")}},
	})

	prod := s.newInbox(account, s.demoServerID(account, "Production"), "Production")
	to = "orders@" + prod.domain()
	s.insert(prod, NewMessage{
		From: "Shop <orders@shop.example>", To: to, Received: ago(150 * time.Minute),
		Subject:     "Order #5531 confirmed",
		Text:        "Thanks for your order #5531. Track it at https://shop.example/orders/5531",
		HTML:        `<p>Thanks for your order <b>#5531</b>.</p><p><a href="https://shop.example/orders/5531">Track your order</a></p>`,
		Attachments: []NewAttachment{pdf("Receipt 5531")},
	})
	s.insert(prod, NewMessage{
		From: "Reports <reports@shop.example>", To: to, Received: ago(30 * time.Minute),
		Subject: "Weekly report",
		Text:    "This week: 212 orders, 3 refunds. Chart and data attached.",
		HTML:    `<p>This week: <b>212</b> orders, 3 refunds.</p><img src="cid:chart" alt="chart">`,
		Attachments: []NewAttachment{
			{FileName: "report.csv", ContentType: "text/csv", Content: []byte("day,orders,refunds\nmon,31,0\ntue,28,1\nwed,35,0\nthu,40,1\nfri,44,1\nsat,20,0\nsun,14,0\n")},
			{FileName: "chart.png", ContentType: "image/png", Content: screenshotPNG("chart")},
		},
	})
	s.insert(prod, NewMessage{
		Type: "SMS", From: "+15005550006", To: "+15005550001", Received: ago(5 * time.Minute),
		Text: "Your Shop verification code is 193847",
	})

	s.newDevice(account, "Demo authenticator", "JBSWY3DPEHPK3PXP")
}

// tinyPDF is a minimal one-page PDF showing title.
func tinyPDF(title string) []byte {
	title = strings.NewReplacer(`\`, `\\`, "(", `\(`, ")", `\)`).Replace(title)
	stream := "BT /F1 18 Tf 40 100 Td (" + title + ") Tj ET"
	objs := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%s\nendstream", len(stream), stream),
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
	}
	var b strings.Builder
	b.WriteString("%PDF-1.4\n")
	offsets := make([]int, len(objs))
	for i, o := range objs {
		offsets[i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objs)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objs)+1, xref)
	return []byte(b.String())
}

// demoServerID derives a stable server id from the account and the inbox
// name, or mints one if that id is taken.
func (s *Server) demoServerID(account, name string) string {
	sum := sha256.Sum256([]byte("inboxsim demo " + account + " " + name))
	id := make([]byte, 8)
	for i := range id {
		id[i] = lowerAlnum[int(sum[i])%len(lowerAlnum)]
	}
	if s.servers[string(id)] != nil {
		return s.mintServerID()
	}
	return string(id)
}
