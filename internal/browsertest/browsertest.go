// Package browsertest drives headless Chromium for the tests that must
// see a page as a person would — the admin console, the chaos lab's
// report — and keeps their screenshots as test artifacts.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/outlast/outlast/internal/testenv"
)

// Chromium returns Debian's chromium, or skips (fails under CI).
func Chromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Missing(t, "chromium (apt-get install chromium)", err)
	}
	return path
}

// New starts headless Chromium with an empty profile; it is stopped when
// the test ends.
func New(t *testing.T, chromium string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(1400, 1100),
		// The machine has no internet: without these Chromium waits on
		// refused connections of its own.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelAlloc)
	t.Cleanup(cancelBrowser) // runs first: the tab, then the process
	return bctx
}

// Screenshot takes a full-page screenshot of b's page into the test's
// artifact directory as name (a .png file name), and also into
// $OUTLAST_ARTIFACTS when that is set; it returns the artifact's path.
func Screenshot(t *testing.T, b context.Context, name string) string {
	t.Helper()
	png, err := chromedp.Run(b, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("OUTLAST_ARTIFACTS"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Errorf("copy the screenshot to OUTLAST_ARTIFACTS: %v", err)
		}
	}
	return path
}
