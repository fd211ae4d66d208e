package store

import (
	"fmt"
	"strings"
)

// rowset is a batch of rows for one statement, held column by column, that
// the dialect binds as a fixed number of parameters (see rowBinder). The
// statement's text is then the same for 1 or 1000 rows: the database
// parses it once per connection instead of once per batch, and no
// statement comes near a bound-parameter limit. Callers bound its size:
// the applier's rowsets hold at most two rows per notification of a batch
// of at most BatchMax.
type rowset struct {
	names []string
	ints  []bool     // column i holds int64 (BIGINT) rather than text
	text  [][]string // column i's values if !ints[i]
	nums  [][]int64  // column i's values if ints[i]
	n     int        // rows added
}

// newRowset declares the columns, each "name text" or "name bigint".
func newRowset(columns ...string) *rowset {
	rs := &rowset{
		names: make([]string, len(columns)), ints: make([]bool, len(columns)),
		text: make([][]string, len(columns)), nums: make([][]int64, len(columns)),
	}
	for i, c := range columns {
		name, typ, _ := strings.Cut(c, " ")
		if typ != "text" && typ != "bigint" {
			panic("store: rowset column " + c + " must be text or bigint")
		}
		rs.names[i], rs.ints[i] = name, typ == "bigint"
	}
	return rs
}

// add appends a row: a string for each text column, an int64 for each
// bigint column, in declaration order. A mismatch is a bug and panics.
func (rs *rowset) add(values ...any) {
	if len(values) != len(rs.names) {
		panic(fmt.Sprintf("store: rowset row has %d values for %d columns", len(values), len(rs.names)))
	}
	for i, v := range values {
		switch v := v.(type) {
		case string:
			if rs.ints[i] {
				panic("store: rowset column " + rs.names[i] + " is bigint, got a string")
			}
			rs.text[i] = append(rs.text[i], v)
		case int64:
			if !rs.ints[i] {
				panic("store: rowset column " + rs.names[i] + " is text, got an int64")
			}
			rs.nums[i] = append(rs.nums[i], v)
		default:
			panic(fmt.Sprintf("store: rowset column %s: unsupported %T", rs.names[i], v))
		}
	}
	rs.n++
}

// reset empties rs, keeping its columns and memory.
func (rs *rowset) reset() {
	for i := range rs.names {
		rs.text[i], rs.nums[i] = rs.text[i][:0], rs.nums[i][:0]
	}
	rs.n = 0
}

// prefixedNames returns names, each qualified with prefix.
func prefixedNames(prefix string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = prefix + n
	}
	return out
}
