-- The channels that definitively refused a payout, oldest first, as
-- comma-separated names (valid ids: no commas): the dispatcher moves a
-- refused payout to a channel not among them
-- (outlast.OutboxService.RerouteDispatch) and fails it only when none is
-- left.
ALTER TABLE outbox ADD COLUMN refused TEXT NOT NULL DEFAULT '';
