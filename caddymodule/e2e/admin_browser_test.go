package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

var keyRE = regexp.MustCompile(`^kg_[0-9A-Za-z]{36}$`)

// screenshotDir is where the browser test saves its screenshots:
// $KEYGATE_SCREENSHOTS, or testdata/screenshots (git-ignored).
func screenshotDir(t testing.TB) string {
	dir := os.Getenv("KEYGATE_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join("testdata", "screenshots")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		t.Fatal(err)
	}
	return abs
}

// newBrowser starts headless Chromium signed in to the dashboard as user
// (basic auth on every request the page makes) and returns its context.
func newBrowser(t *testing.T, d *dashboard, user string) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the browser test needs Chromium at %s (Debian's package: apt-get install chromium; .ci/run installs it): %v", chromiumPath, err)
	}
	var out syncBuffer
	alloc, cancel := chromedp.NewExecAllocator(t.Context(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox, // tests run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
		chromedp.CombinedOutput(&out),
	)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium: %v\n%s", err, out.String())
	}
	origin := strings.TrimSuffix(d.site, "/")
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+d.pass[user]))
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}})
		return err
	})); err != nil {
		t.Fatalf("signing in: %v", err)
	}
	for _, p := range []string{"clipboard-read", "clipboard-write"} {
		if _, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: p},
			Setting:    browser.PermissionSettingGranted,
			Origin:     origin,
		}); err != nil {
			t.Fatalf("granting %s: %v", p, err)
		}
	}
	return ctx
}

// step runs browser actions, failing the test with what was being done.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(sctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// until waits for a JavaScript condition to hold.
func until(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(10*time.Second))(ctx, t)
		return err
	})
}

