package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/store"
)

func secretCommand() *cobra.Command {
	secret := &cobra.Command{
		Use:   "secret",
		Short: "Shows which secrets made the store's keys, and re-keys them under the current one",
	}
	secret.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Shows the configured secrets, the store's, its keys per secret and the fleet's instances, by fingerprint",
		Args:  cobra.NoArgs,
		RunE:  withStoreFor(storeUse{timeout: 10 * time.Minute}, secretStatus),
	})
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Re-keys every key made with a previous secret under the current one, online, in batches",
		Long: `
Re-keys every key made with one of previous_secrets under secret: each sealed
copy is opened with the secret that made it, and the key's digest and sealed
copy are made again with the current secret, in transactions of --batch keys,
while instances keep serving (they find a key under any configured secret).

In a fleet it first makes sure that every live instance has the current
secret; then it makes that secret the store's, so that new keys are made
with it. Stopped (Ctrl-C) or interrupted, it resumes where it was when run
again. It ends by saying whether the previous secrets can be removed.
`,
		Args: cobra.NoArgs,
	}
	batch := rotate.Flags().Int("batch", auth.DefaultRotateBatch, "Keys re-keyed per transaction")
	rotate.RunE = withStoreFor(storeUse{timeout: 7 * 24 * time.Hour, checkSecrets: true}, func(ctx context.Context, op *operation, cmd *cobra.Command) error {
		if *batch <= 0 || *batch > 10_000 {
			return fmt.Errorf("--batch must be between 1 and 10000, not %d", *batch)
		}
		ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		return secretRotate(ctx, op, cmd.OutOrStdout(), *batch)
	})
	secret.AddCommand(rotate)
	return secret
}

func secretRotate(ctx context.Context, op *operation, out io.Writer, batch int) error {
	kr := op.rt.manager.Keyring
	r := auth.Rotation{Store: op.rt.store, Keyring: kr, Actor: operatorActor(), Batch: batch}
	if fs, ok := op.rt.store.(store.FleetStore); ok {
		r.Instances = func(ctx context.Context) ([]store.Instance, error) {
			return fs.ListInstances(ctx, time.Now().Add(-3*Heartbeat))
		}
	}
	start, last := time.Now(), time.Time{}
	report := func(p auth.Progress, final bool) {
		if !final && time.Since(last) < time.Second {
			return
		}
		last = time.Now()
		rate := float64(p.Done) / max(time.Since(start).Seconds(), 0.001)
		pct := 100.0
		if p.Total > 0 {
			pct = 100 * float64(p.Done+p.Failed) / float64(p.Total)
		}
		fmt.Fprintf(op.stderr, "re-keyed %d of %d keys (%.1f%%), %.0f keys/s\n", p.Done, p.Total, pct, rate)
	}
	r.Progress = func(p auth.Progress) { report(p, false) }
	res, err := auth.Rotate(ctx, r)
	if res.Current != "" {
		report(res.Progress, true)
	}
	for _, k := range res.Broken {
		fmt.Fprintf(op.stderr, "key %s of account %s: its sealed copy opens under no configured secret (the store says secret %s made it); left as it was\n",
			k.ID, k.AccountID, fingerprintOrUnrecorded(k.Secret))
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("rotation stopped after %d keys; run `keygate secret rotate` again to go on", res.Done)
	case err != nil:
		return err
	case len(res.Removable) > 0:
		fmt.Fprintf(out, "every key is made with secret %s. The previous secrets (%s) are no longer needed: remove previous_secrets from every instance's configuration, then restart or reload each one.\n",
			res.Current, strings.Join(res.Removable, ", "))
	case len(res.Broken) > 0:
		return fmt.Errorf("%d keys could not be re-keyed (listed above; the others were): keep previous_secrets until they are deleted, or their secret is found and given in previous_secrets", len(res.Broken))
	default:
		// Keys made with a previous secret meanwhile, by an instance that
		// read the store's current secret just before it changed.
		return errors.New("keys made with a previous secret remain: run `keygate secret rotate` again")
	}
	return nil
}

func secretStatus(ctx context.Context, op *operation, cmd *cobra.Command) error {
	out := cmd.OutOrStdout()
	kr := op.rt.manager.Keyring
	fps := kr.Fingerprints()
	fmt.Fprintf(out, "configured: secret %s", fps[0])
	if len(fps) > 1 {
		fmt.Fprintf(out, ", previous_secrets %s", strings.Join(fps[1:], ", "))
	}
	fmt.Fprintln(out)
	secrets, err := op.rt.store.Secrets(ctx)
	if err != nil {
		return err
	}
	counts, err := op.rt.store.CountKeys(ctx)
	if err != nil {
		return err
	}
	for _, s := range secrets {
		role := "previous"
		if s.Current {
			role = "current"
		}
		has := "configured"
		if _, ok := kr.Secret(s.Fingerprint); !ok {
			has = "NOT configured"
		}
		fmt.Fprintf(out, "store: %s secret %s (%s here): %d keys\n", role, fingerprintOrUnrecorded(s.Fingerprint), has, counts[s.Fingerprint])
	}
	fs, ok := op.rt.store.(store.FleetStore)
	if !ok {
		return nil
	}
	live, err := fs.ListInstances(ctx, time.Now().Add(-3*Heartbeat))
	if err != nil {
		return err
	}
	return table(cmd, []string{"INSTANCE", "SECRETS (CURRENT FIRST)", "HAS THIS CURRENT"}, len(live), func(i int) []any {
		in := live[i]
		return []any{in.Address, strings.Join(in.Secrets, ","), yesNo(slices.Contains(in.Secrets, fps[0]))}
	})
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
