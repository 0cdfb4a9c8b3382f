package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/store"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "keygate",
		Short: "Operator commands for keygate: migrate, accounts, members, bootstrap keys, secret rotation",
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
			cmd.PersistentFlags().BoolP("verbose", "v", false, "Show Caddy's own log lines (config file used, adapter warnings)")

			cmd.AddCommand(&cobra.Command{
				Use:   "migrate",
				Short: "Applies pending schema migrations (safe to run from several hosts at once)",
				Args:  cobra.NoArgs,
				// Migrating needs no secret: it must work before one is right.
				RunE: withStoreFor(storeUse{timeout: time.Minute}, func(ctx context.Context, op *operation, cmd *cobra.Command) error {
					if err := op.rt.store.Migrate(ctx); err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), "keygate store is up to date")
					return nil
				}),
			})
			cmd.AddCommand(accountCommand(), memberCommand(), keyCommand(), secretCommand())
		},
	})
}

func accountCommand() *cobra.Command {
	account := &cobra.Command{Use: "account", Short: "Creates and lists accounts"}
	account.AddCommand(&cobra.Command{
		Use:   "create <name>",
		Short: "Creates an account and prints its id",
		Args:  cobra.ExactArgs(1),
		RunE: withStore(func(ctx context.Context, op *operation, cmd *cobra.Command) error {
			a, err := op.rt.store.CreateAccount(ctx, cmd.Flags().Arg(0))
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
		RunE: withStore(func(ctx context.Context, op *operation, cmd *cobra.Command) error {
			accounts, err := op.rt.store.ListAccounts(ctx)
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
		RunE: withStore(func(ctx context.Context, op *operation, cmd *cobra.Command) error {
			role, _ := cmd.Flags().GetString("role")
			acct, err := op.account(ctx, cmd.Flags().Arg(0))
			if err != nil {
				return err
			}
			m, err := op.rt.store.SetMember(ctx, acct.ID, cmd.Flags().Arg(1), store.Role(role))
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
		RunE: withStore(func(ctx context.Context, op *operation, cmd *cobra.Command) error {
			acct, err := op.account(ctx, cmd.Flags().Arg(0))
			if err != nil {
				return err
			}
			ms, err := op.rt.store.ListMembers(ctx, acct.ID)
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
		RunE: withStore(func(ctx context.Context, op *operation, cmd *cobra.Command) error {
			acct, err := op.account(ctx, cmd.Flags().Arg(0))
			if err != nil {
				return err
			}
			return op.rt.store.RemoveMember(ctx, acct.ID, cmd.Flags().Arg(1))
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
		RunE: withStore(func(ctx context.Context, op *operation, cmd *cobra.Command) error {
			acct, err := op.account(ctx, cmd.Flags().Arg(0))
			if err != nil {
				return err
			}
			nk := auth.NewKey{AccountID: acct.ID, Name: cmd.Flags().Arg(1), Type: store.Standard}
			if cmd.Flags().Changed("server") {
				// An unset shell variable must not hand out an all-inbox key.
				server, _ := cmd.Flags().GetString("server")
				if server == "" {
					return errors.New("--server is empty: give the id of the inbox (server) the key is restricted to, or leave --server out for a standard key")
				}
				if err := store.ValidateServerID(server); err != nil {
					return err
				}
				if err := op.checkInbox(ctx, acct, server); err != nil {
					return err
				}
				nk.Type, nk.ServerID = store.Restricted, server
			}
			k, plain, err := op.rt.manager.CreateKey(ctx, nk, auth.Actor{UserID: operatorActor()})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "created %s key %s (%s); it is shown only this once:\n", k.Type, k.ID, k.Name)
			fmt.Fprintln(cmd.OutOrStdout(), plain.Secret())
			return nil
		}),
	}
	create.Flags().String("server", "", "Restrict the key to this server (inbox) id, which must be one of the account's inboxes")
	create.Flags().String("inbox-api", "", "Check --server against this inbox API (default: the keygate_admin handler's inbox_api in the config); off skips the check")
	key.AddCommand(create, &cobra.Command{
		Use:   "list <account-id>",
		Short: "Lists an account's keys (never the keys themselves)",
		Args:  cobra.ExactArgs(1),
		RunE: withStore(func(ctx context.Context, op *operation, cmd *cobra.Command) error {
			acct, err := op.account(ctx, cmd.Flags().Arg(0))
			if err != nil {
				return err
			}
			ks, err := store.AllKeys(ctx, op.rt.store, acct.ID)
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

func operatorActor() string {
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
