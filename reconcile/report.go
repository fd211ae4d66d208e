package reconcile

import (
	"context"
	"log/slog"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/backoff"
)

// ReportEveryDefault is the periodic discrepancy report's interval when
// ReportConfig.Every is left at zero: each run reads every payout and
// every record of each bank, so it runs minutes apart, not seconds.
const ReportEveryDefault = 10 * time.Minute

// ReportConfig configures a Reporter. Ledger, Channels and Records are
// required.
type ReportConfig struct {
	Ledger RepairLedger
	// Channels names the channels to compare, as they stand at each run.
	Channels func() []string
	// Records fetches every record a channel's bank holds.
	Records func(ctx context.Context, channel string) ([]outlast.PartnerRecord, error)
	Every   time.Duration  // if <= 0, ReportEveryDefault
	Logger  *slog.Logger   // if nil, slog.Default()
	Rand    func() float64 // jitter in [0, 1); if nil, none
}

// Reporter runs `outlast reconcile` by itself: every Every it compares
// the ledger with each bank's records (Repair), repairs what is safe and
// files the rest as exceptions, so a gap the reconciler cannot see — a
// bank that paid a payout failed here, a double payment, a record
// Outlast never made — reaches a human without anyone running a command.
// Several instances may each run one: repairs are no-ops the second time
// and an exception is filed once by its key.
type Reporter struct{ cfg ReportConfig }

// NewReporter returns a Reporter for cfg.
func NewReporter(cfg ReportConfig) *Reporter {
	if cfg.Every <= 0 {
		cfg.Every = ReportEveryDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Rand == nil {
		cfg.Rand = func() float64 { return 0.5 }
	}
	return &Reporter{cfg: cfg}
}

// Run runs a report every Every (give or take a fifth) until ctx is done.
func (r *Reporter) Run(ctx context.Context) error {
	for {
		if !backoff.Sleep(ctx, time.Duration(float64(r.cfg.Every)*(0.8+0.4*r.cfg.Rand()))) {
			return ctx.Err()
		}
		r.RunOnce(ctx)
	}
}

// RunOnce compares every channel once and returns the reports of those
// it could compare; a bank whose records cannot be read is logged,
// counted and tried again next run.
func (r *Reporter) RunOnce(ctx context.Context) []*RepairReport {
	var reps []*RepairReport
	for _, ch := range r.cfg.Channels() {
		rep, err := r.one(ctx, ch)
		if err != nil {
			if ctx.Err() == nil {
				reportRunsTotal.WithLabelValues(ch, "error").Inc()
				r.cfg.Logger.Warn("discrepancy report failed; trying again next run", "channel", ch, "err", err)
			}
			continue
		}
		reps = append(reps, rep)
	}
	return reps
}

func (r *Reporter) one(ctx context.Context, ch string) (*RepairReport, error) {
	records, err := r.cfg.Records(ctx, ch)
	if err != nil {
		return nil, err
	}
	rep, err := Repair(ctx, r.cfg.Ledger, ch, records, false)
	if err != nil {
		return nil, err
	}
	result := "ok"
	if !rep.OK() {
		result = "for_human"
	}
	reportRunsTotal.WithLabelValues(ch, result).Inc()
	reportLastSuccess.WithLabelValues(ch).SetToCurrentTime()
	for state, n := range map[string]int{"for_human": len(rep.ForHuman), "in_flight": len(rep.InFlight),
		"settled": len(rep.Settled), "repaired": rep.Repaired()} {
		reportDiscrepancies.WithLabelValues(ch, state).Set(float64(n))
	}
	log := r.cfg.Logger.With("channel", ch, "records", rep.Records, "repaired", rep.Repaired(),
		"for_human", len(rep.ForHuman), "filed", rep.Filed, "in_flight", len(rep.InFlight))
	switch {
	case rep.Filed > 0:
		log.Warn("discrepancy report filed exceptions for a human: see outlast exceptions")
	case rep.Repaired() > 0:
		log.Info("discrepancy report repaired payouts from the bank's records")
	}
	return rep, nil
}
