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

// enforceScope applies the scope policy to a request whose key is live:
// a server-restricted key reaches only its own server's email and SMS
// functions, and no response of another server reaches it.
func (h *Handler) enforceScope(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, rt *runtime, id *auth.Identity) error {
	restricted := id.Type == store.Restricted
	m, err := h.read(r, restricted)
	if err != nil {
		decisionCounters[outBadRequest].Inc()
		return h.refuse(w, outBadRequest, err)
	}
	verdict := scope.Pass
	if restricted {
		verdict = scope.Decide(m, id.ServerID)
	}
	// server is the server the request is known to address, for learning
	// what its response reveals.
	server := m.Server
	switch verdict {
	case scope.Forbidden:
		decisionCounters[outForbidden].Inc()
		return h.refuse(w, outForbidden, nil)
	case scope.CheckObject:
		ctx, cancel := context.WithTimeout(r.Context(), time.Duration(h.app.StoreTimeout))
		s, found, err := rt.objects.ServerOf(ctx, id.AccountID, m.Route.Object(), m.Object, h.messageLookup(r, next))
		cancel()
		if err != nil {
			return h.lookupFailed(w, r, rt, m.Route.Object(), err)
		}
		if !found || s != id.ServerID {
			decisionCounters[outNotFound].Inc()
			return h.refuse(w, outNotFound, nil)
		}
		server = s
	case scope.CheckResponse:
		if s, ok := rt.objects.KnownMessage(id.AccountID, m.Object); ok {
			if s != id.ServerID {
				decisionCounters[outNotFound].Inc()
				return h.refuse(w, outNotFound, nil)
			}
			verdict, server = scope.Pass, s
		}
	}

	// A HEAD's answer has no body to learn from.
	if m.Route == nil || m.Head || (m.Route.Teaches == scope.TeachesNothing && verdict != scope.CheckResponse) {
		decisionCounters[outAllowed].Inc()
		return next.ServeHTTP(w, r) // streams untouched
	}

	// A route whose response keygate reads: to check it (a message fetched
	// by a restricted key whose server is not known yet) or to learn from
	// it (which server its messages, attachments and previews belong to).
	narrowAcceptEncoding(r.Header)
	hold := verdict == scope.CheckResponse
	if hold {
		// A partial or conditional answer would not carry the whole
		// message to check: ask for the whole of it.
		for _, k := range []string{"Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"} {
			r.Header.Del(k)
		}
	}
	cost := int64(inspectCost)
	if hold {
		cost = holdCost
	}
	give, ok := h.budget.take(r.Context(), cost, time.Duration(h.app.StoreTimeout))
	if !ok {
		decisionCounters[outBusy].Inc()
		return h.busy(w)
	}
	defer give()
	c := newCapture(w, hold, h.inspectLimit)
	defer c.close()
	if err := next.ServeHTTP(c, r); err != nil {
		if hold {
			decisionCounters[outBadGateway].Inc()
		}
		return err
	}
	if c.status == http.StatusNotFound && hold {
		// Byte for byte the 404 of a message of another server.
		decisionCounters[outNotFound].Inc()
		return h.refuse(w, outNotFound, nil)
	}
	if c.status != http.StatusOK { // nothing to check or learn: an error, a 202 …
		if hold && c.status < 400 {
			// Only a 200 carries the message's server; anything else that
			// is not an error cannot be checked.
			decisionCounters[outBadGateway].Inc()
			return h.refuse(w, outBadGateway, nil)
		}
		decisionCounters[outAllowed].Inc()
		if hold {
			return c.release(w)
		}
		return nil
	}

	if server == "" && m.Route.Teaches == scope.TeachesPreviews {
		// Previews are recorded under their message's server, which a
		// standard key's request does not name.
		ctx, cancel := context.WithTimeout(r.Context(), time.Duration(h.app.StoreTimeout))
		server, _, _ = rt.objects.ServerOf(ctx, id.AccountID, scope.Message, m.Object, h.messageLookup(r, next))
		cancel()
	}
	facts, err := c.facts()
	named := ""
	if err == nil {
		lctx, cancel := context.WithTimeout(r.Context(), time.Duration(h.app.StoreTimeout))
		named, err = rt.objects.Learn(lctx, id.AccountID, m.Route, server, facts)
		cancel()
	}
	if !hold {
		decisionCounters[outAllowed].Inc()
		if err != nil {
			if ce := h.logger.Check(zapcore.WarnLevel, "could not learn from a response"); ce != nil {
				ce.Write(zap.String("route", m.Route.ID), zap.Error(err))
			}
		}
		return nil
	}
	if named == "" { // the body could not be read: fail closed
		decisionCounters[outBadGateway].Inc()
		h.logger.Warn("message response could not be checked", zap.String("key_id", id.KeyID), zap.Error(err))
		return h.refuse(w, outBadGateway, nil)
	}
	if named != id.ServerID {
		decisionCounters[outNotFound].Inc()
		return h.refuse(w, outNotFound, nil)
	}
	if err != nil { // the message is the key's; only recording its attachments failed
		h.logger.Warn("could not record a message's attachments", zap.Error(err))
	}
	decisionCounters[outAllowed].Inc()
	return c.release(w)
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
func (h *Handler) lookupFailed(w http.ResponseWriter, r *http.Request, rt *runtime, kind scope.Kind, err error) error {
	if errors.Is(err, errInspectBusy) {
		decisionCounters[outBusy].Inc()
		return h.busy(w)
	}
	if kind == scope.Message {
		h.logger.Error("object's server could not be learned", zap.Stringer("kind", kind), zap.Error(err), zap.String("remote_ip", r.RemoteAddr))
		decisionCounters[outBadGateway].Inc()
		return h.refuse(w, outBadGateway, nil)
	}
	rt.report.Report(kind.String()+" lookup", err)
	decisionCounters[outUnavailable].Inc()
	w.Header()["Retry-After"] = h.retryAfter
	return writeError(w, http.StatusServiceUnavailable, unavailableObjectBody)
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
