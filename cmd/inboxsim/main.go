// Command inboxsim serves an in-memory simulator of the inbox API that
// keygate guards (see package sim): the upstream of keygate's end-to-end
// tests and of the demo, and a way to try keygate without a real inbox
// service. It trusts keygate's X-Keygate-Account header, so put it behind
// keygate, on a loopback address.
//
//	inboxsim [-listen 127.0.0.1:8081] [-seed file.json] [-demo -demo-account ID] [-gzip]
//
// It prints "inboxsim listening on http://ADDR" once it accepts
// connections and stops cleanly on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/keygate/keygate/cmd/inboxsim/sim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "inboxsim:", err)
		os.Exit(2)
	}
}

// run serves until ctx is done.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inboxsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address to listen on")
	seedFile := fs.String("seed", "", "JSON seed file to load at start (optional)")
	demo := fs.Bool("demo", false, "seed a demo data set for the account given by -demo-account")
	demoAccount := fs.String("demo-account", "", "account id that -demo seeds")
	gz := fs.Bool("gzip", false, "gzip JSON responses when the client accepts gzip")
	delay := fs.Int("screenshot-delay", 1, "polls answered 202 before a screenshot is ready")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if *demo && *demoAccount == "" {
		return errors.New("-demo needs -demo-account <account id>")
	}
	if *delay == 0 {
		*delay = -1 // sim: negative means ready at once
	}

	s := sim.New(sim.Options{Gzip: *gz, ScreenshotDelay: *delay})
	if *seedFile != "" {
		f, err := os.Open(*seedFile)
		if err != nil {
			return err
		}
		err = s.LoadSeed(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", *seedFile, err)
		}
	}
	if *demo {
		s.SeedDemo(*demoAccount)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "inboxsim listening on http://%s\n", ln.Addr())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shut); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
