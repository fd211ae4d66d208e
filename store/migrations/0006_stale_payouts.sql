-- The reconciler asks for the payouts of one status least recently
-- changed (outlast.StaleService): dispatched ones waiting for their final
-- notification, pending ones waiting for dispatch.
CREATE INDEX payouts_status_updated ON payouts (status, updated_ns, id);
