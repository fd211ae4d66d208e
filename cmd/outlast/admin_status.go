package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
	ohttp "github.com/outlast/outlast/http"
)

func runAdminStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin status", "The config version and its last change, and every instance: the version it runs, when it\n"+
		"was last seen, whether it is in maintenance and by what, and the health of its dependencies\n"+
		"as it sees them. With the database down, only the instance at --url can say anything: its\n"+
		"own view is shown, and says so.", stdout, stderr)
	var admin adminFlags
	admin.register(fs.FlagSet)
	asJSON := fs.Bool("json", false, "print the API's JSON (GET /admin/v1/instances, or /admin/v1/local/status with the database down)")
	api, err := admin.parseNoArgs(fs, args)
	if err != nil {
		return err
	}
	list, err := api.Instances(ctx)
	if databaseDown(err) {
		return localStatus(ctx, api, stdout, stderr, *asJSON, err)
	}
	if err != nil {
		return explain(api, "list the instances", err)
	}
	if *asJSON {
		return printJSON(stdout, list.Raw)
	}
	cfg, err := api.Config(ctx)
	if err != nil {
		return explain(api, "read the config", err)
	}
	changes, err := api.ConfigHistory(ctx, 1)
	if err != nil {
		return explain(api, "read the config history", err)
	}
	current := outlast.AgreedChannel(list.Fresh())
	printConfig(stdout, cfg, changes, current)
	fmt.Fprintln(stdout)
	return printInstances(stdout, *list, cfg.Order(current))
}

// databaseDown says the admin API answered that its database is
// unreachable.
func databaseDown(err error) bool {
	return client.Status(err) == 503
}

