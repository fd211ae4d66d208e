package testenv

import "testing"

func TestPostgresDSN(t *testing.T) {
	dsn := PostgresDSN(t)
	if dsn == "" {
		t.Fatal("PostgresDSN returned empty DSN")
	}
}
