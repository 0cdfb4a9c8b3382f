package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"os/user"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/store"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "keygate",
		Short: "Operator commands for keygate: migrate, accounts, members, bootstrap keys",
		Long: `
Manages keygate's store as configured in the keygate global option of the
Caddyfile (or JSON config) given with --config; without one, the embedded
SQLite store in Caddy's data directory.

Keys are created and deleted by account administrators in the dashboard; the
key command here exists to bootstrap, and it is audited with the operator as
the actor. There is deliberately no command to delete a key.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.PersistentFlags().StringP("config", "c", "", "Configuration file (default: ./Caddyfile if present)")
			cmd.PersistentFlags().StringP("adapter", "a", "", "Name of config adapter")

			cmd.AddCommand(&cobra.Command{
				Use:   "migrate",
				Short: "Applies pending schema migrations (safe to run from several hosts at once)",
				Args:  cobra.NoArgs,
				RunE: withStore(func(ctx context.Context, rt *runtime, cmd *cobra.Command) error {
					if err := rt.store.Migrate(ctx); err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), "keygate store is up to date")
					return nil
				}),
			})
			cmd.AddCommand(accountCommand(), memberCommand(), keyCommand())
		},
	})
}

func accountCommand() *cobra.Command {
	account := &cobra.Command{Use: "account", Short: "Creates and lists accounts"}
	account.AddCommand(&cobra.Command{
		Use:   "create <name>",
		Short: "Creates an account and prints its id",
		Args:  cobra.ExactArgs(1),
		RunE: withStore(func(ctx context.Context, rt *runtime, cmd *cobra.Command) error {
			a, err := rt.store.CreateAccount(ctx, cmd.Flags().Arg(0))
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), a.ID)
			return nil
		}),
	}, &cobra.Command{
		Use:   "list",
		Short: "Lists accounts",
		Args:  cobra.NoArgs,
		RunE: withStore(func(ctx context.Context, rt *runtime, cmd *cobra.Command) error {
			accounts, err := rt.store.ListAccounts(ctx)
			if err != nil {
				return err
			}
			return table(cmd, []string{"ID", "NAME", "CREATED"}, len(accounts), func(i int) []any {
				return []any{accounts[i].ID, accounts[i].Name, accounts[i].CreatedAt.Format(time.RFC3339)}
			})
		}),
	})
	return account
}

func memberCommand() *cobra.Command {
	member := &cobra.Command{Use: "member", Short: "Adds, lists and removes the members of an account"}
	add := &cobra.Command{
		Use:   "add <account-id> <user-id>",
		Short: "Adds a user to an account, or changes their role",
		Long:  "The user id is what the authentication in front of the dashboard sets as {http.auth.user.id}, for example the basic_auth user name.",
		Args:  cobra.ExactArgs(2),
		RunE: withStore(func(ctx context.Context, rt *runtime, cmd *cobra.Command) error {
			role, _ := cmd.Flags().GetString("role")
			m, err := rt.store.SetMember(ctx, cmd.Flags().Arg(0), cmd.Flags().Arg(1), store.Role(role))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is now %s of %s\n", m.UserID, m.Role, m.AccountID)
			return nil
		}),
	}
	add.Flags().String("role", string(store.Member), "admin (an Account Administrator, who manages keys) or member")
	member.AddCommand(add, &cobra.Command{
		Use:   "list <account-id>",
		Short: "Lists an account's members",
		Args:  cobra.ExactArgs(1),
		RunE: withStore(func(ctx context.Context, rt *runtime, cmd *cobra.Command) error {
			ms, err := rt.store.ListMembers(ctx, cmd.Flags().Arg(0))
			if err != nil {
				return err
			}
			return table(cmd, []string{"USER", "ROLE", "SINCE"}, len(ms), func(i int) []any {
				return []any{ms[i].UserID, ms[i].Role, ms[i].CreatedAt.Format(time.RFC3339)}
			})
		}),
	}, &cobra.Command{
		Use:   "remove <account-id> <user-id>",
		Short: "Removes a user from an account",
		Args:  cobra.ExactArgs(2),
		RunE: withStore(func(ctx context.Context, rt *runtime, cmd *cobra.Command) error {
			return rt.store.RemoveMember(ctx, cmd.Flags().Arg(0), cmd.Flags().Arg(1))
		}),
	})
	return member
}

func keyCommand() *cobra.Command {
	key := &cobra.Command{Use: "key", Short: "Creates a first key for an account (bootstrap) and lists keys"}
	create := &cobra.Command{
		Use:   "create <account-id> <name>",
		Short: "Creates a key and prints it once",
		Long: `Creates a standard key, or with --server a server-restricted key, and prints
