package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
)

const adminUsage = `Usage:
  outlast admin maintenance on|off [--message TEXT] [--reason TEXT] [--wait 10s]
  outlast admin maintenance on|off --local [--message TEXT] --url http://INSTANCE
  outlast admin channel use NAME [--reason TEXT] [--wait 10s]
  outlast admin channel enable|disable NAME [--reason TEXT] [--wait 10s]
  outlast admin status [--json]
  outlast admin history [--limit N]

Operate the control plane of a running service through its admin API.

A change edits the config document every instance follows: it is read,
changed and written back only if nobody changed it since (If-Match); a
change made meanwhile by another operator is kept, and this one is applied
again on top of it. Then the command waits (--wait) until every instance
seen recently runs the new version, and exits 1 if some do not in time.

With the database down the config cannot change: 'maintenance on --local'
switches one instance (--url) alone, with nothing but that instance; so
does the file given to its serve --override-file.

Every command takes --url (default http://127.0.0.1:8080) and the admin
token (--admin-token, --admin-token-file, or the one serve generated into
--data-dir). Run 'outlast admin <command> --help' for its flags.
`

func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runSubcommand(ctx, "admin", adminUsage, map[string]command{
		"maintenance": runAdminMaintenance,
		"channel":     runAdminChannel,
		"status":      runAdminStatus,
		"history":     runAdminHistory,
	}, args, stdout, stderr)
}

// Bounds of a config change made from the command line.
const (
	// configPutAttemptsMax bounds the read-change-write rounds one change
	// makes while other operators' changes keep winning.
	configPutAttemptsMax = 5
	// applyWaitDefault is how long a change waits for the instances.
	applyWaitDefault = 10 * time.Second
	// applyPollInterval spaces the reads of the instances while waiting.
	applyPollInterval = 200 * time.Millisecond
)

// changeFlags are the flags of a command that changes the config document.
type changeFlags struct {
	admin  adminFlags
	reason string
	wait   time.Duration
}

func (c *changeFlags) register(fs *flag.FlagSet) {
	c.admin.register(fs)
	fs.StringVar(&c.reason, "reason", "", "why, kept with the change in the config history; default the command itself")
	fs.DurationVar(&c.wait, "wait", applyWaitDefault, "how long to wait for every instance seen recently to apply the change (exit 1 if some do not); 0 not to wait")
}

// change runs one config change: edit applied to the current document,
// written back, then waited for.
func (c *changeFlags) change(ctx context.Context, api *client.Client, stdout io.Writer, what string, edit configEdit) error {
	reason := c.reason
	if reason == "" {
		reason = "outlast admin " + what
	}
	ch := &configChanger{api: api, out: stdout}
	next, changed, err := ch.change(ctx, reason, edit)
	if err != nil {
		return err
	}
	if changed {
		fmt.Fprintf(stdout, "config version %d: %s\n", next.Version, what)
	} else {
		fmt.Fprintf(stdout, "config version %d already says so: nothing changed\n", next.Version)
	}
	return ch.waitApplied(ctx, next.Version, c.wait)
}

// configEdit changes a config document in place and says whether it
// changed anything; an error refuses the change.
type configEdit func(c *outlast.ControlConfig) (changed bool, err error)

// configChanger reads, edits and writes the config document.
type configChanger struct {
	api *client.Client
	out io.Writer
	// beforePut, if set, runs between the read and the write of each
	// attempt: the test seam for a concurrent change.
	beforePut func(attempt int)
}

// change applies edit to the current document and writes it with If-Match.
// If another change wins meanwhile (412), it reads the new document and
// applies edit to it again, never writing back what it read before, up to
// configPutAttemptsMax times. It returns the document in force and whether
// this change made it.
func (ch *configChanger) change(ctx context.Context, reason string, edit configEdit) (*outlast.ControlConfig, bool, error) {
	for attempt := 1; ; attempt++ {
		cur, err := ch.api.Config(ctx)
		if err != nil {
			return nil, false, explain(ch.api, "read the config", err)
		}
		changed, err := edit(cur)
		if err != nil || !changed {
			return cur, false, err
		}
		if ch.beforePut != nil {
			ch.beforePut(attempt)
		}
		next, err := ch.api.PutConfig(ctx, cur, cur.Version, reason)
		if client.Status(err) == 412 && attempt < configPutAttemptsMax {
			fmt.Fprintf(ch.out, "the config changed since version %d was read (another operator); applying this change to the new version\n", cur.Version)
			continue
		}
		if err != nil {
			return nil, false, explain(ch.api, "write the config", err)
		}
		return next, true, nil
	}
}

