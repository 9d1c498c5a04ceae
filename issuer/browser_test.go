package issuer

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

const chromiumPath = "/usr/bin/chromium"

// TestLoginPageInChromium drives the real login and consent pages in
// headless Chromium: it fills the form, allows the request, and the
// browser lands on the client's loopback redirect URI with a code. The
// login page's screenshot goes to $MESHAUTH_SCREENSHOT if set (the consent
// page's beside it), else into the test's temporary directory.
func TestLoginPageInChromium(t *testing.T) {
	ctx := newChromium(t)
	e := newEnv(t)
	e.addUser()
	responses, redirect := clientApp(t)
	e.register(ClientMetadata{ClientID: "orders-web", ClientName: "Orders Web", TokenEndpointAuthMethod: "none",
		GrantTypes: []string{GrantTypeAuthorizationCode, GrantTypeRefreshToken}, RedirectURIs: []string{redirect},
		Scope: "orders.read orders.write", AllowedAudiences: []string{"orders"}})

	q := url.Values{
		"response_type": {"code"}, "client_id": {"orders-web"}, "redirect_uri": {redirect}, "state": {"browser-state"},
		"scope": {"orders.read orders.write"}, "audience": {"orders"},
		"code_challenge": {testChallenge}, "code_challenge_method": {"S256"},
	}
	if err := chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/authorize?"+q.Encode()),
		chromedp.WaitVisible(chromedp.ID("username")),
	); err != nil {
		t.Fatalf("open the login page: %v", err)
	}
	shot := screenshotPath(t)
	screenshot(t, ctx, shot)

	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("username"), testUser),
		chromedp.SendKeys(chromedp.ID("password"), testPassword),
		chromedp.Click(chromedp.CSS(`button[value="login"]`)),
		chromedp.WaitVisible(chromedp.CSS(`button[value="allow"]`)),
	); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "Orders Web") || !strings.Contains(text, "orders.write") {
		t.Errorf("the consent page does not say who asks for what:\n%s", text)
	}
	screenshot(t, ctx, strings.TrimSuffix(shot, ".png")+"-consent.png")

	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`button[value="allow"]`)),
		chromedp.WaitVisible(chromedp.ID("done")),
	); err != nil {
		t.Fatalf("allow: %v", err)
	}
	resp := awaitResponse(t, ctx, responses)
	if resp.Get("state") != "browser-state" || resp.Get("iss") != e.url || resp.Get("code") == "" {
		t.Fatalf("authorization response %v", resp)
	}
	form := url.Values{"grant_type": {GrantTypeAuthorizationCode}, "code": {resp.Get("code")}, "client_id": {"orders-web"},
		"redirect_uri": {redirect}, "code_verifier": {testVerifier}}
	if status, _, m := e.tokenRequest(form, ""); status != http.StatusOK || m["refresh_token"] == nil {
		t.Errorf("redeeming the browser's code: %d %v", status, m)
	}
}

// newChromium starts headless Chromium with a fresh profile for the test,
// or skips the test where Chromium is missing; the context drives its tab.
func newChromium(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("headless browser test skipped: %s is missing (apt-get install chromium; .ci/run installs it)", chromiumPath)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	ctx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1000, 760),
	)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(ctx)
	t.Cleanup(cancelTab)
	return ctx
}

// clientApp serves a client application on loopback that records the
// authorization responses it is sent, and returns them and its redirect
// URI.
func clientApp(t *testing.T) (<-chan url.Values, string) {
	responses := make(chan url.Values, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/callback" {
			select {
			case responses <- r.URL.Query():
			default:
			}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<!doctype html><title>signed in</title><p id=done>signed in</p>"))
	}))
	t.Cleanup(app.Close)
	return responses, app.URL + "/callback"
}

func awaitResponse(t *testing.T, ctx context.Context, responses <-chan url.Values) url.Values {
	t.Helper()
	select {
	case resp := <-responses:
		return resp
	case <-ctx.Done():
		t.Fatal("the browser never reached the redirect URI")
		return nil
	}
}

// TestUpstreamButtonInChromium: a person signs in through the upstream
// provider's button in a real browser: to the upstream meshauth issuer's
// login and consent pages and back, then the consent page of the issuer
// the application uses, and on to the application with a code.
func TestUpstreamButtonInChromium(t *testing.T) {
	ctx := newChromium(t)
	f := newFederation(t, UpstreamProvider{CreateUsers: true})
	f.upUser("alice", "alice@example.com", true)
	responses, redirect := clientApp(t)
	f.down.register(ClientMetadata{ClientID: "web", ClientName: "Web", TokenEndpointAuthMethod: "none",
		GrantTypes: []string{GrantTypeAuthorizationCode}, RedirectURIs: []string{redirect}, Scope: "openid profile"})
	q := url.Values{"response_type": {"code"}, "client_id": {"web"}, "redirect_uri": {redirect}, "state": {"up-state"},
		"scope": {"openid profile"}, "code_challenge": {testChallenge}, "code_challenge_method": {"S256"}}
	if err := chromedp.Do(ctx,
		chromedp.Navigate(f.down.url+"/authorize?"+q.Encode()),
		chromedp.WaitVisible(chromedp.CSS(`a.button`)),
	); err != nil {
		t.Fatalf("open the login page: %v", err)
	}
	screenshot(t, ctx, strings.TrimSuffix(screenshotPath(t), ".png")+"-upstream.png")
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.Search(`//a[contains(., "Sign in with Corp")]`)),
		chromedp.WaitVisible(chromedp.ID("username")),
	); err != nil {
		t.Fatalf("follow the upstream button: %v", err)
	}
	// The upstream issuer's own login page.
	if at, err := chromedp.Run(ctx, chromedp.Location()); err != nil || !strings.HasPrefix(at, f.up.url+"/authorize") {
		t.Fatalf("the button led to %q (%v), want the upstream provider", at, err)
	}
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("username"), "alice"),
		chromedp.SendKeys(chromedp.ID("password"), testPassword),
		chromedp.Click(chromedp.CSS(`button[value="login"]`)),
		chromedp.WaitVisible(chromedp.CSS(`button[value="allow"]`)),
		chromedp.Click(chromedp.CSS(`button[value="allow"]`)),
		// Back at the application's issuer, whose consent page names
		// the application (the upstream's named meshauth's client, Down).
		chromedp.WaitVisible(chromedp.Search(`//p[@class="lead"]/strong[text()="Web"]`)),
	); err != nil {
		t.Fatalf("sign in upstream: %v", err)
	}
	if at, err := chromedp.Run(ctx, chromedp.Location()); err != nil || !strings.HasPrefix(at, f.down.url+"/upstream/corp/callback") {
		t.Fatalf("after the upstream sign-in the browser is at %q (%v)", at, err)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`button[value="allow"]`)),
		chromedp.WaitVisible(chromedp.ID("done")),
	); err != nil {
		t.Fatalf("allow: %v", err)
	}
	resp := awaitResponse(t, ctx, responses)
	if resp.Get("state") != "up-state" || resp.Get("iss") != f.down.url || resp.Get("code") == "" {
		t.Fatalf("authorization response %v", resp)
	}
}

// screenshotPath is where the login page's screenshot goes:
// $MESHAUTH_SCREENSHOT if set, else the test's temporary directory.
func screenshotPath(t *testing.T) string {
	if shot := os.Getenv("MESHAUTH_SCREENSHOT"); shot != "" {
		return shot
	}
	return filepath.Join(t.TempDir(), "login.png")
}

// screenshot saves the browser's viewport as a PNG at path.
func screenshot(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
