package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// identityNode is keygate in front of the stub upstream with the account
// header renamed, so that configured names are covered as well as the
// defaults. It returns the node, the upstream, the account, a standard key
// and a key restricted to abcd1234.
func identityNode(t *testing.T) (*node, *upstream, string, string, string) {
	up := newUpstream(t)
	n := newNode(t, nodeConfig{upstream: up.addr(), site: "keygate {\n\t\theader account X-Tenant\n\t}"})
	acct := n.account("acme")
	standard := n.key(acct, "standard", "")
	restricted := n.key(acct, "one inbox", "abcd1234")
	n.start()
	return n, up, acct, standard, restricted
}

// wantIdentity checks the identity headers a request reached the upstream
// with: each exactly once, with keygate's values, and none of them as a
// trailer.
func wantIdentity(t *testing.T, got *http.Request, acct, keyType, server string) {
	t.Helper()
	if v := got.Header.Values("X-Tenant"); len(v) != 1 || v[0] != acct {
		t.Errorf("account header upstream: %q, want %q", v, acct)
	}
	if v := got.Header.Values("X-Keygate-Key-Type"); len(v) != 1 || v[0] != keyType {
		t.Errorf("key type header upstream: %q, want %q", v, keyType)
	}
	if v := got.Header.Values("X-Keygate-Key-Id"); len(v) != 1 || !strings.HasPrefix(v[0], "key_") {
		t.Errorf("key id header upstream: %q", v)
	}
	v := got.Header.Values("X-Keygate-Server")
	if (server == "" && len(v) != 0) || (server != "" && (len(v) != 1 || v[0] != server)) {
		t.Errorf("server header upstream: %q, want %q", v, server)
	}
	for name := range got.Trailer {
		if isIdentityName(name) {
			t.Errorf("identity header %s reached the upstream as a trailer: %v", name, got.Trailer)
		}
	}
}

func isIdentityName(name string) bool {
	n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	return n == "x-tenant" || n == "x-account" || strings.HasPrefix(n, "x-keygate-")
}

// TestIdentityHeadersSurviveConnection: a client that names keygate's
// identity headers in Connection (any letter case, '_' for '-', the
// configured names) would have reverse_proxy delete them as hop-by-hop
// headers after keygate set them. They reach the upstream all the same, and
// the client's other Connection tokens keep their meaning.
func TestIdentityHeadersSurviveConnection(t *testing.T) {
	t.Parallel()
	n, up, acct, standard, restricted := identityNode(t)

	connections := [][]string{
		{"Connection", "X-Keygate-Server, X-Keygate-Key-Type"},
		{"Connection", "x-tenant,X-KEYGATE-KEY-ID , x-keygate-server"},
		{"Connection", "keep-alive", "Connection", "X_Keygate_Server, X_Tenant, X_keygate_key_type, X-Other"},
		{"Connection", "X-Other,\tx-keygate-key-type\t, X-Keygate-Key-Id, X-Tenant"},
	}
	for _, conn := range connections {
		for _, k := range []struct{ key, path, keyType, server string }{
			{standard, "/api/servers", "standard", ""},
			{restricted, "/api/messages?server=abcd1234", "restricted", "abcd1234"},
		} {
			h := append([]string{"Authorization", bearer(k.key), "X-Other", "hop-by-hop"}, conn...)
			if r := n.do("GET", k.path, h...); r.status != http.StatusOK {
				t.Fatalf("%s key, %q: status %d %s", k.keyType, conn, r.status, r.body)
			}
			got := up.last(t)
			wantIdentity(t, got, acct, k.keyType, k.server)
			// The client's other tokens still name hop-by-hop headers.
			if strings.Contains(strings.Join(conn, ","), "X-Other") && got.Header.Get("X-Other") != "" {
				t.Errorf("%q: X-Other, named in Connection, reached the upstream", conn)
			}
		}
	}
}

// TestIdentityTrailersNeverReachUpstream: identity headers sent as request
// trailers of a chunked body (declared or not, any spelling) never reach
// the upstream, neither as a trailer nor as its declaration; other
// trailers do.
func TestIdentityTrailersNeverReachUpstream(t *testing.T) {
	t.Parallel()
	n, up, acct, standard, restricted := identityNode(t)

	trailers := []struct{ declared, sent string }{
		{"X-Tenant, X-Keygate-Server, X_Keygate_Key_Id, X-Checksum",
			"X-Tenant: forged\r\nX-Keygate-Server: zzzz9999\r\nX_Keygate_Key_Id: key_forged\r\nX-Keygate-Key-Type: standard\r\nX-Checksum: kept\r\n"},
		{"x-keygate-key-type, X-Checksum", "x-keygate-key-type: standard\r\nx_tenant: forged\r\nX-Checksum: kept\r\n"},
		{"", "X-Keygate-Server: zzzz9999\r\nX-Tenant: forged\r\n"},
	}
	for _, tr := range trailers {
		for _, k := range []struct{ key, path, keyType, server string }{
			{standard, "/api/servers", "standard", ""},
			{restricted, "/api/messages?server=abcd1234", "restricted", "abcd1234"},
		} {
			before := up.count()
			if status := sendChunked(t, n.addr, k.path, bearer(k.key), tr.declared, tr.sent); status != http.StatusOK {
				t.Fatalf("%s key, trailers %q: status %d", k.keyType, tr.declared, status)
			}
			if up.count() != before+1 {
				t.Fatalf("%s key, trailers %q: %d requests upstream, want 1", k.keyType, tr.declared, up.count()-before)
			}
			got := up.last(t)
			wantIdentity(t, got, acct, k.keyType, k.server)
			if strings.Contains(tr.declared, "X-Checksum") && got.Trailer.Get("X-Checksum") != "kept" {
				t.Errorf("trailers %q: the client's own trailer was lost: %v", tr.declared, got.Trailer)
			}
		}
	}
}

// sendChunked sends a POST with a chunked body and the given trailers over
// a raw connection, and returns the status.
func sendChunked(t *testing.T, addr, path, auth, declared, trailers string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var req strings.Builder
	fmt.Fprintf(&req, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n", path, addr, auth)
	if declared != "" {
		fmt.Fprintf(&req, "Trailer: %s\r\n", declared)
	}
	fmt.Fprintf(&req, "\r\n2\r\n{}\r\n0\r\n%s\r\n", trailers)
	if _, err := c.Write([]byte(req.String())); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
