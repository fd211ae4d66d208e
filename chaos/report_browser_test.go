package chaos

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outlast/outlast/internal/browsertest"
)

// The HTML report opens in headless Chromium as a page that stands alone
// (a file, nothing fetched) and shows the scorecard and every scenario
// with its plots; the screenshot is kept as a test artifact.
func TestReportInBrowser(t *testing.T) {
	b := browsertest.New(t, browsertest.Chromium(t))
	path := filepath.Join(t.TempDir(), "report.html")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := sampleReport().WriteHTML(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(b, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+path), chromedp.WaitVisible(chromedp.ID("scorecard"))); err != nil {
		t.Fatalf("open the report: %v", err)
	}
	rows, err := chromedp.Run(b, chromedp.Evaluate[int](`document.querySelectorAll("#scorecard tr").length`))
	if err != nil {
		t.Fatal(err)
	}
	plots, err := chromedp.Run(b, chromedp.Evaluate[int](`[...document.querySelectorAll(".plots svg")].filter(s => s.getBoundingClientRect().height > 100).length`))
	if err != nil {
		t.Fatal(err)
	}
	if rows != 3 || plots != 2*len(plotted) {
		t.Errorf("the page shows %d scorecard rows and %d plots drawn; want 3 (a header, 2 scenarios) and %d",
			rows, plots, 2*len(plotted))
	}
	t.Logf("screenshot of the report (%s plots): %s", strconv.Itoa(plots), browsertest.Screenshot(t, b, "chaos-report.png"))
}
