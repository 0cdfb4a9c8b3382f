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

# The sidecar on the embedded store in front of a stand-in upstream. State
# lives in .demo/, so `make clean` starts over.
run: build
	@mkdir -p $(DEMO)
	@export XDG_DATA_HOME=$(DEMO)/data XDG_CONFIG_HOME=$(DEMO)/config; \
	  ./$(BIN) migrate --config Caddyfile.example >/dev/null && \
	  acct=$$(./$(BIN) account list --config Caddyfile.example | awk '$$2=="demo"{print $$1}'); \
	  if [ -z "$$acct" ]; then acct=$$(./$(BIN) account create demo --config Caddyfile.example); fi; \
	  echo; \
	  echo "keygate is starting on http://localhost:8080 (demo account $$acct)."; \
	  echo "In another terminal, create a key and call the API with it:"; \
	  echo; \
	  echo "  export XDG_DATA_HOME=$(DEMO)/data"; \
	  echo "  KEY=\$$(./$(BIN) key create $$acct my-first-key --config Caddyfile.example)"; \
	  echo "  curl -u \"\$$KEY:\" http://localhost:8080/api/servers"; \
	  echo "  curl -i http://localhost:8080/api/servers    # no key: 401"; \
	  echo; \
	  exec ./$(BIN) run --config Caddyfile.example --adapter caddyfile

# Everything CI runs: formatting, vet, the race-enabled tests (real
# Postgres, real SQLite, real Caddy processes), and the allocation checks
# that the race detector would distort.
test:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 -run 'Allocs' ./caddymodule/keys ./caddymodule/auth
	$(GO) test -race -count=1 -timeout 30m ./...

# Micro-benchmarks of the request check, then real Caddy under load.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./caddymodule/...
	$(GO) run ./cmd/loadbench -keygate $(BIN)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin $(DEMO)
