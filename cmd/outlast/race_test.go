//go:build race

package main

// Under -race the end-to-end tests build the service with the race detector
// too, so the subprocess they SIGKILL is checked as well.
func init() { raceBuild = true }
