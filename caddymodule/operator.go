package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/keygate/keygate/caddymodule/inboxapi"
	"github.com/keygate/keygate/caddymodule/store"
)

// operation is what an operator command works with: the store as the
// configured app opens it, and the inbox API the dashboard uses.
type operation struct {
	rt *runtime
	// inboxes lists an account's inboxes; nil when the config names no
	// inbox API (keygate_admin's inbox_api) and --inbox-api gives none.
	inboxes *inboxapi.Client
	stderr  io.Writer
}

// withStore runs f with the store of the keygate app configured in
// --config, read as strictly as Caddy reads it: a typo that `caddy
// validate` refuses must not send an operator to another store. It says on
// standard error which store it opened, and nothing of Caddy's own
// logging unless --verbose.
func withStore(f func(ctx context.Context, op *operation, cmd *cobra.Command) error) func(*cobra.Command, []string) error {
	return withStoreFor(storeUse{timeout: time.Minute, checkSecrets: true}, f)
}

// storeUse says how a command uses the store.
type storeUse struct {
	timeout time.Duration // how long the command may take
	// checkSecrets refuses to run with secrets that did not make the
	// store's keys, as the app refuses to start.
	checkSecrets bool
}

// withStoreFor is withStore for a command with its own needs.
func withStoreFor(use storeUse, f func(ctx context.Context, op *operation, cmd *cobra.Command) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		cmd.SilenceUsage = true
		configFile, _ := cmd.Flags().GetString("config")
		adapter, _ := cmd.Flags().GetString("adapter")
		logger := zap.NewNop()
		if verbose, _ := cmd.Flags().GetBool("verbose"); verbose {
			logger = caddy.Log()
		}
		raw, err := loadConfig(configFile, adapter, logger)
		if err != nil {
			return err
		}
		cfg, err := readOperatorConfig(raw)
		if err != nil {
			return err
		}
		if f := cmd.Flags().Lookup("inbox-api"); f != nil && f.Changed {
			if cfg.inboxes, err = inboxAPIFlag(f.Value.String()); err != nil {
				return err
			}
		}
		app := cfg.app
		cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel() // cleans up the store module
		if err := app.Provision(cctx); err != nil {
			return err
		}
		defer app.Cleanup()
		if err := app.Validate(); err != nil {
			return err
		}
		rt, err := app.open(false)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "keygate store: %s\n", app.storeMod.Describe())
		ctx, stop := context.WithTimeout(context.Background(), use.timeout)
		defer stop()
		if app.Migrate == "auto" { // as the app does when it starts
			if err := rt.store.Migrate(ctx); err != nil {
				return err
			}
		}
		if use.checkSecrets {
			check, err := rt.checkSecrets(ctx)
			if err != nil {
				return err
			}
			for _, fp := range check.Unused {
				fmt.Fprintf(cmd.ErrOrStderr(), "keygate: previous secret %s made no key left in the store: remove it from previous_secrets\n", fp)
			}
		}
		return f(ctx, &operation{rt: rt, inboxes: cfg.inboxes, stderr: cmd.ErrOrStderr()}, cmd)
	}
}

