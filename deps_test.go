package outlast_test

import (
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// A rule says what one package may not import, directly or through other
// packages of the module, and why. Only production files count: a test may
// import whatever it needs.
//
// Patterns name packages of the module by "outlast" and the path below the
// module root ("outlast", "outlast/cache"), anything else by its import path
// ("net/http"). "x/..." is x and every package below it, "std" the standard
// library, "..." everything. The most specific pattern that matches an
// import decides: an exact path beats a subtree, a longer subtree a shorter
// one, and "std" beats "...".
type rule struct {
	bad map[string]string // pattern => why it is banned
	ok  map[string]string // narrower pattern => why it is allowed under a broader ban
	// helper marks a test helper: every package that is not one is banned
	// from importing it.
	helper bool
}

// badDeps classifies every package of the module. A package the walk finds
// but badDeps lacks fails the test, so each new package is given its place;
// a package listed here but absent (yet) is fine.
var badDeps = map[string]rule{
	"outlast": {
		bad: map[string]string{
			"...":          "the root is the domain: with the standard library alone every adapter can import it while it imports none",
			"database/sql": "storage belongs to store; the domain declares the Ledger interface it needs",
			"net/http":     "the wire belongs to http and channel; the domain does not know how it is reached",
			"net":          "connections belong to the adapters; the domain holds no socket",
		},
		ok: map[string]string{"std": "the standard library is the one dependency the domain takes"},
	},
	"outlast/store":      adapter("store"),
	"outlast/jetstream":  adapter("jetstream"),
	"outlast/redis":      adapter("redis"),
	"outlast/channel":    adapter("channel"),
	"outlast/http":       adapter("http"),
	"outlast/partnersim": adapter("partnersim"),
	"outlast/reconcile":  adapter("reconcile"),
	"outlast/control":    adapter("control"),
	"outlast/admission":  adapter("admission"),
	// The Go client of the API is imported by other services: it speaks
	// the domain's types and errors and brings nothing else along.
	"outlast/client": {
		bad: map[string]string{
			"...": "other Go services import the client: with the domain and the standard library alone it drags no adapter, driver or server into their builds",
		},
		ok: map[string]string{
			"outlast": "the domain types and *outlast.Error are what the API's JSON decodes into",
			"std":     "net/http and encoding/json are all a client of a JSON API needs",
		},
	},
	// The lab holds both designs to what the banks did, from outside:
	// their APIs and the simulated banks' records, never a database.
	"outlast/chaos": {
		bad: map[string]string{
			"outlast/store/...":     "the lab checks a service through its API and the banks' records, as it checks the naive design: reading Outlast's database would grade it on its own word",
			"outlast/ledger/...":    "likewise: the ledger is the service's inside",
			"outlast/http/...":      "the lab speaks HTTP to a running service; it does not embed one",
			"outlast/jetstream/...": "the log is the service's inside",
			"outlast/redis/...":     "Redis is a dependency the lab faults, not a library it calls",
			"outlast/control/...":   "the control plane is driven through the admin API",
			"outlast/reconcile/...": "reconciliation is the service's own; the lab checks its outcome",
			"outlast/channel/...":   "the lab runs the banks; it does not call them as the dispatcher does",
		},
		ok: map[string]string{"outlast/partnersim": "the lab runs the simulated banks and holds every design to what they did"},
	},
	"outlast/cache": {
		bad: map[string]string{"outlast/...": "cache is generic (no domain imports, DESIGN.md §4): any service could use it, and the ledger and adapters build on it without a cycle"},
		ok:  map[string]string{"outlast/internal/backoff": "backoff is a mechanism with no domain and imports nothing of Outlast, so cache stays generic while sharing the one backoff"},
	},
	"outlast/internal/backoff": {
		bad: map[string]string{"outlast/...": "backoff is one mechanism with no domain; importing nothing of Outlast is what lets cache, the adapters and the ledger all share it"},
	},
	// The one process supervisor and the one load generator: mechanisms
	// with no domain, shared by the benchmarks, the end-to-end tests and
	// (next) the chaos lab.
	"outlast/internal/proc": {
		bad: map[string]string{"outlast/...": "starting, signalling and waiting for a child process needs nothing of Outlast; importing nothing keeps it usable from tests and benchmarks alike"},
	},
	"outlast/internal/redisproc": {
		bad: map[string]string{"outlast/...": "a private redis-server is a process to supervise, not a cache; it must not need the redis adapter it is used to test"},
		ok:  map[string]string{"outlast/internal/proc": "it is a redis-server under the one process supervisor"},
	},
	"outlast/internal/natsproc": {
		bad: map[string]string{"outlast/...": "a private nats-server is a process to supervise, not a log; it must not need the jetstream adapter it is used to test"},
		ok:  map[string]string{"outlast/internal/proc": "it is a nats-server under the one process supervisor"},
	},
	"outlast/internal/browsertest": {
		bad: map[string]string{"outlast/...": "driving a headless browser needs nothing of Outlast; the console's and the lab report's tests share it"},
		ok: map[string]string{
			"outlast/internal/testenv": "a missing chromium skips on a laptop and fails under CI, as every missing server does",
			"outlast/internal/pgproc":  "through testenv, which starts private servers for the tests that fault them",
			"outlast/internal/proc":    "likewise, through testenv",
		},
	},
	// The seeds' design, the lab's baseline: built from the domain alone,
	// as the team of seeds 000 and 002 would have, with its own SQL, Pub/Sub
	// and cache-aside.
	"outlast/chaos/naive": {
		bad: map[string]string{"outlast/...": "the baseline must not borrow Outlast's durability: store's inbox, jetstream's log, ledger's and cache's tiers and breakers, channel's router, control's poller or reconcile would make it a different design than the one the lab measures"},
		ok:  map[string]string{"outlast": "the domain types, validation, state machine and webhook signature are the contract both designs speak"},
	},
	"outlast/chaos/naive/cmd/naive": {
		bad: map[string]string{"outlast/...": "the baseline's binary only parses flags and runs package naive; anything else of Outlast would reach the baseline through it"},
		ok: map[string]string{
			"outlast/chaos/naive": "the design it runs as a process",
			"outlast":             "the domain, which package naive is built on",
		},
	},
	"outlast/chaos/faultproxy": {
		bad: map[string]string{"outlast/...": "a TCP fault proxy knows nothing of Outlast: tests, benchmarks and the chaos lab put it in front of any dependency"},
	},
	"outlast/internal/pgproc": {
		bad: map[string]string{"outlast/...": "a private PostgreSQL is a process to supervise, not a store; it must not need the store it is used to test, and testenv, under every package's tests, imports it"},
		ok:  map[string]string{"outlast/internal/proc": "it is a postgres under the one process supervisor"},
	},
	"outlast/internal/load": {
		bad: map[string]string{"outlast/...": "an open-loop schedule and its latency histogram know nothing of what is sent; the benchmarks and the demo supply the request"},
	},
	// The ledger in front of the store: it implements outlast.Ledger by
	// wrapping another outlast.Ledger with the tiered cache.
	"outlast/ledger": {
		bad: map[string]string{
			"outlast/...":           "the cached ledger is the domain's Ledger over the generic cache; anything else it needs arrives through an interface that cmd/ wires",
			"outlast/store/...":     "the store arrives as an outlast.Ledger, so the cached ledger runs over any implementation and the ledger conformance suite can run it over a fake",
			"outlast/jetstream/...": "notifications reach the ledger through the domain's apply path, never from the log itself",
			"outlast/redis/...":     "L2 arrives as a cache.L2 that cmd/ builds from redis, so the ledger runs without a Redis",
			"outlast/http/...":      "http calls the ledger; importing it back would turn the layers upside down",
			"outlast/channel/...":   "channel dispatches what the ledger records and calls it; importing it back would turn the layers upside down",
		},
		ok: map[string]string{
			"outlast":                  "the Ledger interface and the domain types it implements live in the root",
			"outlast/cache":            "the tiered cache is what the ledger puts in front of the store",
			"outlast/internal/backoff": "retrying a call to the wrapped ledger is a mechanism with no domain",
		},
	},
	// cmd/ wires everything: only the rules for every package apply.
	"outlast/cmd/outlast": {},
	"outlast/internal/testenv": {
		helper: true,
		bad:    map[string]string{"outlast/...": "testenv is under every package's tests, in-package ones included: importing any package of Outlast would be an import cycle for that package's tests"},
		ok: map[string]string{
			"outlast/internal/pgproc": "the private PostgreSQL's supervisor; it imports only proc, whose own tests do without testenv",
			"outlast/internal/proc":   "the one process supervisor, under pgproc; its tests do without testenv, so no cycle",
		},
	},
	"outlast/internal/ledgertest": {
		helper: true,
		bad: map[string]string{
			"...": "the conformance suite is typed by outlast.Ledger alone, so every implementation's tests (store, ledger, the adapters' fakes) can run it: any other import of Outlast would be a cycle for one of them, and anything outside the standard library a dependency of all",
		},
		ok: map[string]string{
			"outlast": "the Ledger interface and the domain types the suite is written against",
			"std":     "plain testing and the standard library are all a suite needs",
		},
	},
	"outlast/redis/redistest": {
		helper: true,
		bad:    map[string]string{"outlast/...": "redis's in-package tests import redistest, so importing redis would be a cycle; starting a redis-server needs nothing of the domain"},
		ok: map[string]string{
			"outlast/internal/testenv":   "helpers build on each other; only tests import either",
			"outlast/internal/redisproc": "the test wrapper and the benchmark share the one redis-server supervisor",
			"outlast/internal/proc":      "the one process supervisor, under redisproc",
			"outlast/internal/pgproc":    "testenv's private PostgreSQL comes along with the helpers redistest builds on",
		},
	},
}

// everywhere holds the rules of every package; a package's own rule
// overrides one of them by naming the same pattern.
var everywhere = map[string]string{
	"outlast/cmd/...": "cmd/ only parses flags and wires the packages into a binary; logic a package needs belongs in a package of its own",
}

// helperWhy is why packages other than test helpers may not import one.
const helperWhy = "test helpers start servers and import testing; only _test.go files may import them, so no binary links them"

// adapters are the packages, one per dependency, that talk to one another
// only in domain types.
var adapters = []string{
	"store", "jetstream", "redis", "cache", "channel", "http", "partnersim", "reconcile",
	"control", "admission", "client", "chaos",
}

// adapter returns the rule of the adapter name: no other adapter.
func adapter(name string) rule {
	bad := map[string]string{}
	for _, a := range adapters {
		if a != name {
			bad["outlast/"+a+"/..."] = "adapters talk to one another only in domain types and cmd/ wires them, so a change to one adapter never reaches another"
		}
	}
	return rule{bad: bad}
}

// TestDependencies keeps the layering of DESIGN.md §4 true as packages are
// added: a wrong import fails here, with its reason, before it spreads.
func TestDependencies(t *testing.T) {
	for _, p := range checkTable(badDeps, everywhere) {
		t.Error(p)
	}
	graph := moduleGraph(t)
	if len(graph) < 2 || graph["outlast"] == nil {
		t.Fatalf("walk found packages %v, want the root and its sub-packages: run from the module root", slices.Sorted(maps.Keys(graph)))
	}
	for _, p := range checkDeps(graph, badDeps, everywhere) {
		t.Error(p)
	}
}

// TestDependencyChecker runs checkDeps over a made-up module, so a checker
// that reports nothing cannot pass for a clean tree.
func TestDependencyChecker(t *testing.T) {
	graph := map[string][]string{
		"outlast":                  {"fmt", "github.com/x/y"},
		"outlast/cache":            {"outlast/internal/backoff", "sync"},
		"outlast/internal/backoff": {"outlast/store"},
		"outlast/store":            {"outlast", "outlast/redis/redistest"},
		"outlast/redis/redistest":  {"outlast/internal/testenv"},
		"outlast/internal/testenv": {"testing"},
		"outlast/http":             {"outlast", "outlast/cmd/outlast"},
		"outlast/ledger":           {"outlast", "outlast/cache", "outlast/channel"},
		"outlast/channel":          {"outlast"},
		"outlast/cmd/outlast":      {"outlast/cache", "outlast/http", "outlast/ledger", "outlast/store"},
		"outlast/newpkg":           nil,
	}
	backoffWhy := badDeps["outlast/internal/backoff"].bad["outlast/..."]
	want := []string{
		"outlast imports github.com/x/y (outlast → github.com/x/y): " + badDeps["outlast"].bad["..."],
		"outlast/cache imports outlast/store (outlast/cache → outlast/internal/backoff → outlast/store): " + badDeps["outlast/cache"].bad["outlast/..."],
		"outlast/cmd/outlast imports outlast/redis/redistest (outlast/cmd/outlast → outlast/store → outlast/redis/redistest): " + helperWhy,
		"outlast/http imports outlast/cmd/outlast (outlast/http → outlast/cmd/outlast): " + everywhere["outlast/cmd/..."],
		"outlast/internal/backoff imports outlast/store (outlast/internal/backoff → outlast/store): " + backoffWhy,
		"outlast/ledger imports outlast/channel (outlast/ledger → outlast/channel): " + badDeps["outlast/ledger"].bad["outlast/channel/..."],
		"outlast/ledger imports outlast/store (outlast/ledger → outlast/cache → outlast/internal/backoff → outlast/store): " + badDeps["outlast/ledger"].bad["outlast/store/..."],
		"outlast/newpkg has no rule in badDeps (deps_test.go): give it one saying what it may not import and why",
		"outlast/store imports outlast/redis/redistest (outlast/store → outlast/redis/redistest): " + helperWhy,
	}
	got := checkDeps(graph, badDeps, everywhere)
	if !slices.Equal(got, want) {
		t.Errorf("checkDeps(made-up module) =\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}

	bad := map[string]rule{
		"outlast/a": {bad: map[string]string{"outlast/typo/...": "x", "net": "y"}, ok: map[string]string{"net": "z"}},
	}
	want = []string{
		`outlast/a: "net" is both banned and allowed`,
		`outlast/a: pattern "outlast/typo/..." names no package in badDeps`,
	}
	if got := checkTable(bad, nil); !slices.Equal(got, want) {
		t.Errorf("checkTable(typos) =\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// checkDeps returns, sorted, each package of graph that rules lacks and each
// banned import, with the chain of imports that reaches it. graph maps every
// package of the module to its direct imports, named as in a rule; the
// patterns of everywhere apply to every package.
func checkDeps(graph map[string][]string, rules map[string]rule, everywhere map[string]string) []string {
	var problems []string
	for _, pkg := range slices.Sorted(maps.Keys(graph)) {
		r, ok := rules[pkg]
		if !ok {
			problems = append(problems, pkg+" has no rule in badDeps (deps_test.go): give it one saying what it may not import and why")
			continue
		}
		verdicts := effective(r, rules, everywhere)
		for imp, chain := range reach(graph, pkg, verdicts) {
			if v := verdict(verdicts, imp); v.banned {
				problems = append(problems, fmt.Sprintf("%s imports %s (%s): %s", pkg, imp, strings.Join(chain, " → "), v.why))
			}
		}
	}
	slices.Sort(problems)
	return problems
}

type decision struct {
	banned bool
	why    string
}

// effective merges r with the rules every package has; r's own entry for a
// pattern wins.
func effective(r rule, rules map[string]rule, everywhere map[string]string) map[string]decision {
	d := map[string]decision{}
	for p, why := range everywhere {
		d[p] = decision{banned: true, why: why}
	}
	if !r.helper {
		for pkg, other := range rules {
			if other.helper {
				d[pkg] = decision{banned: true, why: helperWhy}
			}
		}
	}
	for p, why := range r.bad {
		d[p] = decision{banned: true, why: why}
	}
	for p, why := range r.ok {
		d[p] = decision{why: why}
	}
	return d
}

// reach returns every package pkg imports, directly or through packages of
// the module, with the shortest chain of imports to it. It does not look
// past a banned import: cutting that one is the fix.
func reach(graph map[string][]string, pkg string, verdicts map[string]decision) map[string][]string {
	chains := map[string][]string{pkg: {pkg}}
	queue := []string{pkg}
	for len(queue) > 0 {
		from := queue[0]
		queue = queue[1:]
		for _, imp := range graph[from] {
			if _, seen := chains[imp]; seen {
				continue
			}
			chains[imp] = append(slices.Clip(chains[from]), imp)
			if _, inModule := graph[imp]; inModule && !verdict(verdicts, imp).banned {
				queue = append(queue, imp)
			}
		}
	}
	delete(chains, pkg)
	return chains
}

// verdict returns the decision of the most specific pattern matching imp;
// with none, imp is allowed.
func verdict(verdicts map[string]decision, imp string) decision {
	best, v := -1, decision{}
	for p, d := range verdicts {
		if s := specificity(p, imp); s > best {
			best, v = s, d
		}
	}
	return v
}

// specificity ranks how closely pattern p matches imp: -1 for no match.
func specificity(p, imp string) int {
	switch {
	case p == "...":
		return 0
	case p == "std":
		if first, _, _ := strings.Cut(imp, "/"); first != "outlast" && !strings.Contains(first, ".") {
			return 1
		}
		return -1
	case p == imp:
		return 4*len(p) + 3
	}
	if stem, ok := strings.CutSuffix(p, "/..."); ok && (imp == stem || strings.HasPrefix(imp, stem+"/")) {
		return 4*len(stem) + 2
	}
	return -1
}

// checkTable reports patterns that can never match a package of the module
// (a typo would silently ban nothing) and patterns both banned and allowed
// by one rule.
func checkTable(rules map[string]rule, everywhere map[string]string) []string {
	var problems []string
	for _, p := range slices.Sorted(maps.Keys(everywhere)) {
		if !names(p, rules) {
			problems = append(problems, fmt.Sprintf("everywhere: pattern %q names no package in badDeps", p))
		}
	}
	for _, pkg := range slices.Sorted(maps.Keys(rules)) {
		r := rules[pkg]
		all := map[string]string{}
		maps.Copy(all, r.bad)
		maps.Copy(all, r.ok)
		for _, p := range slices.Sorted(maps.Keys(all)) {
			if _, ok := r.bad[p]; ok {
				if _, ok := r.ok[p]; ok {
					problems = append(problems, fmt.Sprintf("%s: %q is both banned and allowed", pkg, p))
				}
			}
			if !names(p, rules) {
				problems = append(problems, fmt.Sprintf("%s: pattern %q names no package in badDeps", pkg, p))
			}
		}
	}
	return problems
}

// names reports whether p is a pattern outside the module or matches a
// package that rules classifies.
func names(p string, rules map[string]rule) bool {
	if p != "outlast" && !strings.HasPrefix(p, "outlast/") {
		return true
	}
	for pkg := range rules {
		if specificity(p, pkg) >= 0 {
			return true
		}
	}
	return false
}

// moduleGraph parses the production files of every package below the
// working directory, the module root. Build constraints are ignored: an
// import behind a tag or a GOOS is still an import when built that way.
func moduleGraph(t *testing.T) map[string][]string {
	t.Helper()
	module := modulePath(t)
	imports := map[string]map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != "." && skipDir(path, name) {
				return filepath.SkipDir
			}
			return nil
		}
		// The go command ignores files starting with "." or "_".
		if !strings.HasSuffix(name, ".go") || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
			return nil
		}
		pkg := short(module, module+"/"+filepath.ToSlash(filepath.Dir(path)))
		if imports[pkg] == nil {
			imports[pkg] = map[string]bool{}
		}
		if strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, s := range f.Imports {
			imp, err := strconv.Unquote(s.Path.Value)
			if err != nil {
				return fmt.Errorf("%s: import %s: %w", path, s.Path.Value, err)
			}
			imports[pkg][short(module, imp)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	graph := map[string][]string{}
	for pkg, set := range imports {
		graph[pkg] = slices.Sorted(maps.Keys(set))
	}
	return graph
}

// skipDir reports whether the go command leaves dir out of the module:
// testdata, vendor, hidden and "_" directories, and nested modules.
func skipDir(dir, name string) bool {
	if name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
		return true
	}
	_, err := os.Stat(filepath.Join(dir, "go.mod"))
	return err == nil
}

// short names a package of the module as the rules do: "outlast" and the
// path below the module root.
func short(module, imp string) string {
	imp = strings.TrimSuffix(imp, "/.")
	if imp == module {
		return "outlast"
	}
	if rest, ok := strings.CutPrefix(imp, module+"/"); ok {
		return "outlast/" + rest
	}
	return imp
}

func modulePath(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	t.Fatal("go.mod declares no module")
	return ""
}
