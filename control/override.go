package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/outlast/outlast"
)

// overrideFileBytesMax bounds what is read of the override file.
const overrideFileBytesMax = 64 << 10

// overrideFile is the override file's JSON. Every field is optional.
type overrideFile struct {
	// Maintenance false clears the override without deleting the file;
	// absent, the file's presence means maintenance.
	Maintenance *bool  `json:"maintenance"`
	Message     string `json:"message"`
}

// ParseOverride reads the override file's content: whether it holds the
// instance in maintenance, and with which message. An empty file (touch)
// means maintenance; so does JSON such as {"message": "bank outage"};
// {"maintenance": false} does not. Content that is not such JSON is an
// error, and the caller holds maintenance: a break-glass file that cannot
// be read might say stop.
func ParseOverride(b []byte) (on bool, message string, err error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return true, "", nil
	}
	var f overrideFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return true, "", fmt.Errorf(`want empty, or JSON like {"maintenance": true, "message": "…"}: %w`, err)
	}
	if f.Maintenance != nil && !*f.Maintenance {
		return false, "", nil
	}
	m := outlast.ControlConfig{Maintenance: outlast.Maintenance{On: true, Message: f.Message}}
	if err := m.Validate(); err != nil {
		return true, "", err
	}
	return true, f.Message, nil
}

// overrideLoop re-reads the override file every OverrideInterval.
func (c *Client) overrideLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.OverrideInterval)
	defer t.Stop()
	for {
		c.ReadOverrideFile()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ReadOverrideFile reads the override file now and applies what it says.
// Run does it every OverrideInterval.
func (c *Client) ReadOverrideFile() {
	path := c.cfg.OverrideFile
	b, err := readLimited(path)
	var next *outlast.Override
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.fileErr = ""
	case err != nil:
		next = &outlast.Override{Source: outlast.OverrideFile, Actor: path}
		c.logOnce(path, "override file unreadable; holding maintenance", err)
	default:
		on, msg, perr := ParseOverride(b)
		if perr != nil {
			c.logOnce(path, "override file not understood; holding maintenance", perr)
		} else {
			c.fileErr = ""
		}
		if on {
			next = &outlast.Override{Source: outlast.OverrideFile, Message: msg, Actor: path}
		}
	}
	c.mu.Lock()
	prev := c.file
	changed := (prev == nil) != (next == nil) || (prev != nil && prev.Message != next.Message)
	if next != nil {
		next.Since = c.cfg.Now().UTC()
		if prev != nil {
			next.Since = prev.Since
		}
	}
	c.file = next
	c.mu.Unlock()
	if !changed {
		return
	}
	if next != nil {
		c.log.Warn("break-glass maintenance on: override file", "file", path, "message", next.Message)
	} else {
		c.log.Warn("break-glass override file cleared", "file", path)
	}
	c.publishOverrides()
	signal(c.beat)
}

// logOnce logs a problem with the override file when it first appears,
// not every second.
func (c *Client) logOnce(path, msg string, err error) {
	if text := err.Error(); text != c.fileErr {
		c.fileErr = text
		c.log.Error(msg, "file", path, "err", err)
	}
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, overrideFileBytesMax+1))
	if err != nil {
		return nil, err
	}
	if len(b) > overrideFileBytesMax {
		return nil, fmt.Errorf("larger than %d bytes", overrideFileBytesMax)
	}
	return b, nil
}

// SetLocal turns this instance's break-glass maintenance on (with
// message) or off, and returns the status that follows. It works with
// every dependency down: it changes memory, and the state file when one
// is configured (an error writing it is returned after the switch took
// effect, so the caller can say the switch will not survive a restart).
func (c *Client) SetLocal(on bool, message, actor string) (outlast.ControlStatus, error) {
	if on {
		m := outlast.ControlConfig{Maintenance: outlast.Maintenance{On: true, Message: message}}
		if err := m.Validate(); err != nil {
			return c.Status(), err
		}
	}
	c.setMu.Lock()
	defer c.setMu.Unlock()
	var next *outlast.Override
	if on {
		next = &outlast.Override{Source: outlast.OverrideLocal, Message: message, Since: c.cfg.Now().UTC(), Actor: actor}
	}
	c.mu.Lock()
	prev := c.local
	if next != nil && prev != nil && prev.Message == message {
		next.Since = prev.Since // the same switch again
	}
	c.local = next
	c.mu.Unlock()
	if next != nil {
		c.log.Warn("break-glass maintenance on: local switch", "by", actor, "message", message)
	} else if prev != nil {
		c.log.Warn("break-glass local switch cleared", "by", actor)
	}
	c.publishOverrides()
	signal(c.beat)
	var err error
	if c.cfg.StateFile != "" {
		if err = writeState(c.cfg.StateFile, next); err != nil {
			c.log.Error("break-glass state not saved; it will not survive a restart", "file", c.cfg.StateFile, "err", err)
			err = outlast.Unavailable(err, 0, "the switch is in force, but could not be saved to %s: it will not survive a restart", c.cfg.StateFile)
		}
	}
	return c.Status(), err
}

// readState reads the local override kept in path; nil if there is none.
func readState(path string) (*outlast.Override, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var o outlast.Override
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, err
	}
	o.Source = outlast.OverrideLocal
	return &o, nil
}

// writeState keeps o in path (fsync'd, renamed into place), or removes
// path if o is nil.
func writeState(path string, o *outlast.Override) error {
	if o == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return syncDir(filepath.Dir(path))
	}
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
