// Package scope decides what a server-restricted key may do: the inbox
// API's routes as one table, a strict reading of each request that agrees
// with any reasonable reading the upstream may make, and the decision for a
// key. It knows nothing of Caddy, of HTTP handlers or of the store; the
// caller supplies an object's server when the decision needs one.
//
// A server-restricted key "is scoped to a single inbox. It can only be used
// to perform email and SMS functions and cannot create or delete inboxes."
// The status rule: 403 when the request itself shows it is out of scope (a
// route class the key may not use, another server in the path or query);
// 404 when the answer needed the object (a message of another server), so
// the key learns nothing about other inboxes.
package scope
