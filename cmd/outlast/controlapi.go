package main

import (
	"context"
	"strconv"

	"github.com/outlast/outlast"
)

// controlConfig reads the config document (GET /admin/v1/config); its
// Version is what a change names in If-Match.
func (c *apiClient) controlConfig(ctx context.Context) (*outlast.ControlConfig, error) {
	var cfg outlast.ControlConfig
	_, err := c.do(ctx, "GET", "/admin/v1/config", nil, nil, &cfg)
	return &cfg, err
}

// putControlConfig replaces the config document if it is still at
// ifVersion (PUT /admin/v1/config with If-Match), saying why, and returns
// what was stored.
func (c *apiClient) putControlConfig(ctx context.Context, cfg *outlast.ControlConfig, ifVersion int64, reason string) (*outlast.ControlConfig, error) {
	var next outlast.ControlConfig
	hdr := map[string]string{"If-Match": strconv.Quote(strconv.FormatInt(ifVersion, 10)), "Outlast-Change-Reason": reason}
	_, err := c.do(ctx, "PUT", "/admin/v1/config", hdr, cfg, &next)
	return &next, err
}

// instances lists every instance's last heartbeat (GET
// /admin/v1/instances).
func (c *apiClient) instances(ctx context.Context) (*instancesView, error) {
	var out instancesView
	_, err := c.do(ctx, "GET", "/admin/v1/instances", nil, nil, &out)
	return &out, err
}

// localStatus is GET /admin/v1/local/status: this instance's control
// plane as it sees it, from memory.
func (c *apiClient) localStatus(ctx context.Context) (*outlast.ControlStatus, error) {
	var out struct {
		Control outlast.ControlStatus `json:"control"`
	}
	_, err := c.do(ctx, "GET", "/admin/v1/local/status", nil, nil, &out)
	return &out.Control, err
}