// loadConfig reads and adapts a config file as `caddy run` does
// (caddycmd.LoadConfig), with Caddy's informational lines going to logger.
// No file, and no Caddyfile in the working directory, gives no config.
func loadConfig(file, adapterName string, logger *zap.Logger) ([]byte, error) {
	if adapterName != "" && file == "" {
		return nil, errors.New("cannot adapt config without config file (use --config)")
	}
	var raw []byte
	var err error
	switch file {
	case "":
		raw, err = os.ReadFile("Caddyfile")
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		file = "Caddyfile"
	case "-":
		raw, err = io.ReadAll(os.Stdin)
	default:
		raw, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	logger.Info("using config from file", zap.String("file", file))
	if adapterName == "" && isCaddyfile(file) {
		adapterName = "caddyfile"
	}
	if adapterName == "" {
		if err := json.Unmarshal(raw, new(any)); err != nil {
			return nil, fmt.Errorf("config is not valid JSON: %w; did you mean to use a config adapter (the --adapter flag)?", err)
		}
		return raw, nil
	}
	adapter := caddyconfig.GetAdapter(adapterName)
	if adapter == nil {
		return nil, fmt.Errorf("unrecognized config adapter: %s", adapterName)
	}
	adapted, warnings, err := adapter.Adapt(raw, map[string]any{"filename": file})
	if err != nil {
		return nil, fmt.Errorf("adapting config using %s: %w", adapterName, err)
	}
	logger.Info("adapted config to JSON", zap.String("adapter", adapterName))
	for _, w := range warnings {
		logger.Warn(w.Message, zap.String("file", w.File), zap.Int("line", w.Line))
	}
	return adapted, nil
}

// isCaddyfile is Caddy's rule for a config file that needs no --adapter:
// named Caddyfile* or *.caddyfile, and not *.json.
func isCaddyfile(file string) bool {
	base := strings.ToLower(filepath.Base(file))
	return filepath.Ext(base) != ".json" && (strings.HasPrefix(base, "caddyfile") || strings.HasSuffix(base, ".caddyfile"))
}

// operatorConfig is what the operator commands take from Caddy's config.
type operatorConfig struct {
	app     *App
	inboxes *inboxapi.Client
}

// readOperatorConfig decodes the config strictly, as Caddy does when it
// loads it: an unknown field is an error, never a default.
func readOperatorConfig(raw []byte) (operatorConfig, error) {
	cfg := operatorConfig{app: new(App)}
	if len(raw) == 0 {
		return cfg, nil
	}
	raw = caddy.RemoveMetaFields(raw)
	var c caddy.Config
	if err := caddy.StrictUnmarshalJSON(raw, &c); err != nil {
		return cfg, fmt.Errorf("reading config: %w", err)
	}
	if r := c.AppsRaw["keygate"]; r != nil {
		if err := caddy.StrictUnmarshalJSON(r, cfg.app); err != nil {
			return cfg, fmt.Errorf("reading config: keygate app: %w", err)
		}
	}
	var err error
	cfg.inboxes, err = dashboardInboxAPI(raw)
	return cfg, err
}

// dashboardAPI is the part of a keygate_admin handler's config that says
// how to reach the inbox API.
type dashboardAPI struct {
	InboxAPI     string            `json:"inbox_api"`
	InboxTimeout caddy.Duration    `json:"inbox_timeout"`
	Headers      map[string]string `json:"headers"`
}

// dashboardInboxAPI finds the inbox API the dashboard uses, so that the
// command line checks inboxes against the same source. It is nil when no
// keygate_admin handler names one, and an error when several disagree.
func dashboardInboxAPI(raw []byte) (*inboxapi.Client, error) {
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	var found []dashboardAPI
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "keygate_admin" {
				b, _ := json.Marshal(v)
				var d dashboardAPI
				if json.Unmarshal(b, &d) == nil && d.InboxAPI != "" {
					found = append(found, d)
				}
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(tree)
	if len(found) == 0 {
		return nil, nil
	}
	repl := caddy.NewReplacer()
	base := repl.ReplaceKnown(found[0].InboxAPI, "")
	for _, d := range found[1:] {
		if other := repl.ReplaceKnown(d.InboxAPI, ""); other != base {
			return nil, fmt.Errorf("the config's keygate_admin handlers name different inbox APIs (%s, %s); choose one with --inbox-api", redactURL(base), redactURL(other))
		}
	}
	d := found[0]
	header := func(field, def string) string {
		if h := d.Headers[field]; h != "" {
			return textproto.CanonicalMIMEHeaderKey(h)
		}
		return def
	}
	return &inboxapi.Client{
		BaseURL:       base,
		AccountHeader: header("account", DefaultAccountHeader),
		KeyTypeHeader: header("key_type", DefaultKeyTypeHeader),
		Timeout:       time.Duration(d.InboxTimeout),
	}, nil
}

// inboxAPIFlag reads --inbox-api: a URL, or "off" for no check.
func inboxAPIFlag(v string) (*inboxapi.Client, error) {
	if v == "off" {
		return nil, nil
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--inbox-api must be an http or https URL such as http://inbox-api.internal:8080, or off")
	}
	return &inboxapi.Client{BaseURL: v, AccountHeader: DefaultAccountHeader, KeyTypeHeader: DefaultKeyTypeHeader}, nil
}

func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return "(a URL that does not parse)"
}

// account returns the account an operator named by its id. Given an
// account's name instead, it says which id to use.
func (op *operation) account(ctx context.Context, arg string) (store.Account, error) {
	a, err := op.rt.store.GetAccount(ctx, arg)
	if !errors.Is(err, store.ErrNotFound) {
		return a, err
	}
	if accounts, err := op.rt.store.ListAccounts(ctx); err == nil {
		for _, a := range accounts {
			if a.Name == arg {
				return store.Account{}, fmt.Errorf("account %q not found: %q is the name of account %s; give its id", arg, arg, a.ID)
			}
		}
	}
	return store.Account{}, fmt.Errorf("account %q not found (keygate account list shows every account's id)", arg)
}

// checkInbox makes sure a server-restricted key is made for an inbox of
// its account, as the dashboard does, or says that it could not check.
func (op *operation) checkInbox(ctx context.Context, acct store.Account, server string) error {
	if op.inboxes == nil {
		fmt.Fprintf(op.stderr, "keygate: could not check that inbox %s belongs to account %s: no inbox API is configured (keygate_admin's inbox_api, or --inbox-api)\n", server, acct.ID)
		return nil
	}
	list, err := op.inboxes.Inboxes(ctx, acct.ID)
	if err != nil {
		return fmt.Errorf("checking inbox %s against account %s's inboxes: %w; no key was created (--inbox-api off skips the check)", server, acct.ID, err)
	}
	if slices.ContainsFunc(list, func(i inboxapi.Inbox) bool { return i.ID == server }) {
		return nil
	}
	ids := make([]string, 0, len(list))
	for _, i := range list {
		ids = append(ids, i.ID)
	}
	switch {
	case len(ids) == 0:
		return fmt.Errorf("inbox %q is not an inbox of account %s, which has none; no key was created", server, acct.ID)
	case len(ids) > 10:
		ids = append(ids[:10], "…")
	}
	return fmt.Errorf("inbox %q is not an inbox of account %s (its inboxes: %s); no key was created", server, acct.ID, strings.Join(ids, ", "))
}
