package admin

import "github.com/keygate/keygate/caddymodule/inboxapi"

// Inbox is an inbox (a "server" in the inbox API) of an account.
type Inbox = inboxapi.Inbox

// InboxLister lists an account's inboxes.
type InboxLister = inboxapi.Lister

// HTTPInboxes lists an account's inboxes with the inbox API.
type HTTPInboxes = inboxapi.Client