it once on standard output. The audit log records the operator as its
creator. Account administrators manage keys in the dashboard.`,
		Args: cobra.ExactArgs(2),
		RunE: withStore(func(ctx context.Context, rt *runtime, cmd *cobra.Command) error {
			server, _ := cmd.Flags().GetString("server")
			nk := auth.NewKey{AccountID: cmd.Flags().Arg(0), Name: cmd.Flags().Arg(1), Type: store.Standard}
			if server != "" {
				nk.Type, nk.ServerID = store.Restricted, server
			}
			k, plain, err := rt.manager.CreateKey(ctx, nk, auth.Actor{UserID: operator()})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "created %s key %s (%s); it is shown only this once:\n", k.Type, k.ID, k.Name)
			fmt.Fprintln(cmd.OutOrStdout(), plain.Secret())
			return nil
		}),
	}
	create.Flags().String("server", "", "Restrict the key to this server (inbox) id")
	key.AddCommand(create, &cobra.Command{
		Use:   "list <account-id>",
		Short: "Lists an account's keys (never the keys themselves)",
		Args:  cobra.ExactArgs(1),
		RunE: withStore(func(ctx context.Context, rt *runtime, cmd *cobra.Command) error {
			ks, err := rt.store.ListKeys(ctx, cmd.Flags().Arg(0))
			if err != nil {
				return err
			}
			return table(cmd, []string{"ID", "PREFIX", "TYPE", "SERVER", "NAME", "CREATED", "BY", "LAST USED"}, len(ks), func(i int) []any {
				k := ks[i]
				server, used := k.ServerID, "never"
				if server == "" {
					server = "-"
				}
				if k.LastUsed != nil {
					used = k.LastUsed.Format(time.RFC3339)
				}
				return []any{k.ID, k.Display, k.Type, server, strconv.Quote(k.Name), k.CreatedAt.Format(time.RFC3339), k.CreatedBy, used}
			})
		}),
	})
	return key
}

// withStore runs f with the runtime of the configured keygate app.
func withStore(f func(ctx context.Context, rt *runtime, cmd *cobra.Command) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		cmd.SilenceUsage = true
		configFile, _ := cmd.Flags().GetString("config")
		adapter, _ := cmd.Flags().GetString("adapter")
		app, err := appFromConfig(configFile, adapter)
		if err != nil {
			return err
		}
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
		ctx, stop := context.WithTimeout(context.Background(), time.Minute)
		defer stop()
		if app.Migrate == "auto" { // as the app does when it starts
			if err := rt.store.Migrate(ctx); err != nil {
				return err
			}
		}
		return f(ctx, rt, cmd)
	}
}

// appFromConfig reads the keygate app's settings from a config file. No
// file, or a config without the keygate app, gives the defaults.
func appFromConfig(configFile, adapter string) (*App, error) {
	app := new(App)
	raw, _, _, err := caddycmd.LoadConfig(configFile, adapter)
	if err != nil {
		return nil, fmt.Errorf("loading config: %w", err)
	}
	if len(raw) == 0 {
		return app, nil
	}
	var cfg struct {
		Apps struct {
			Keygate json.RawMessage `json:"keygate"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if cfg.Apps.Keygate != nil {
		if err := json.Unmarshal(cfg.Apps.Keygate, app); err != nil {
			return nil, fmt.Errorf("reading keygate app config: %w", err)
		}
	}
	return app, nil
}

func operator() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "operator:" + u.Username
	}
	return "operator"
}

func table(cmd *cobra.Command, header []string, n int, row func(int) []any) error {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	for i, h := range header {
		fmt.Fprint(w, h, sep(i, len(header)))
	}
	for i := range n {
		r := row(i)
		for j, v := range r {
			fmt.Fprint(w, v, sep(j, len(r)))
		}
	}
	return w.Flush()
}

func sep(i, n int) string {
	if i == n-1 {
		return "\n"
	}
	return "\t"
}
