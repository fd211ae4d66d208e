package outlast_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/outlast/outlast"
)

// The domain's half of issue 7 item 4: ids of dots, an unbounded
// occurred_at, control characters kept, a signed "+" timestamp.

func TestValidIDNotOnlyDots(t *testing.T) {
	for id, want := range map[string]bool{
		".": false, "..": false, "...": false, strings.Repeat(".", outlast.IDBytesMax): false,
		".a": true, "a.": true, "a..b": true, "v1.2": true, "-": true, "acc-a": true,
	} {
		if got := outlast.ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
	}
	if long := strings.Repeat("a", outlast.IDBytesMax); !outlast.ValidID(long) || outlast.ValidID(long+"a") {
		t.Errorf("ValidID takes up to %d bytes: %v for %d, %v for one more", outlast.IDBytesMax, outlast.ValidID(long), len(long), outlast.ValidID(long+"a"))
	}
	if want := "1-" + strconv.Itoa(outlast.IDBytesMax) + " characters"; !strings.Contains(outlast.IDRule, want) {
		t.Errorf("IDRule = %q, want it to say %q", outlast.IDRule, want)
	}
	a := outlast.Account{ID: "..", ClientID: "c", Currency: "USD"}
	if err := a.Validate(); outlast.ErrorCode(err) != outlast.EVALIDATION || !strings.Contains(outlast.ErrorMessage(err), "not only dots") {
		t.Errorf("Account{ID: %q}.Validate() = %v, want %s saying ids are not only dots", a.ID, err, outlast.EVALIDATION)
	}
}
