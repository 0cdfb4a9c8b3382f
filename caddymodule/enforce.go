package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/scope"
	"github.com/keygate/keygate/caddymodule/store"
)

// The scope policy's steps. Each answers the request, or lets it go on
// by returning outAllowed, and returns its outcome for ServeHTTP to count.

// enforce applies the scope policy to a request whose key is live: a
// server-restricted key reaches only its own server's email and SMS
// functions, and no response of another server reaches it. server is the
// server the request names, if any (for its key's activity). forward asks
// ServeHTTP to pass the request on untouched, after counting it: its
// response may stream for long.
func (h *Handler) enforce(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, rt *runtime, id *auth.Identity) (server string, o outcome, forward bool, err error) {
	t, o, err := h.judge(w, r, next, rt, id)
	if o != outAllowed {
		return t.m.Server, o, false, err
	}
	if !t.readsResponse() {
		return t.m.Server, outAllowed, true, nil
	}
	o, err = h.readResponse(w, r, next, rt, id, &t)
	return t.m.Server, o, false, err
}

// target is what judging a request found: how it reads, what its
// response must still show, and the server it is known to address, for
// learning what its response reveals.
type target struct {
	m       scope.Match
	verdict scope.Verdict
	server  string
}

// readsResponse says whether keygate reads the response: to check it (a
// message fetched by a restricted key whose server is not known yet) or
// to learn from it (which server its messages, attachments and previews
// belong to). A HEAD's answer has no body to learn from.
func (t *target) readsResponse() bool {
	return t.m.Route != nil && !t.m.Head && (t.m.Route.Teaches != scope.TeachesNothing || t.holds())
}

// holds says whether the response waits for its check before the client
// sees any of it.
func (t *target) holds() bool { return t.verdict == scope.CheckResponse }

// judge reads the request and decides it, looking up the object it names
// when the verdict depends on the object's server.
func (h *Handler) judge(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, rt *runtime, id *auth.Identity) (target, outcome, error) {
	restricted := id.Type == store.Restricted
	m, err := h.read(r, restricted)
	if err != nil {
		return target{}, outBadRequest, h.refuse(w, outBadRequest, err)
	}
	t := target{m: m, verdict: scope.Pass, server: m.Server}
	if restricted {
		t.verdict = scope.Decide(m, id.ServerID)
	}
	switch t.verdict {
	case scope.Forbidden:
		return t, outForbidden, h.refuse(w, outForbidden, nil)
	case scope.CheckObject:
		o, err := h.checkObject(w, r, next, rt, id, &t)
		return t, o, err
	case scope.CheckResponse:
		o, err := h.checkKnownMessage(w, rt, id, &t)
		return t, o, err
	}
	return t, outAllowed, nil
}

// checkObject lets a restricted key's request go on only when the object
// it names is of the key's server, as the store (or, for a message, the
// upstream) knows it.
func (h *Handler) checkObject(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, rt *runtime, id *auth.Identity, t *target) (outcome, error) {
	kind := t.m.Route.Object()
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(h.app.StoreTimeout))
	s, found, err := rt.objects.ServerOf(ctx, id.AccountID, kind, t.m.Object, h.messageLookup(r, next))
	cancel()
	if err != nil {
		return h.lookupFailed(w, r, rt, kind, err)
	}
	if !found || s != id.ServerID {
		return outNotFound, h.refuse(w, outNotFound, nil)
	}
	t.server = s
	return outAllowed, nil
}

// checkKnownMessage settles a restricted key's message fetch before the
// response when the message's server is already known, so that a message
// of the key's server streams without being held.
func (h *Handler) checkKnownMessage(w http.ResponseWriter, rt *runtime, id *auth.Identity, t *target) (outcome, error) {
	s, ok := rt.objects.KnownMessage(id.AccountID, t.m.Object)
	if !ok {
		return outAllowed, nil // the response will tell
	}
	if s != id.ServerID {
		return outNotFound, h.refuse(w, outNotFound, nil)
	}
	t.verdict, t.server = scope.Pass, s
	return outAllowed, nil
}