// explain turns an API or network failure into what the operator can do
// about it.
func explain(api *client.Client, doing string, err error) error {
	var ue *url.Error
	switch client.Status(err) {
	case 401:
		return fmt.Errorf("could not %s: the admin token was refused (%s): give the service's token with --admin-token or --admin-token-file", doing, outlast.ErrorMessage(err))
	case 412:
		return fmt.Errorf("could not %s: other changes kept winning (%d attempts); run the command again", doing, configPutAttemptsMax)
	case 503:
		return fmt.Errorf("could not %s: the service cannot reach its database (%s).\n"+
			"The config cannot change until it can. To stop payouts now without the database, switch each instance:\n"+
			"  outlast admin maintenance on --local --url http://INSTANCE\n"+
			"or create the file given to its serve --override-file", doing, outlast.ErrorMessage(err))
	}
	if errors.As(err, &ue) {
		return fmt.Errorf("could not %s: no answer from %s (%v): is the service running there? (--url)", doing, api.BaseURL(), ue.Err)
	}
	return fmt.Errorf("could not %s: %w", doing, err)
}

// waitApplied waits up to wait for every instance seen recently to run
// version (or a later one), saying which did as they do. It is an error
// if some did not in time.
func (ch *configChanger) waitApplied(ctx context.Context, version int64, wait time.Duration) error {
	if wait <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	t := time.NewTicker(applyPollInterval)
	defer t.Stop()
	said := map[string]bool{}
	var last client.Instances
	for {
		list, err := ch.api.Instances(ctx)
		if err == nil {
			last = *list
			if pending := ch.reportApplied(*list, version, said); pending == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err != nil && last.Instances == nil {
				return explain(ch.api, "see which instances applied it", err)
			}
			return ch.notApplied(last, version, wait)
		case <-t.C:
		}
	}
}

// reportApplied prints, once each, the instances that run version and
// those skipped as not seen recently; it returns how many live instances
// do not run it yet.
func (ch *configChanger) reportApplied(list client.Instances, version int64, said map[string]bool) (pending int) {
	live := 0
	for _, in := range list.Instances {
		switch {
		case said[in.ID]:
			if !in.Stale {
				live++
			}
		case in.Stale:
			said[in.ID] = true
			fmt.Fprintf(ch.out, "  skipped %s: not seen for %s (it may be gone)\n", in.Name(), seconds(in.SeenAgoSeconds))
		case in.AppliedVersion >= version:
			said[in.ID] = true
			live++
			fmt.Fprintf(ch.out, "  applied by %s%s\n", in.Name(), overrideNote(&in.InstanceStatus))
		default:
			live++
			pending++
		}
	}
	switch {
	case live == 0:
		fmt.Fprintln(ch.out, "no instance has been seen recently: there is none to wait for")
	case pending == 0:
		fmt.Fprintf(ch.out, "every live instance (%d) runs version %d\n", live, version)
	}
	return pending
}

// overrideNote says that an instance stays in maintenance by a
// break-glass override whatever the config says, and how to clear it.
func overrideNote(in *outlast.InstanceStatus) string {
	var notes []string
	for _, o := range in.Overrides {
		switch o.Source {
		case outlast.OverrideLocal:
			notes = append(notes, fmt.Sprintf("local switch (clear: outlast admin maintenance off --local --url http://%s)", in.Addr))
		case outlast.OverrideFile:
			notes = append(notes, fmt.Sprintf("override file %s (clear: delete it)", o.Actor))
		}
	}
	if len(notes) == 0 {
		return ""
	}
	return "; still in maintenance by its " + strings.Join(notes, " and ")
}

// notApplied lists the live instances that did not run version in time.
func (ch *configChanger) notApplied(list client.Instances, version int64, wait time.Duration) error {
	n := 0
	for _, in := range list.Instances {
		if !in.Stale && in.AppliedVersion < version {
			n++
			fmt.Fprintf(ch.out, "  NOT applied by %s: still at version %d (seen %s ago)\n", in.Name(), in.AppliedVersion, seconds(in.SeenAgoSeconds))
		}
	}
	return fmt.Errorf("%s did not apply version %d within %s: see 'outlast admin status' (is its database reachable?)", plural(n, "instance"), version, wait)
}

func seconds(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Second).String()
}