func js[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	return value(t, ctx, expr, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png := value(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// TestAdminBrowser is the product document's dashboard, in Chromium: an
// Account Administrator signs in, creates a standard and a
// server-restricted key, reveals and copies a key, uses it through the
// sidecar, deletes it by typing its name (from the keyboard), and the
// sidecar refuses it on the next request. It saves screenshots of the key
// list and of the delete dialog. Then, with a second account, the
// switcher works without its hidden Switch button, and on a phone (390 px)
// the key list, its menu and dialogs, the form and the audit log fit the
// screen's width.
func TestAdminBrowser(t *testing.T) {
	t.Parallel()
	d := newDashboard(t, "/")
	ctx := newBrowser(t, d, "alice")
	dir := screenshotDir(t)
	t.Logf("screenshots go to %s", dir)
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	step(t, ctx, "opening the dashboard", chromedp.Navigate(d.base), chromedp.WaitVisible(css("h1")))
	if h := value(t, ctx, "heading", chromedp.Text(css("h1"))); h != "API Keys" {
		t.Fatalf("heading %q", h)
	}

	// Create standard key: a name, then the key is shown.
	step(t, ctx, "create a standard key",
		chromedp.Click(css(`a[href*="type=standard"]`)),
		chromedp.WaitVisible(css("#name")),
		chromedp.SendKeys(css("#name"), "ci pipeline"),
	)
	screenshot(t, ctx, dir, "create-form.png")
	step(t, ctx, "click Create",
		chromedp.Click(css(`form[action="create"] button[type="submit"]`)),
		chromedp.WaitVisible(css(".success-head")),
	)
	if typ := js[string](t, ctx, `document.getElementById('key-value').type`); typ != "password" {
		t.Fatalf("the new key is not masked before Reveal key (%s)", typ)
	}
	screenshot(t, ctx, dir, "key-created.png")
	step(t, ctx, "Reveal key", chromedp.Click(css(`[data-reveal-toggle="key-value"]`)))
	if typ := js[string](t, ctx, `document.getElementById('key-value').type`); typ != "text" {
		t.Fatalf("Reveal key did not show the key (%s)", typ)
	}
	standard := value(t, ctx, "the key", chromedp.Value(css("#key-value")))
	if !keyRE.MatchString(standard) {
		t.Fatalf("the page shows %q, not a key", standard)
	}
	rememberKey(standard)

	// Copy: the clipboard holds the key (read back through the page, with
	// the clipboard permissions granted to the dashboard's origin).
	step(t, ctx, "Copy",
		chromedp.Click(css(`[data-copy="key-value"]`)),
		until(`document.querySelector('[data-copy-status="key-value"]').textContent.includes('Copied')`),
	)
	if got := js[string](t, ctx, `navigator.clipboard.readText()`); got != standard {
		t.Fatalf("the clipboard holds %q, want the key", got)
	}

	// The key works through the sidecar at once.
	if s := d.call(standard, "/api/servers"); s != http.StatusOK {
		t.Fatalf("the new standard key through the sidecar: %d", s)
	}

	// Create server-restricted key: a name and the inbox from the list.
	step(t, ctx, "create a server-restricted key",
		chromedp.Click(css(`a.btn-primary[href^="./"]`)),
		chromedp.WaitVisible(css(`a[href*="type=restricted"]`)),
		chromedp.Click(css(`a[href*="type=restricted"]`)),
		chromedp.WaitVisible(css("#server")),
	)
	options := js[[]string](t, ctx, `Array.from(document.querySelectorAll('#server option')).map(o => o.textContent)`)
	if strings.Join(options, "|") != "Select an inbox…|Staging (stag1234)|Production (prod5678)" {
		t.Fatalf("the inbox dropdown offers %q", options)
	}
	step(t, ctx, "fill the restricted key's form",
		chromedp.SendKeys(css("#name"), "staging only"),
		chromedp.SetValue(css("#server"), inboxStaging),
		chromedp.Click(css(`form[action="create"] button[type="submit"]`)),
		chromedp.WaitVisible(css(".success-head")),
	)
	restricted := value(t, ctx, "the restricted key", chromedp.Value(css("#key-value")))
	if !keyRE.MatchString(restricted) || restricted == standard {
		t.Fatalf("the page shows %q", restricted)
	}
	rememberKey(restricted)
	if s := d.call(restricted, "/api/messages?server="+inboxStaging); s != http.StatusOK {
		t.Fatalf("the restricted key on its inbox: %d", s)
	}
	if s := d.call(restricted, "/api/messages?server="+inboxProduction); s != http.StatusForbidden {
		t.Fatalf("the restricted key on another inbox: %d", s)
	}

	// The list: name, type, inbox by name, created by whom, last used.
	step(t, ctx, "back to the list", chromedp.Click(css(`a.btn-primary[href^="./"]`)), chromedp.WaitVisible(css("table.keys-table")))
	rows := js[[]string](t, ctx, `Array.from(document.querySelectorAll('table.keys-table tbody tr')).map(r => r.innerText.replace(/\s+/g, ' ').trim())`)
	if len(rows) != 2 || !strings.Contains(rows[0], "ci pipeline") || !strings.Contains(rows[0], "Standard") || !strings.Contains(rows[0], "All inboxes") ||
		!strings.Contains(rows[1], "staging only") || !strings.Contains(rows[1], "Server-restricted") || !strings.Contains(rows[1], "Staging") ||
		!strings.Contains(rows[0], "by alice") {
		t.Fatalf("the list shows:\n%s", strings.Join(rows, "\n"))
	}
	screenshot(t, ctx, dir, "key-list.png")

	// The key's page, from its name in the list: what used the key, drawn
	// without script or inline style. The sidecar writes what it gathered
	// every usage_interval: reload until the request above is counted.
	row := `tr[data-key-name="ci pipeline"] `
	step(t, ctx, "the key's page", chromedp.Click(css(row+`a.key-name`)), chromedp.WaitVisible(css("svg.chart")))
	evidence := `document.querySelector('[data-evidence]').textContent.trim()`
	waitFor(t, "the key's page to count its use", 30*time.Second, func() bool {
		step(t, ctx, "reloading the key's page", chromedp.Reload(), chromedp.WaitVisible(css("svg.chart")))
		return strings.HasPrefix(js[string](t, ctx, evidence), "Used")
	}, func() string { return js[string](t, ctx, evidence) })
	if got := js[string](t, ctx, evidence); !strings.HasPrefix(got, "Used once in the last 7 days, last ") || !strings.HasSuffix(got, " from 127.0.0.1 by Go-http-client 1.1.") {
		t.Fatalf("the key's page says %q", got)
	}
	keyPage := value(t, ctx, "the key's page", chromedp.Text(css("main")))
	for _, want := range []string{"ci pipeline", "Requests per hour", "Last 7 days: 1 allowed, 0 refused", "127.0.0.1", "Go-http-client 1.1", "Created"} {
		if !strings.Contains(keyPage, want) {
			t.Fatalf("the key's page lacks %q:\n%s", want, keyPage)
		}
	}
	if bars := js[int](t, ctx, `document.querySelectorAll('svg.chart rect.bar-allowed').length`); bars != 1 {
		t.Fatalf("the chart draws %d bars, want 1", bars)
	}
	if fill := js[string](t, ctx, `getComputedStyle(document.querySelector('svg.chart rect.bar-allowed')).fill`); fill == "" || fill == "rgb(0, 0, 0)" {
		t.Fatalf("the stylesheet does not colour the chart (fill %q)", fill)
	}
	screenshot(t, ctx, dir, "key-page.png")
	step(t, ctx, "the chart over 30 days", chromedp.Click(css(`.segmented a[href*="days=30"]`)),
		chromedp.WaitVisible(css(`svg.chart[data-chart="30"]`)), until(`document.querySelector('.segmented a[aria-current="page"]').textContent === '30 days'`))
	step(t, ctx, "back to the list", chromedp.Click(css(`.crumbs a`)), chromedp.WaitVisible(css("table.keys-table")))

	// Reveal key (the eye icon) shows the value again, in a dialog.
	step(t, ctx, "the eye icon",
		chromedp.Click(css(row+`form[data-reveal] button`)),
		chromedp.WaitVisible(css("#reveal-dialog")),
		until(`document.getElementById('reveal-value').value !== ''`),
	)
	if got := value(t, ctx, "the revealed key", chromedp.Value(css("#reveal-value"))); got != standard {
		t.Fatalf("Reveal key shows %q, want the key", got)
	}
	screenshot(t, ctx, dir, "reveal-dialog.png")
	// Closing the dialog takes the key out of the page.
	step(t, ctx, "closing the reveal dialog", chromedp.Click(css(`#reveal-dialog [data-close]`)), chromedp.WaitNotVisible(css("#reveal-dialog")),
		until(`document.getElementById('reveal-value').value === ''`))

	// Delete, from the keyboard: the Actions menu, Delete, the dialog,
	// type the name, Enter.
	step(t, ctx, "open the Actions menu from the keyboard",
		chromedp.Focus(css(row+`details.menu summary`)),
		chromedp.KeyEvent(kb.Enter),
		chromedp.WaitVisible(css(row+`a[data-delete]`)),
		until(`document.activeElement.textContent.trim() === 'Delete'`), // the open menu focuses Delete
	)
	step(t, ctx, "choose Delete",
		chromedp.KeyEvent(kb.Enter),
		chromedp.WaitVisible(css("#delete-dialog")),
	)
	if !js[bool](t, ctx, `document.querySelector('[data-delete-submit]').disabled`) {
		t.Fatal("Delete is enabled before the name is typed")
	}
	step(t, ctx, "the dialog focuses the name field", until(`document.activeElement.id === 'delete-confirm'`))
	step(t, ctx, "type a wrong name", chromedp.KeyEvent("ci pipelin"))
	if !js[bool](t, ctx, `document.querySelector('[data-delete-submit]').disabled`) {
		t.Fatal("Delete is enabled with a wrong name")
	}
	step(t, ctx, "type the name", chromedp.KeyEvent("e"), until(`!document.querySelector('[data-delete-submit]').disabled`))
	step(t, ctx, "the dialog reads the key's use", until(`document.querySelector('#delete-dialog [data-evidence]').textContent.startsWith('Used once in the last 7 days')`))
	dialogText := value(t, ctx, "the dialog's text", chromedp.Text(css("#delete-dialog")))
	for _, s := range []string{"This action cannot be undone.", "A deleted key cannot be restored.", "Type ci pipeline to confirm", "from 127.0.0.1 by Go-http-client 1.1."} {
		if !strings.Contains(dialogText, s) {
			t.Fatalf("the dialog does not say %q:\n%s", s, dialogText)
		}
	}
	screenshot(t, ctx, dir, "delete-dialog.png")
	step(t, ctx, "confirm with Enter",
		chromedp.KeyEvent(kb.Enter),
		chromedp.WaitVisible(css(".success-head")),
	)
	done := value(t, ctx, "the result", chromedp.Text(css("main")))
	if !strings.Contains(done, "API key deleted") || !strings.Contains(done, "This action cannot be undone.") {
		t.Fatalf("after Delete the page says:\n%s", done)
	}

	// The sidecar refuses the deleted key on the next request; the other works.
	if s := d.call(standard, "/api/servers"); s != http.StatusUnauthorized {
		t.Fatalf("the deleted key through the sidecar: %d, want 401", s)
	}
	if s := d.call(restricted, "/api/messages?server="+inboxStaging); s != http.StatusOK {
		t.Fatalf("the remaining key: %d", s)
	}

	// The audit log: each action once, never the key.
	step(t, ctx, "the audit log", chromedp.Click(css(`a.btn-primary[href^="./"]`)), chromedp.WaitVisible(css("table.keys-table")),
		chromedp.Click(css(`nav a[href^="audit"]`)), chromedp.WaitVisible(css("table.audit-table")))
	actions := js[[]string](t, ctx, `Array.from(document.querySelectorAll('table.audit-table tbody tr')).map(r => r.cells[1].innerText + ' ' + r.cells[2].innerText.split('\n')[0] + ' ' + r.cells[3].innerText)`)
	std, rst := standard[:8]+"…", restricted[:8]+"…"
	if strings.Join(actions, "|") != "Deleted ci pipeline "+std+" alice|Revealed ci pipeline "+std+" alice|Created staging only "+rst+" alice|Created ci pipeline "+std+" alice" {
		t.Fatalf("the audit log shows:\n%s", strings.Join(actions, "\n"))
	}
	page := value(t, ctx, "the audit page", chromedp.OuterHTML(css("html")))
	if strings.Contains(page, standard[8:]) || strings.Contains(page, restricted[8:]) {
		t.Fatal("the audit page shows a key")
	}
	screenshot(t, ctx, dir, "audit-log.png")

	// With a second account the switcher appears; the script hides its
	// Switch button (picking an account switches at once), and hidden
	// means not displayed, whatever the button's own display.
	d.n.cli("member", "add", d.other, "alice", "--role", "admin")
	d.n.key(d.acct, "deploy bot with a rather long name", "")
	step(t, ctx, "the list with two accounts", chromedp.Navigate(d.base+"?account="+d.acct), chromedp.WaitVisible(css("#account-switch")),
		until(`document.querySelector('[data-autosubmit-button]').hidden`))
	if shown := js[string](t, ctx, switchShown); shown != "" {
		t.Fatalf("the hidden Switch button is displayed: %s", shown)
	}
	step(t, ctx, "picking the other account",
		chromedp.Evaluate[chromedp.Void](`(s => { s.value = `+jsString(d.other)+`; s.dispatchEvent(new Event('change')); })(document.getElementById('account-switch'))`),
		chromedp.WaitVisible(css(`nav a[href="audit?account=`+d.other+`"]`)), chromedp.WaitVisible(css("table.keys-table")))
	if got := js[string](t, ctx, `document.getElementById('account-switch').value`); got != d.other {
		t.Fatalf("after picking other the switcher shows %q", got)
	}
	screenshot(t, ctx, dir, "account-switcher.png")

	// A phone, 390 px wide: nothing overflows sideways, each key is a card
	// showing every column with its label, and the menu, the dialogs and
	// the form fit.
	step(t, ctx, "a phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Navigate(d.base+"?account="+d.acct), chromedp.WaitVisible(css("table.keys-table")))
	noOverflow := func(what string) {
		t.Helper()
		if got := js[string](t, ctx, overflow); got != "" {
			t.Fatalf("%s at 390 px: %s", what, got)
		}
	}
	noOverflow("the key list")
	if bad := js[[]string](t, ctx, keyCardsShown); len(bad) > 0 || js[int](t, ctx, `document.querySelectorAll('table.keys-table tbody tr[data-key-id]').length`) != 2 {
		t.Fatalf("at 390 px the key list hides:\n%s", strings.Join(bad, "\n"))
	}
	step(t, ctx, "back to the top", chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
	screenshot(t, ctx, dir, "key-list-390px.png")

	row = `tr[data-key-name="staging only"] `
	step(t, ctx, "the Actions menu on a phone", chromedp.Click(css(row+`details.menu summary`)), chromedp.WaitVisible(css(row+`a[data-delete]`)))
	noOverflow("the open Actions menu")
	if got := js[string](t, ctx, fits(row+`.menu-list`)); got != "" {
		t.Fatalf("the Actions menu at 390 px: %s", got)
	}
	step(t, ctx, "the delete dialog on a phone", chromedp.Click(css(row+`a[data-delete]`)), chromedp.WaitVisible(css("#delete-dialog")))
	if got := js[string](t, ctx, fits("#delete-dialog")+` || `+fits(`#delete-dialog [data-delete-submit]`)); got != "" {
		t.Fatalf("the delete dialog at 390 px: %s", got)
	}
	step(t, ctx, "the restricted key's evidence", until(`!document.querySelector('#delete-dialog [data-evidence]').textContent.startsWith('Reading')`))
	if got := js[string](t, ctx, `document.querySelector('#delete-dialog [data-evidence]').textContent`); !strings.HasPrefix(got, "Used 3 times in the last 7 days (1 refused by its scope), last ") {
		t.Fatalf("the delete dialog of the restricted key says %q", got)
	}
	screenshot(t, ctx, dir, "delete-dialog-390px.png")
	step(t, ctx, "closing the delete dialog", chromedp.Click(css(`#delete-dialog [data-close]`)), chromedp.WaitNotVisible(css("#delete-dialog")))
	step(t, ctx, "the reveal dialog on a phone", chromedp.Click(css(row+`form[data-reveal] button`)), chromedp.WaitVisible(css("#reveal-dialog")),
		until(`document.getElementById('reveal-value').value !== ''`))
	if got := js[string](t, ctx, fits("#reveal-dialog")+` || `+fits(`#reveal-dialog [data-copy]`)+` || `+fits(`#reveal-dialog [data-close]`)); got != "" {
		t.Fatalf("the reveal dialog at 390 px: %s", got)
	}
	// The key's field takes the dialog's width, the buttons go below it.
	if w := js[float64](t, ctx, `document.getElementById('reveal-value').getBoundingClientRect().width / document.querySelector('#reveal-dialog .secret-field').getBoundingClientRect().width`); w < 0.99 {
		t.Fatalf("the key's field takes %.0f%% of the dialog's width at 390 px", w*100)
	}
	screenshot(t, ctx, dir, "reveal-dialog-390px.png")
	step(t, ctx, "closing the reveal dialog", chromedp.Click(css(`#reveal-dialog [data-close]`)), chromedp.WaitNotVisible(css("#reveal-dialog")))

	step(t, ctx, "the restricted key's form on a phone", chromedp.Click(css(`a[href*="type=restricted"]`)), chromedp.WaitVisible(css("#server")))
	noOverflow("the form")
	if got := js[string](t, ctx, fits("#name")+` || `+fits("#server")+` || `+fits(`form[action="create"] button[type="submit"]`)); got != "" {
		t.Fatalf("the form at 390 px: %s", got)
	}
	screenshot(t, ctx, dir, "create-form-390px.png")
	step(t, ctx, "the audit log on a phone", chromedp.Navigate(d.base+"audit?account="+d.acct), chromedp.WaitVisible(css("table.audit-table")))
	noOverflow("the audit log")
	if got := js[string](t, ctx, auditCardsShown); got != "" {
		t.Fatalf("the audit log at 390 px: %s", got)
	}
	screenshot(t, ctx, dir, "audit-log-390px.png")

	step(t, ctx, "a key's page on a phone", chromedp.Navigate(d.base+"?account="+d.acct), chromedp.WaitVisible(css("table.keys-table")),
		chromedp.Click(css(row+`a.key-name`)), chromedp.WaitVisible(css("svg.chart")))
	noOverflow("a key's page")
	if got := js[string](t, ctx, fits(".chart-scroll")+` || `+fits("#addresses-title")+` || `+fits(".page-actions .btn-danger-outline")); got != "" {
		t.Fatalf("a key's page at 390 px: %s", got)
	}
	screenshot(t, ctx, dir, "key-page-390px.png")
}

// jsString quotes s for JavaScript.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// switchShown is "" when the switcher's Switch button takes no room on
// the page, else what shows it.
const switchShown = `(b => {
  const r = b.getBoundingClientRect();
  if (getComputedStyle(b).display !== 'none') return 'display: ' + getComputedStyle(b).display;
  if (b.offsetParent !== null || r.width > 0 || r.height > 0) return 'a ' + r.width + '×' + r.height + ' box';
  return '';
})(document.querySelector('[data-autosubmit-button]'))`

// overflow is "" when the page does not scroll sideways, else the
// widths and the elements that stick out.
const overflow = `(() => {
  const w = window.innerWidth, sw = document.documentElement.scrollWidth;
  if (w === 390 && sw <= w) return '';
  const out = Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > w + 0.5)
    .slice(0, 8).map(e => e.tagName.toLowerCase() + (e.className && e.className.baseVal === undefined ? '.' + e.className.split(' ').join('.') : '') + ' right=' + Math.round(e.getBoundingClientRect().right));
  return 'innerWidth ' + w + ', scrollWidth ' + sw + ': ' + out.join(', ');
})()`

// fits is a JavaScript expression: "" when the element is displayed
// inside the viewport's width, else why not.
func fits(sel string) string {
	return `((sel, e) => {
  if (!e) return sel + ' is missing';
  const r = e.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) return sel + ' is not displayed';
  if (r.left < 0 || r.right > window.innerWidth + 0.5) return sel + ' spans ' + Math.round(r.left) + '–' + Math.round(r.right) + ' of ' + window.innerWidth;
  return '';
})(` + jsString(sel) + `, document.querySelector(` + jsString(sel) + `))`
}

// auditCardsShown is "" when every cell of the audit log is inside the
// viewport's width and its card does not scroll sideways.
const auditCardsShown = `(() => {
  const card = document.querySelector('table.audit-table').closest('.table-card');
  if (card.scrollWidth > card.clientWidth) return 'the table scrolls sideways: ' + card.scrollWidth + ' in ' + card.clientWidth;
  const out = Array.from(document.querySelectorAll('table.audit-table tbody td')).filter(td => td.getBoundingClientRect().right > window.innerWidth + 0.5);
  return out.length ? out.length + ' cells stick out, the first ' + out[0].innerText : '';
})()`

// keyCardsShown lists what of each key row is not shown: each column's
// content must be displayed, inside the viewport's width and not covered,
// and each column but the name and the actions must carry its label.
const keyCardsShown = `(() => {
  const w = window.innerWidth, bad = [];
  const heads = Array.from(document.querySelectorAll('table.keys-table thead th')).map(th => th.textContent.trim());
  for (const tr of document.querySelectorAll('table.keys-table tbody tr[data-key-id]')) {
    const key = tr.dataset.keyName;
    const parts = [
      ['name', tr.querySelector('.key-name')], ['prefix', tr.querySelector('.key-prefix')],
      ['type', tr.cells[1].querySelector('.badge')], ['inbox', tr.cells[2]],
      ['created', tr.cells[3].querySelector('time')], ['created by', tr.cells[3].querySelector('.small')],
      ['last used', tr.cells[4]],
      ['reveal', tr.querySelector('form[data-reveal] button')], ['actions', tr.querySelector('details.menu summary')],
    ];
    for (const [what, e] of parts) {
      if (!e) { bad.push(key + ': no ' + what); continue; }
      e.scrollIntoView({block: 'center', inline: 'nearest'});
      const r = e.getBoundingClientRect();
      if (r.width === 0 || r.height === 0 || getComputedStyle(e).visibility !== 'visible') { bad.push(key + ': ' + what + ' is not displayed'); continue; }
      if (r.left < 0 || r.right > w + 0.5) { bad.push(key + ': ' + what + ' spans ' + Math.round(r.left) + '–' + Math.round(r.right)); continue; }
      const top = document.elementFromPoint(r.left + Math.min(r.width / 2, 8), r.top + r.height / 2);
      if (!top || !(top === e || e.contains(top) || top.contains(e))) bad.push(key + ': ' + what + ' is covered by ' + (top ? top.tagName : 'nothing'));
    }
    for (const i of [1, 2, 3, 4]) {
      const label = getComputedStyle(tr.cells[i], '::before').content.replace(/^"|"$/g, '');
      if (label.toLowerCase() !== heads[i].toLowerCase()) bad.push(key + ': the ' + heads[i] + ' cell is labelled ' + JSON.stringify(label));
    }
  }
  return bad;
})()`