// printConfig says which config is in force and who changed it last;
// current is the channel every instance seen recently sends new payouts
// to, if they agree.
func printConfig(w io.Writer, c *outlast.ControlConfig, last []outlast.ConfigChange, current string) {
	fmt.Fprintf(w, "config version %d", c.Version)
	if len(last) > 0 && last[0].Version == c.Version {
		ch := last[0]
		fmt.Fprintf(w, ", changed %s by %s", ch.At.UTC().Format(time.RFC3339), ch.Actor)
		if ch.Reason != "" {
			fmt.Fprintf(w, ": %q", ch.Reason)
		}
	} else if c.Version == 0 {
		fmt.Fprint(w, " (the defaults: never changed)")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  maintenance: %s\n", maintenanceText(c.Maintenance))
	fmt.Fprintf(w, "  channels: %s\n", channelsText(c, current))
}

func maintenanceText(m outlast.Maintenance) string {
	if !m.On {
		return "off"
	}
	msg := m.Message
	if msg == "" {
		msg = "(the default message)"
	} else {
		msg = strconv.Quote(msg)
	}
	return fmt.Sprintf("ON: new payouts refused with %s, Retry-After %s", msg, m.RetryAfter())
}

func channelsText(c *outlast.ControlConfig, current string) string {
	active := c.ActiveChannel
	switch {
	case active == "" && current != "":
		active = current + " (each instance's start-up channel; the config sets none)"
	case active == "":
		active = "none set: each instance uses its start-up channel (see CHANNEL ORDER)"
	}
	out := "active " + active
	if len(c.Fallback) > 0 {
		out += ", then " + strings.Join(c.Fallback, ", ")
	}
	var disabled []string
	for _, name := range slices.Sorted(maps.Keys(c.Channels)) {
		if !c.Channels[name].Enabled {
			disabled = append(disabled, name)
		}
	}
	if len(disabled) > 0 {
		out += "; disabled: " + strings.Join(disabled, ", ")
	}
	return out
}

// printInstances is the table of every instance, then the dependency
// problems in full. expected is the channel order the config makes.
func printInstances(w io.Writer, list client.Instances, expected []string) error {
	if len(list.Instances) == 0 {
		_, err := fmt.Fprintln(w, "no instance has sent a heartbeat")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tADDR\tCONFIG\tSEEN\tMAINTENANCE\tCHANNEL ORDER\tDEPENDENCIES")
	var details []string
	stale, behind := 0, 0
	for _, in := range list.Instances {
		version := fmt.Sprintf("%d (current)", in.AppliedVersion)
		if in.AppliedVersion != list.ConfigVersion {
			version = fmt.Sprintf("%d (BEHIND)", in.AppliedVersion)
			behind++
		}
		seen := seconds(in.SeenAgoSeconds) + " ago"
		if in.Stale {
			seen += " STALE"
			stale++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", in.ID, in.Addr, version, seen,
			instanceMaintenance(&in.InstanceStatus), orderText(&in.InstanceStatus, expected), dependenciesText(in.Dependencies))
		for _, d := range in.Dependencies {
			if !d.OK && d.Detail != "" {
				details = append(details, fmt.Sprintf("  %s %s: %s", in.ID, d.Name, shorten(d.Detail, 200)))
			}
		}
	}
	fmt.Fprintf(tw, "%s", plural(len(list.Instances), "instance"))
	if behind > 0 {
		fmt.Fprintf(tw, "; %d not on version %d", behind, list.ConfigVersion)
	}
	if stale > 0 {
		fmt.Fprintf(tw, "; %d not seen for %s (STALE: gone, or cut off from the database)", stale, ohttp.InstanceStaleAfter)
	}
	fmt.Fprintln(tw)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(details) > 0 {
		fmt.Fprintln(w, "\nproblems:")
		fmt.Fprintln(w, strings.Join(details, "\n"))
	}
	return nil
}

// instanceMaintenance says whether an instance refuses payouts and by
// what: the config, or a break-glass override (local switch, file).
func instanceMaintenance(in *outlast.InstanceStatus) string {
	if !in.Maintenance {
		return "off"
	}
	if len(in.Overrides) == 0 {
		return "on (config)"
	}
	var srcs []string
	for _, o := range in.Overrides {
		s := o.Source
		if o.Message != "" {
			s += " " + strconv.Quote(shorten(o.Message, 30))
		}
		srcs = append(srcs, s)
	}
	return "on (" + strings.Join(srcs, ", ") + ")"
}

// orderText is where an instance sends new payouts, in order ("tcb>acb"),
// and the channels of expected it lacks; "NONE" if no channel takes
// them, "-" from an instance that does not say.
func orderText(in *outlast.InstanceStatus, expected []string) string {
	if in.ChannelOrder == nil {
		return "-"
	}
	out := strings.Join(in.ChannelOrder, ">")
	if out == "" {
		out = "NONE"
	}
	var lacks []string
	for _, name := range expected {
		if !slices.Contains(in.ChannelNames(), name) {
			lacks = append(lacks, name)
		}
	}
	if len(lacks) > 0 {
		out += " (LACKS " + strings.Join(lacks, ", ") + ")"
	}
	return out
}

// dependenciesText is each dependency's health in a few words: "ok" or
// "DOWN", a channel's breaker state ("closed", "OPEN", "half-open",
// "disabled").
func dependenciesText(deps []outlast.DependencyHealth) string {
	if len(deps) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(deps))
	for _, d := range deps {
		state := d.State
		switch {
		case state == "" && d.OK:
			state = "ok"
		case state == "":
			state = "DOWN"
		case !d.OK:
			state = strings.ToUpper(state)
		}
		parts = append(parts, d.Name+" "+state)
	}
	return strings.Join(parts, ", ")
}

// localStatus shows what the instance at --url sees of itself, when the
// database (and so every other instance's heartbeat) cannot be read.
func localStatus(ctx context.Context, api *client.Client, stdout, stderr io.Writer, asJSON bool, cause error) error {
	st, err := api.LocalStatus(ctx)
	if err != nil {
		return explainLocal(api, err)
	}
	fmt.Fprintf(stderr, "The database cannot be read (%s): ONLY THE INSTANCE AT %s IS SHOWN, as it sees itself.\n"+
		"Run this command with --url of each other instance to see it.\n", outlast.ErrorMessage(cause), api.BaseURL())
	if asJSON {
		return printJSON(stdout, st.Raw)
	}
	c := st.Control
	fmt.Fprintf(stdout, "instance %s at %s (only this one: the database is down)\n", c.InstanceID, api.BaseURL())
	fmt.Fprintf(stdout, "  config: version %d", c.AppliedVersion)
	if c.Stale {
		fmt.Fprintf(stdout, ", last confirmed %s ago: STALE, running on the last good config", seconds(c.AgeSeconds))
	}
	fmt.Fprintln(stdout)
	if c.LastError != "" {
		fmt.Fprintf(stdout, "  database: %s\n", shorten(c.LastError, 200))
	}
	maint := "off"
	if c.Maintenance {
		maint = "on (" + sourceName(c.Source) + ")"
		if c.Message != "" {
			maint += ": " + strconv.Quote(c.Message)
		}
	}
	fmt.Fprintf(stdout, "  maintenance: %s\n", maint)
	for _, o := range c.Overrides {
		fmt.Fprintf(stdout, "  override: %s since %s by %s\n", sourceName(o.Source), o.Since.UTC().Format(time.RFC3339), o.Actor)
	}
	if st.Instance != nil {
		fmt.Fprintf(stdout, "  channel order: %s\n", orderText(st.Instance, nil))
		fmt.Fprintf(stdout, "  dependencies: %s\n", dependenciesText(st.Instance.Dependencies))
	}
	return nil
}

func runAdminHistory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin history", "The changes of the config document, newest first: who, when, why, and what changed.", stdout, stderr)
	var admin adminFlags
	admin.register(fs.FlagSet)
	limit := fs.Int("limit", 20, fmt.Sprintf("how many changes, 1 to %d", outlast.ControlHistoryMax))
	api, err := admin.parseNoArgs(fs, args)
	if err != nil {
		return err
	}
	if *limit < 1 || *limit > outlast.ControlHistoryMax {
		return fs.fail("--limit %d: want 1 to %d", *limit, outlast.ControlHistoryMax)
	}
	changes, err := api.ConfigHistory(ctx, *limit)
	if err != nil {
		return explain(api, "read the config history", err)
	}
	if len(changes) == 0 {
		_, err := fmt.Fprintln(stdout, "the config was never changed: it is at version 0, the defaults")
		return err
	}
	for _, ch := range changes {
		fmt.Fprintf(stdout, "version %d  %s  %s\n", ch.Version, ch.At.UTC().Format(time.RFC3339), ch.Actor)
		if ch.Reason != "" {
			fmt.Fprintf(stdout, "  why: %s\n", ch.Reason)
		}
		for _, d := range configDiff(ch.Before, ch.After) {
			fmt.Fprintf(stdout, "  %s\n", d)
		}
	}
	return nil
}