// readResponse passes the request on and reads the response as it
// streams by, to learn from it and, when it is held, to check it before
// releasing it.
func (h *Handler) readResponse(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, rt *runtime, id *auth.Identity, t *target) (outcome, error) {
	hold := t.holds()
	askReadable(r.Header, hold)
	cost := int64(inspectCost)
	if hold {
		cost = holdCost
	}
	give, ok := h.budget.take(r.Context(), cost, time.Duration(h.app.StoreTimeout))
	if !ok {
		return outBusy, h.busy(w)
	}
	defer give()
	c := newCapture(w, hold, h.inspectLimit)
	defer c.close()
	if err := next.ServeHTTP(c, r); err != nil {
		if hold {
			return outBadGateway, err
		}
		return outUncounted, err
	}
	if c.status != http.StatusOK { // nothing to check or learn: an error, a 202 …
		return h.notOK(w, c, hold)
	}
	named, err := h.learn(r, next, rt, id, t, c)
	if !hold {
		if err != nil {
			if ce := h.logger.Check(zapcore.WarnLevel, "could not learn from a response"); ce != nil {
				ce.Write(zap.String("route", t.m.Route.ID), zap.Error(err))
			}
		}
		return outAllowed, nil
	}
	return h.checkHeld(w, c, id, named, err)
}

// askReadable asks the upstream for a response keygate can read: in an
// encoding it decodes and, when the response is held, the whole of it: a
// partial or conditional answer would not carry the whole message to
// check.
func askReadable(hdr http.Header, hold bool) {
	narrowAcceptEncoding(hdr)
	if hold {
		for _, k := range []string{"Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"} {
			hdr.Del(k)
		}
	}
}

// notOK answers a response other than a 200, which has nothing to check
// or learn from. A held one has not reached the client yet.
func (h *Handler) notOK(w http.ResponseWriter, c *capture, hold bool) (outcome, error) {
	switch {
	case !hold:
		return outAllowed, nil
	case c.status == http.StatusNotFound:
		// Byte for byte the 404 of a message of another server.
		return outNotFound, h.refuse(w, outNotFound, nil)
	case c.status < 400:
		// Only a 200 carries the message's server; anything else that
		// is not an error cannot be checked.
		return outBadGateway, h.refuse(w, outBadGateway, nil)
	}
	return outAllowed, c.release(w)
}

// learn records which server the objects of a 200 response belong to. It
// returns the server the response names, "" when its body could not be
// read.
func (h *Handler) learn(r *http.Request, next caddyhttp.Handler, rt *runtime, id *auth.Identity, t *target, c *capture) (string, error) {
	server := t.server
	if server == "" && t.m.Route.Teaches == scope.TeachesPreviews {
		// Previews are recorded under their message's server, which a
		// standard key's request does not name.
		ctx, cancel := context.WithTimeout(r.Context(), time.Duration(h.app.StoreTimeout))
		server, _, _ = rt.objects.ServerOf(ctx, id.AccountID, scope.Message, t.m.Object, h.messageLookup(r, next))
		cancel()
	}
	facts, err := c.facts()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(h.app.StoreTimeout))
	defer cancel()
	return rt.objects.Learn(ctx, id.AccountID, t.m.Route, server, facts)
}

// checkHeld releases a held message to the client only when the message
// names the key's server.
func (h *Handler) checkHeld(w http.ResponseWriter, c *capture, id *auth.Identity, named string, err error) (outcome, error) {
	if named == "" { // the body could not be read: fail closed
		h.logger.Warn("message response could not be checked", zap.String("key_id", id.KeyID), zap.Error(err))
		return outBadGateway, h.refuse(w, outBadGateway, nil)
	}
	if named != id.ServerID {
		return outNotFound, h.refuse(w, outNotFound, nil)
	}
	if err != nil { // the message is the key's; only recording its attachments failed
		h.logger.Warn("could not record a message's attachments", zap.Error(err))
	}
	return outAllowed, c.release(w)
}

// read reads the request against the route table. A restricted key's
// request that asks for another method is refused too: an upstream that
// honours the override would run a route keygate did not judge. A
// standard key may do anything in its account, so its request is judged
// as it is.
func (h *Handler) read(r *http.Request, restricted bool) (scope.Match, error) {
	m, err := h.policy.Read(r.Method, r.URL.EscapedPath(), r.URL.RawQuery)
	if err == nil && restricted {
		err = scope.MethodOverride(r.Header, r.URL.RawQuery)
	}
	return m, err
}

