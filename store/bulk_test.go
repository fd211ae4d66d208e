package store

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/outlast/outlast/internal/testenv"
)

// TestRowBinders reads rowsets and lists back through each backend's
// binding: every value, in order, with text that needs escaping and the
// extreme int64s.
func TestRowBinders(t *testing.T) {
	texts := []string{"", `"quoted" \back\slash`, "ctl \x01\x1f\n\t", "é中🙂\u2028", "[1,2]", "null"}
	nums := []int64{0, -1, math.MaxInt64, math.MinInt64, 1 << 53, (1 << 53) + 1}
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			dsn := "sqlite:" + t.TempDir() + "/ledger.db"
			if name == "postgres" {
				dsn = testenv.PostgresDSN(t)
			}
			db, err := Open(context.Background(), dsn)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer db.Close()
			rs := newRowset("s text", "n bigint")
			for i := range texts {
				rs.add(texts[i], nums[i])
			}
			rb := db.d.rows
			gotTexts, gotNums := readRowset(t, db, "SELECT v.s, v.n FROM "+rb.from(rs, 1), rb.args(rs)...)
			if !slices.Equal(gotTexts, texts) || !slices.Equal(gotNums, nums) {
				t.Fatalf("rowset read back as %q %v, want %q %v", gotTexts, gotNums, texts, nums)
			}
			var n int
			if err := db.w.QueryRow("SELECT COUNT(*) FROM (SELECT 1 AS x) AS t WHERE 'null' "+rb.in(1, "text"),
				rb.list(texts)).Scan(&n); err != nil || n != 1 {
				t.Fatalf("text list: COUNT = %d, %v; want 1", n, err)
			}
			if err := db.w.QueryRow("SELECT COUNT(*) FROM (SELECT 1 AS x) AS t WHERE CAST($2 AS BIGINT) "+
				rb.in(1, "bigint"), rb.list(nums), int64(math.MinInt64)).Scan(&n); err != nil || n != 1 {
				t.Fatalf("bigint list: COUNT = %d, %v; want 1", n, err)
			}
		})
	}
}

func readRowset(t *testing.T, db *DB, query string, args ...any) ([]string, []int64) {
	t.Helper()
	rows, err := db.w.Query(query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var texts []string
	var nums []int64
	for rows.Next() {
		var s string
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		texts, nums = append(texts, s), append(nums, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return texts, nums
}