// configDiff says what a change changed, one line a field.
func configDiff(before, after *outlast.ControlConfig) []string {
	if before == nil || after == nil {
		return nil
	}
	var out []string
	if before.Maintenance != after.Maintenance {
		out = append(out, "maintenance: "+maintenanceText(before.Maintenance)+" → "+maintenanceText(after.Maintenance))
	}
	if before.ActiveChannel != after.ActiveChannel {
		out = append(out, fmt.Sprintf("active channel: %q → %q", before.ActiveChannel, after.ActiveChannel))
	}
	if !slices.Equal(before.Fallback, after.Fallback) {
		out = append(out, fmt.Sprintf("fallback: [%s] → [%s]", strings.Join(before.Fallback, ", "), strings.Join(after.Fallback, ", ")))
	}
	names := slices.AppendSeq(slices.Collect(maps.Keys(before.Channels)), maps.Keys(after.Channels))
	slices.Sort(names)
	for _, n := range slices.Compact(names) {
		b, inBefore := before.Channels[n]
		a, inAfter := after.Channels[n]
		switch {
		case !inBefore:
			out = append(out, fmt.Sprintf("channel %s: added, %s", n, enabledText(a.Enabled)))
		case !inAfter:
			out = append(out, fmt.Sprintf("channel %s: removed", n))
		case a != b:
			out = append(out, fmt.Sprintf("channel %s: %s → %s", n, enabledText(b.Enabled), enabledText(a.Enabled)))
		}
	}
	if len(out) == 0 {
		out = append(out, "no setting changed")
	}
	return out
}

func enabledText(on bool) string {
	if on {
		return "enabled"
	}
	return "disabled"
}