func runAdminMaintenance(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin maintenance", "Arguments: on|off\n\n"+
		"Stop (on) or resume (off) taking new payouts on every instance, through the config document;\n"+
		"reads, partner notifications and payouts already taken go on. With --local, switch only the\n"+
		"instance at --url, through its break-glass endpoint: that works with the database, the log and\n"+
		"Redis all down, survives a restart of the instance, and holds it in maintenance whatever the\n"+
		"config says until 'maintenance off --local' clears it.", stdout, stderr)
	var cf changeFlags
	cf.register(fs.FlagSet)
	message := fs.String("message", "", "what refused payouts are told (on only); default \"payouts are paused for maintenance\"")
	retryAfter := fs.Duration("retry-after", 0, fmt.Sprintf("the Retry-After refused payouts get (on only), up to %ds; default the config's, or %s", outlast.MaintenanceRetryAfterMax, outlast.MaintenanceRetryAfterDefault))
	local := fs.Bool("local", false, "switch only the instance at --url, without the database (break-glass)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || (pos[0] != "on" && pos[0] != "off") {
		return fs.fail("give on or off (got %q)", strings.Join(pos, " "))
	}
	on := pos[0] == "on"
	if !on && (*message != "" || *retryAfter != 0) {
		return fs.fail("--message and --retry-after go with on")
	}
	if *retryAfter < 0 || *retryAfter > outlast.MaintenanceRetryAfterMax*time.Second || *retryAfter%time.Second != 0 {
		return fs.fail("--retry-after %s: want whole seconds, at most %ds", *retryAfter, outlast.MaintenanceRetryAfterMax)
	}
	api, err := cf.admin.client()
	if err != nil {
		return fs.fail("%v", err)
	}
	if *local {
		if cf.reason != "" || *retryAfter != 0 {
			return fs.fail("--local changes no config: --reason and --retry-after do not apply (the instance logs who switched it)")
		}
		return localMaintenance(ctx, api, stdout, on, *message)
	}
	return cf.change(ctx, api, stdout, "maintenance "+pos[0], func(c *outlast.ControlConfig) (bool, error) {
		m := c.Maintenance
		m.On, m.Message = on, *message
		if *retryAfter > 0 {
			m.RetryAfterSeconds = int(*retryAfter / time.Second)
		}
		changed := m != c.Maintenance
		c.Maintenance = m
		return changed, nil
	})
}

// localMaintenance switches the break-glass maintenance of one instance.
func localMaintenance(ctx context.Context, api *client.Client, stdout io.Writer, on bool, message string) error {
	st, warning, err := api.SetLocalMaintenance(ctx, on, message)
	if err != nil {
		return explainLocal(api, err)
	}
	who := st.InstanceID + " at " + api.BaseURL()
	switch {
	case on:
		fmt.Fprintf(stdout, "instance %s: maintenance on (local switch): it refuses new payouts until\n  outlast admin maintenance off --local --url %s\n", who, api.BaseURL())
		fmt.Fprintln(stdout, "Only this instance is switched: switch the others too, or use the config once the database is back.")
	case st.Maintenance:
		fmt.Fprintf(stdout, "instance %s: local switch cleared, but still in maintenance by the %s\n", who, sourceName(st.Source))
	default:
		fmt.Fprintf(stdout, "instance %s: local switch cleared; it takes new payouts\n", who)
	}
	if warning != "" {
		fmt.Fprintf(stdout, "warning from the instance: %s\n", warning)
	}
	return nil
}

// explainLocal is explain for the break-glass endpoint, which needs no
// database.
func explainLocal(api *client.Client, err error) error {
	if client.Status(err) == 404 {
		return fmt.Errorf("the service at %s has no break-glass endpoint (%s): is it an outlast serve?", api.BaseURL(), outlast.ErrorMessage(err))
	}
	return explain(api, "switch the instance", err)
}

// sourceName says what holds an instance in maintenance.
func sourceName(source string) string {
	switch source {
	case outlast.OverrideLocal:
		return "local switch"
	case outlast.OverrideFile:
		return "override file"
	}
	return "config"
}

func runAdminChannel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = `Usage:
  outlast admin channel use NAME [--reason TEXT] [--wait 10s]
  outlast admin channel enable NAME
  outlast admin channel disable NAME

use makes NAME the channel new payouts go to first; the one it replaces goes
to the front of the fallback order. disable keeps new payouts off a channel
(it keeps its place in the fallback order); enable lets them back.

Run 'outlast admin channel use --help' for flags.
`
	subs := map[string]command{}
	for _, verb := range []string{"use", "enable", "disable"} {
		subs[verb] = func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			return runChannelChange(ctx, verb, args, stdout, stderr)
		}
	}
	return runSubcommand(ctx, "admin channel", usage, subs, args, stdout, stderr)
}