// messageLookup asks the upstream, through the rest of this route's
// handlers (normally reverse_proxy), which server a message belongs to, on
// the account's behalf.
func (h *Handler) messageLookup(r *http.Request, next caddyhttp.Handler) scope.MessageLookup {
	return func(ctx context.Context, messageID string) (string, bool, error) {
		lr := r.Clone(ctx)
		lr.Method = http.MethodGet
		u := *r.URL
		u.Path = "/api/messages/" + messageID
		u.RawPath = "/api/messages/" + url.PathEscape(messageID)
		u.RawQuery = ""
		lr.URL = &u
		lr.RequestURI = u.RequestURI()
		lr.Body, lr.ContentLength = http.NoBody, 0
		lr.Trailer = nil // the client's, for its own body
		for _, k := range []string{"Content-Type", "Content-Length", "Content-Encoding", "Transfer-Encoding", "Expect", "Accept-Encoding"} {
			lr.Header.Del(k)
		}
		// An account-wide look-up: keygate's own, not the restricted key's.
		lr.Header.Set(h.fields[fieldKeyType].name, string(store.Standard))
		lr.Header.Del(h.fields[fieldServer].name)

		give, ok := h.budget.take(ctx, inspectCost, time.Duration(h.app.StoreTimeout))
		if !ok {
			return "", false, errInspectBusy
		}
		defer give()
		c := newCapture(nil, true, h.inspectLimit)
		defer c.close()
		if err := next.ServeHTTP(c, lr); err != nil {
			return "", false, err
		}
		switch c.status {
		case http.StatusOK:
		case http.StatusNotFound:
			return "", false, nil
		default:
			return "", false, errors.New("upstream answered the message look-up with " + http.StatusText(c.status))
		}
		f, err := c.facts()
		if err != nil {
			return "", false, err
		}
		if f.Server == "" {
			return "", false, errors.New("reading message: no server field")
		}
		return f.Server, true, nil
	}
}

// lookupFailed answers a request whose object's server could not be
// learned: 502 when the upstream did not answer the message look-up, 503
// when the store did not answer for an attachment or preview (logged by
// the runtime's reporter, at most once a minute).
func (h *Handler) lookupFailed(w http.ResponseWriter, r *http.Request, rt *runtime, kind scope.Kind, err error) (outcome, error) {
	if errors.Is(err, errInspectBusy) {
		return outBusy, h.busy(w)
	}
	if kind == scope.Message {
		h.logger.Error("object's server could not be learned", zap.Stringer("kind", kind), zap.Error(err), zap.String("remote_ip", r.RemoteAddr))
		return outBadGateway, h.refuse(w, outBadGateway, nil)
	}
	rt.report.Report(kind.String()+" lookup", err)
	w.Header()["Retry-After"] = h.retryAfter
	return outUnavailable, writeError(w, http.StatusServiceUnavailable, unavailableObjectBody)
}

// errInspectBusy is a message look-up's when the inspect_memory budget
// stayed spent.
var errInspectBusy = errors.New("inspect_memory budget spent")

// busy answers 503 to a request whose response keygate would have to read
// while the inspect_memory budget is spent by others.
func (h *Handler) busy(w http.ResponseWriter) error {
	w.Header()["Retry-After"] = h.retryAfter
	return writeError(w, http.StatusServiceUnavailable, busyBody)
}

// refuse answers with the inbox API's error for the outcome. why is told
// to the client only for a request that could be read two ways: it says
// which rule the request broke, nothing about any key or object.
func (h *Handler) refuse(w http.ResponseWriter, o outcome, why error) error {
	switch o {
	case outForbidden:
		return writeError(w, http.StatusForbidden, forbiddenBody)
	case outNotFound:
		return writeError(w, http.StatusNotFound, notFoundBody)
	case outBadGateway:
		return writeError(w, http.StatusBadGateway, badGatewayBody)
	}
	desc, _ := json.Marshal("The request could be read more than one way (" + strings.TrimPrefix(why.Error(), scope.ErrAmbiguous.Error()+": ") + "); send it in its plain form.")
	return writeError(w, http.StatusBadRequest, `{"type":"ValidationError","status":400,"errors":[{"field":"url","detail":[{"description":`+string(desc)+`,"code":"ambiguous_request"}]}]}`+"\n")
}

// Error bodies of the scope policy, in the inbox API's error shape, with
// the messages its clients show.
const (
	forbiddenBody         = `{"type":"PermissionError","status":403,"errors":[{"field":"","detail":[{"description":"Insufficient permission to perform that task.","code":"forbidden"}]}]}` + "\n"
	notFoundBody          = `{"type":"NotFoundError","status":404,"errors":[{"field":"","detail":[{"description":"Not found, check input parameters.","code":"not_found"}]}]}` + "\n"
	badGatewayBody        = `{"type":"BadGateway","status":502,"errors":[{"field":"","detail":[{"description":"The inbox API's answer could not be checked for this key.","code":"unchecked_response"}]}]}` + "\n"
	busyBody              = `{"type":"ServiceUnavailable","status":503,"errors":[{"field":"","detail":[{"description":"Too many large responses are being checked right now. Retry shortly.","code":"inspect_busy"}]}]}` + "\n"
	unavailableObjectBody = `{"type":"ServiceUnavailable","status":503,"errors":[{"field":"","detail":[{"description":"The object's inbox could not be checked right now. Retry shortly.","code":"object_store_unavailable"}]}]}` + "\n"
)
