package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRunServesUntilCancelled(t *testing.T) {
	seed := filepath.Join(t.TempDir(), "seed.json")
	os.WriteFile(seed, []byte(`{"accounts":{"acct_seed":{"servers":[{"id":"abcd1234","name":"Seeded"}]}}}`), 0o600)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-seed", seed, "-demo", "-demo-account", "acct_demo", "-gzip"}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	base, ok := strings.CutPrefix(strings.TrimSpace(line), "inboxsim listening on ")
	if !ok {
		t.Fatalf("first line %q", line)
	}

	for account, want := range map[string][]string{"acct_demo": {"Staging", "Production"}, "acct_seed": {"Seeded"}} {
		req, _ := http.NewRequest("GET", base+"/api/servers", nil)
		req.Header.Set("X-Keygate-Account", account)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var l struct{ Items []struct{ Name string } }
		err = json.NewDecoder(res.Body).Decode(&l)
		res.Body.Close()
		if err != nil || res.StatusCode != 200 || !res.Uncompressed || len(l.Items) != len(want) || l.Items[0].Name != want[0] {
			t.Fatalf("%s: %d %v %+v (gzip %v)", account, res.StatusCode, err, l, res.Uncompressed)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
}

func TestRunRefusesBadFlags(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"accounts":{"a":{"servers":[{"id":"NOPE","name":"x"}]}}}`), 0o600)
	for _, args := range [][]string{
		{"-demo"},
		{"-seed", bad},
		{"-seed", filepath.Join(t.TempDir(), "missing.json")},
		{"-nope"},
		{"extra"},
	} {
		if err := run(context.Background(), append([]string{"-listen", "127.0.0.1:0"}, args...), io.Discard, io.Discard); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
