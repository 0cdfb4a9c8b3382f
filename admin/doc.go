// Package admin is keygate's dashboard: the pages and the JSON API with
// which Account Administrators create, reveal and delete their account's
// API keys, and read the audit log of those actions; and with which
// operators, the people who run keygate, see its fleet of instances.
//
// It has two layers. [Dashboard] is a plain [net/http.Handler] that takes
// everything it needs as inputs (the keygate app's store and key manager,
// a lister of the account's inboxes, and a function that says who the
// signed-in user is) and can be tested without Caddy. [Handler] is the
// Caddy module http.handlers.keygate_admin and its Caddyfile directive
// keygate_admin: it takes the user from {http.auth.user.id}, set by
// whichever authentication runs in front of it, and the store and manager
// from the keygate app.
//
// # Routes
//
// Relative to wherever the module is mounted (a site root, or a path with
// handle_path):
//
//	GET  /                         the account's API keys (?account=<id>, and the list's parameters below)
//	GET  /new?type=standard|restricted&account=<id>   the create form
//	POST /create                   create a key; the response shows it once
//	POST /reveal                   show a key again
//	GET  /delete?account=&key=     the delete confirmation (without JavaScript)
//	POST /delete                   delete a key; confirm_name must be its name
//	GET  /audit                    the audit log (?account=<id>, and the log's parameters below)
//	GET  /fleet                    the fleet's live instances (operators only)
//	GET  /static/...               the page's stylesheet and script
//
//	GET  /api/accounts                                   the user's accounts, with a CSRF token each
//	GET  /api/accounts/{account}/keys                    a page of keys: items, total, next_cursor, prev_cursor
//	POST /api/accounts/{account}/keys                    {"name","type","server"} → the key, once
//	POST /api/accounts/{account}/keys/{key}/reveal       → {"key": …}
//	POST /api/accounts/{account}/keys/{key}/delete       {"name"} must be the key's name
//	GET  /api/accounts/{account}/inboxes                 the account's inboxes, from the inbox API
//	GET  /api/accounts/{account}/audit                   a page of events: items, next_before, prev_after
//	GET  /api/fleet                                      the fleet's live instances (operators only)
//
// The key list, page and API alike, takes q (a name, or a key's prefix
// kg_…), sort (name, created or last_used), order (asc or desc), cursor
// (a page's next or previous cursor) and limit (1 to 500; the page shows
// 50). The audit log takes q (a key's name or prefix), action
// (key.create, key.reveal, key.delete or secret.rotate), before or after
// (an event id from a page's links) and limit. A parameter out of these
// bounds is answered with 400 and what is expected.
//
// Every request needs a signed-in user who is an administrator of the
// account it names; a request authenticated with an API key is refused.
// The fleet's routes exist for operators only (Config.Operators): to
// anyone else, Account Administrators included, they answer exactly as a
// page that does not exist.
// Every POST needs the account's CSRF token (form field csrf_token or
// header X-CSRF-Token) and must not come from another site. Every response
// carries a strict Content-Security-Policy, forbids framing and caching.
package admin
