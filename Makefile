# keygate: `make run` starts the demo, `make test` runs every test.
SHELL := /bin/bash
GO ?= go
BIN := bin/keygate
DEMO := $(CURDIR)/.demo
# The xcaddy build flags: smaller binary, no unused storage backends.
BUILDFLAGS := -trimpath -ldflags "-w -s" -tags nobadger,nomysql,nopgx

.PHONY: build run test bench fmt clean

build:
	$(GO) build $(BUILDFLAGS) -o $(BIN) ./cmd/keygate

# The sidecar on the embedded store in front of the inbox API simulator,
# seeded with two inboxes for a demo account, and the dashboard, where the
# account's administrator `admin` signs in with a password generated for
# this run. State lives in .demo/, so `make clean` starts over.
run: build
	@$(GO) build -o bin/inboxsim ./cmd/inboxsim
	@mkdir -p $(DEMO)
	@export XDG_DATA_HOME=$(DEMO)/data XDG_CONFIG_HOME=$(DEMO)/config; \
	  cfg="--config Caddyfile.example --adapter caddyfile"; \
	  quiet() { "$$@" 2>$(DEMO)/cli.err || { cat $(DEMO)/cli.err >&2; return 1; }; }; \
	  ./$(BIN) migrate $$cfg >/dev/null || exit 1; \
	  acct=$$(quiet ./$(BIN) account list $$cfg | awk '$$2=="demo"{print $$1}'); \
	  if [ -z "$$acct" ]; then acct=$$(quiet ./$(BIN) account create demo $$cfg) || exit 1; fi; \
	  quiet ./$(BIN) member add "$$acct" admin --role admin $$cfg >/dev/null || exit 1; \
	  pw=$$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20); \
	  hash=$$(./$(BIN) hash-password --plaintext "$$pw") || exit 1; \
	  export KEYGATE_ADMIN_HASH="$$hash"; \
	  ./bin/inboxsim -listen 127.0.0.1:8081 -demo -demo-account "$$acct" -gzip >$(DEMO)/inboxsim.log 2>&1 & sim=$$!; \
	  trap 'kill $$sim 2>/dev/null' EXIT INT TERM; \
	  for i in $$(seq 50); do curl -fs -o /dev/null -H "X-Keygate-Account: $$acct" http://127.0.0.1:8081/api/servers && break; sleep 0.1; done; \
	  inboxes=$$(curl -fs -H "X-Keygate-Account: $$acct" http://127.0.0.1:8081/api/servers | grep -o '"id":"[a-z0-9]*","name":"[^"]*"' | sed 's/"id":"\([^"]*\)","name":"\([^"]*\)"/      \1  \2/'); \
	  echo; \
	  echo "keygate is starting on http://localhost:8080, in front of the inbox API simulator."; \
	  echo "Demo account: $$acct. Its inboxes (servers):"; \
	  echo "$$inboxes"; \
	  echo; \
	  echo "The dashboard: http://localhost:8090"; \
	  echo "  user name: admin"; \
	  echo "  password:  $$pw   (new for every make run)"; \
	  echo "Create a key there (Create standard key, Create, Reveal key, Copy), then in another terminal:"; \
	  echo "  curl -u \"<the key>:\" http://localhost:8080/api/servers"; \
	  echo; \
	  echo "Or from the command line, in another terminal:"; \
	  echo "  export XDG_DATA_HOME=$(DEMO)/data"; \
	  echo "  KEY=\$$(./$(BIN) key create $$acct my-first-key --config Caddyfile.example)"; \
	  echo "  curl -u \"\$$KEY:\" http://localhost:8080/api/servers"; \
	  echo "  RKEY=\$$(./$(BIN) key create $$acct staging-only --server <server id> --config Caddyfile.example)"; \
	  echo "  curl -u \"\$$RKEY:\" 'http://localhost:8080/api/messages?server=<server id>'   # its own inbox: 200"; \
	  echo "  curl -u \"\$$RKEY:\" http://localhost:8080/api/servers                          # the inbox list: 403"; \
	  echo; \
	  ./$(BIN) run $$cfg

# Everything CI runs: formatting, vet, the race-enabled tests (real
# Postgres, real SQLite, real Caddy processes), and the allocation checks
# that the race detector would distort.
test:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 -run 'Allocs' ./caddymodule/keys ./caddymodule/auth
	$(GO) test -race -count=1 -timeout 30m ./...

# Micro-benchmarks (the request check, the scope policy, message checks,
# the dashboard's lists of an account of 10 000 keys on Postgres),
# real Caddy under load against plain Caddy and basic_auth, one
# instance's store lookups per second with 100 000 active keys at the short
# and the long TTL, the time a deletion or creation takes to reach every
# instance of a fleet of three (and each of 3 and of 50 followers in one
# process, with what they cost Postgres),
# a flood of 100 000 unknown keys against a client with a valid key,
# keygate's memory under 128 concurrent fetches of a 7 MiB message, and
# `keygate secret rotate` re-keying 1 000 000 keys while a client measures
# its latency (KEYGATE_REKEY_KEYS=20000 for a quick run), and a store of
# 10 000 000 keys: miss latency, cache memory per key, start time, an
# instance joining a fleet under load (KEYGATE_SCALE_KEYS=200000 for a
# quick run).
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./caddymodule/keys ./caddymodule/cache ./caddymodule/auth ./caddymodule/scope ./caddymodule
	$(GO) run ./cmd/loadbench -keygate $(BIN)
	$(GO) test -run '^$$' -bench 'StoreQueryRate|FleetRevocationLag' -benchtime 1x -timeout 30m ./caddymodule/fleet
	$(GO) test -run '^$$' -bench 'RevocationLag|Flood|InspectMemory|Rekey|ScaleKeys' -benchtime 1x -timeout 180m ./caddymodule/e2e

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin $(DEMO)
