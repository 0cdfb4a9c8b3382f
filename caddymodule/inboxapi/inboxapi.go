// Package inboxapi is keygate's client of the inbox API it guards: the
// dashboard and the operator commands list an account's inboxes with it,
// so that a server-restricted key is only made for an inbox of its account.
package inboxapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Inbox is an inbox (a "server" in the inbox API) of an account.
type Inbox struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Lister lists an account's inboxes.
type Lister interface {
	Inboxes(ctx context.Context, accountID string) ([]Inbox, error)
}

// Client lists inboxes with the inbox API's GET /api/servers, sent on the
// account's behalf with the identity headers keygate's sidecar would send
// for a standard key of the account.
type Client struct {
	// BaseURL of the inbox API, such as http://inbox-api.internal:8080.
	BaseURL string
	// AccountHeader and KeyTypeHeader name the identity headers the inbox
	// API trusts. Defaults: X-Keygate-Account, X-Keygate-Key-Type.
	AccountHeader string
	KeyTypeHeader string
	// Timeout bounds one listing. Default: 5s.
	Timeout time.Duration
	// Client sends the requests; http.DefaultClient if nil.
	Client *http.Client
}

// maxInboxList bounds the inbox list's body.
const maxInboxList = 8 << 20

// Inboxes returns the account's inboxes in the order the inbox API gives.
func (h *Client) Inboxes(ctx context.Context, accountID string) ([]Inbox, error) {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(h.BaseURL, "/")+"/api/servers", nil)
	if err != nil {
		return nil, fmt.Errorf("listing inboxes: %w", err)
	}
	req.Header.Set(orDefault(h.AccountHeader, "X-Keygate-Account"), accountID)
	req.Header.Set(orDefault(h.KeyTypeHeader, "X-Keygate-Key-Type"), "standard")
	req.Header.Set("Accept", "application/json")
	client := h.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("the inbox API did not answer within %s", timeout)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("the inbox API could not be reached (%v)", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the inbox API answered %s", resp.Status)
	}
	var list struct {
		Items []Inbox `json:"items"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxInboxList)).Decode(&list); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("the inbox API did not answer within %s", timeout)
		}
		return nil, fmt.Errorf("the inbox API's answer could not be read (%v)", err)
	}
	return list.Items, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