var channelSummaries = map[string]string{
	"use": "Arguments: NAME\n\nMake NAME the channel new payouts go to first. It must be enabled; the active channel it\n" +
		"replaces goes to the front of the fallback order (if the config names none, the channel every\n" +
		"instance seen recently sends new payouts to, by its serve --active-channel). Refused if no\n" +
		"instance seen recently serves NAME (a typo would route nothing), unless --force.",
	"enable":  "Arguments: NAME\n\nLet new payouts go to channel NAME again.",
	"disable": "Arguments: NAME\n\nKeep new payouts off channel NAME; it keeps its place in the fallback order. The active\nchannel cannot be disabled: 'outlast admin channel use' another one first.",
}

func runChannelChange(ctx context.Context, verb string, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin channel "+verb, channelSummaries[verb], stdout, stderr)
	var cf changeFlags
	cf.register(fs.FlagSet)
	force := false
	if verb != "disable" {
		fs.BoolVar(&force, "force", false, "name a channel no instance seen recently serves")
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fs.fail("give one channel name (got %q)", strings.Join(pos, " "))
	}
	name := pos[0]
	if !outlast.ValidID(name) {
		return fs.fail("channel %q: a channel name must be %s", name, outlast.IDRule)
	}
	api, err := cf.admin.client()
	if err != nil {
		return fs.fail("%v", err)
	}
	// Best effort: without the heartbeats the change is made all the same.
	fresh := freshInstances(ctx, api)
	if !force && verb != "disable" {
		if err := servedSomewhere(fresh, name); err != nil {
			return err
		}
	}
	current := outlast.AgreedChannel(fresh)
	var noneBefore bool
	edit := map[string]configEdit{"use": useChannel(name, current, &noneBefore), "enable": enableChannel(name, true), "disable": enableChannel(name, false)}[verb]
	if err := cf.change(ctx, api, stdout, "channel "+verb+" "+name, edit); err != nil {
		return err
	}
	switch {
	case !noneBefore:
	case current == "":
		fmt.Fprintln(stdout, "note: the config named no active channel before, and the instances seen recently do not all send new payouts to one channel (each uses its serve --active-channel), so none went to the fallback order")
	case current != name:
		fmt.Fprintf(stdout, "the config named no active channel before: the instances sent new payouts to %s (their serve --active-channel), now first in the fallback order\n", current)
	}
	return nil
}

// useChannel makes name the active channel; the channel it replaces (the
// config's active one or, if it names none, current, where the instances
// send new payouts now) goes first in the fallback order. noneBefore
// says it made the change to a config that named no active channel.
func useChannel(name, current string, noneBefore *bool) configEdit {
	return func(c *outlast.ControlConfig) (bool, error) {
		*noneBefore = false
		ch, ok := c.Channels[name]
		switch {
		case ok && !ch.Enabled:
			return false, fmt.Errorf("channel %s is disabled: enable it first (outlast admin channel enable %s)", name, name)
		case c.ActiveChannel == name:
			return false, nil
		}
		*noneBefore = c.ActiveChannel == ""
		c.Activate(name, current)
		return true, nil
	}
}

// enableChannel enables or disables name.
func enableChannel(name string, enabled bool) configEdit {
	return func(c *outlast.ControlConfig) (bool, error) {
		ch, ok := c.Channels[name]
		switch {
		case !enabled && c.ActiveChannel == name:
			return false, fmt.Errorf("channel %s is the active channel: make another one active first (outlast admin channel use OTHER)", name)
		case !enabled && !ok:
			// Not in the config: named, so that it stays off.
		case ch.Enabled == enabled:
			return false, nil
		}
		setChannel(c, name, enabled)
		return true, nil
	}
}

func setChannel(c *outlast.ControlConfig, name string, enabled bool) {
	if c.Channels == nil {
		c.Channels = map[string]outlast.ChannelConfig{}
	}
	c.Channels[name] = outlast.ChannelConfig{Enabled: enabled}
}

// freshInstances returns the heartbeats of the instances seen recently,
// or none if they cannot be read.
func freshInstances(ctx context.Context, api *client.Client) []*outlast.InstanceStatus {
	list, err := api.Instances(ctx)
	if err != nil {
		return nil
	}
	return list.Fresh()
}

// servedSomewhere refuses a channel that none of the instances seen
// recently serves; with none seen, it lets the change through.
func servedSomewhere(fresh []*outlast.InstanceStatus, name string) error {
	var have []string
	for _, in := range fresh {
		for _, ch := range in.ChannelNames() {
			if !slices.Contains(have, ch) {
				have = append(have, ch)
			}
		}
	}
	if len(have) == 0 || slices.Contains(have, name) {
		return nil
	}
	slices.Sort(have)
	return fmt.Errorf("no instance seen recently serves channel %s (they serve %s): check the name, or give --force", name, strings.Join(have, ", "))
}
