package api

import (
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/round"
)

// Metrics are a node's Prometheus metrics. Most are read from the Source
// when scraped (a collector over snapshots, so nothing polls); the rest are
// events the node reports: gossip verdicts on update announcements
// (CountUpdate), applied outcomes (ObserveApplied) and phase changes
// (ObservePhase).
//
//	globalbrain_round                       gauge    round in progress
//	globalbrain_applied_round               gauge    last applied round
//	globalbrain_rounds_applied_total{kind}  counter  outcomes applied by this process (commit, abandon)
//	globalbrain_updates_included_total      counter  updates included in applied commits
//	globalbrain_updates_total{result,reason} counter other members' update announcements (repeats included)
//	                                                 judged by the gossip validator:
//	                                                 accepted, or rejected with the reason (malformed,
//	                                                 author_mismatch, not_member, bad_signature; stale is
//	                                                 ignored without penalty and counted as rejected)
//	globalbrain_raft_refused_total{reason}  counter  Raft messages refused at the Raft boundary: unknown_sender,
//	                                                 unknown_type, local_only, no_term, learner_request, bad_commit, bad_append,
//	                                                 bad_snapshot, panic (raft panicked: the member halted)
//	globalbrain_round_events_total{event}   counter  the round machine's counters: stale_entry,
//	                                                 invalid_entry, rejected_message, ignored_message, reproposal,
//	                                                 excluded_update (an update blob that failed the edge checks),
//	                                                 forced_campaign (an election forced against an idle leader)
//	globalbrain_phase_seconds{phase}        histogram time spent in each phase of a round
//	globalbrain_bytes_in_total              counter  payload bytes received over the stream protocols
//	globalbrain_bytes_out_total             counter  payload bytes sent
//	globalbrain_messages_cut_total{protocol,reason} counter what the transport refused, dropped or cut off
//	globalbrain_peers_connected             gauge    members connected, self excluded
//	globalbrain_members                     gauge    applied membership size
//	globalbrain_leader                      gauge    1 if this member leads
//	globalbrain_alarms                      gauge    alarms raised
//	globalbrain_halted                      gauge    1 if the member halted
//	globalbrain_accuracy                    gauge    test accuracy of the last evaluated model
//	globalbrain_loss                        gauge    test loss of the last evaluated model
//	globalbrain_accuracy_round              gauge    the round of that model
//	globalbrain_privacy_epsilon_spent       gauge    epsilon this node spent (at the manifest's delta), over every run
//	globalbrain_privacy_epsilon_ceiling     gauge    this node's privacy budget
//	globalbrain_privacy_rounds_charged_total counter rounds charged to the budget, over every run
//	globalbrain_privacy_declines_total      counter  rounds this process declined for the budget
//	globalbrain_privacy_exhausted           gauge    1 once the node declines for its budget
//	                                                 (the privacy metrics only under a mode that keeps a budget)
type Metrics struct {
	updates  *prometheus.CounterVec
	applied  *prometheus.CounterVec
	included prometheus.Counter
	phase    *prometheus.HistogramVec

	mu        sync.Mutex
	lastRound uint64
	lastPhase string
	since     time.Time
}

// PhaseBuckets are the buckets of globalbrain_phase_seconds.
var PhaseBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// NewMetrics registers the node's event metrics on reg (NewServer adds the
// ones read from the node when scraped), so the transport and the node can
// feed them before the API exists.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "globalbrain_updates_total",
			Help: "Other members' update announcements (repeats included) judged by the gossip validator, by result (accepted, rejected) and reason.",
		}, []string{"result", "reason"}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "globalbrain_rounds_applied_total",
			Help: "Round outcomes applied by this process, by kind (commit, abandon).",
		}, []string{"kind"}),
		included: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "globalbrain_updates_included_total",
			Help: "Updates included in the commits this process applied.",
		}),
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "globalbrain_phase_seconds",
			Help:    "Time spent in each phase of a round (training, collecting, closing).",
			Buckets: PhaseBuckets,
		}, []string{"phase"}),
	}
	reg.MustRegister(m.updates, m.applied, m.included, m.phase)
	return m
}

// Update results of CountUpdate.
const (
	ResultAccepted = "accepted"
	ResultRejected = "rejected"
)

// CountUpdate counts one update announcement judged by the gossip
// validator: accepted, or rejected for reason.
func (m *Metrics) CountUpdate(result, reason string) {
	m.updates.WithLabelValues(result, reason).Inc()
}

// ObserveApplied counts an applied outcome and the updates it included.
func (m *Metrics) ObserveApplied(a node.Applied) {
	if a.Entry == nil {
		return
	}
	m.applied.WithLabelValues(string(a.Entry.Kind)).Inc()
	m.included.Add(float64(len(a.Entry.Included)))
}

// ObservePhase notes the node's state at now; when the round or the phase
// has changed since the last call, the time spent in the previous phase is
// observed. Call it periodically (every tick).
func (m *Metrics) ObservePhase(st node.Status, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.since.IsZero() {
		m.lastRound, m.lastPhase, m.since = st.Round, st.Phase, now
		return
	}
	if st.Round == m.lastRound && st.Phase == m.lastPhase {
		return
	}
	m.phase.WithLabelValues(m.lastPhase).Observe(now.Sub(m.since).Seconds())
	m.lastRound, m.lastPhase, m.since = st.Round, st.Phase, now
}

// collector turns the Source's snapshots into metrics at scrape time.
type collector struct{ src Source }

var (
	descRound        = prometheus.NewDesc("globalbrain_round", "Round in progress.", nil, nil)
	descApplied      = prometheus.NewDesc("globalbrain_applied_round", "Last applied round.", nil, nil)
	descMembers      = prometheus.NewDesc("globalbrain_members", "Applied membership size.", nil, nil)
	descLeader       = prometheus.NewDesc("globalbrain_leader", "1 if this member is the Raft leader.", nil, nil)
	descAlarms       = prometheus.NewDesc("globalbrain_alarms", "Alarms raised since the node started.", nil, nil)
	descHalted       = prometheus.NewDesc("globalbrain_halted", "1 if the member halted.", nil, nil)
	descEvents       = prometheus.NewDesc("globalbrain_round_events_total", "The round machine's counters: stale and invalid entries, rejected and ignored messages, re-proposals, excluded updates, forced campaigns.", []string{"event"}, nil)
	descPeers        = prometheus.NewDesc("globalbrain_peers_connected", "Members connected to this node (itself excluded).", nil, nil)
	descBytesIn      = prometheus.NewDesc("globalbrain_bytes_in_total", "Payload bytes received over the stream protocols.", nil, nil)
	descBytesOut     = prometheus.NewDesc("globalbrain_bytes_out_total", "Payload bytes sent over the stream protocols.", nil, nil)
	descCut          = prometheus.NewDesc("globalbrain_messages_cut_total", "What the transport refused, dropped or cut off (messages, streams, connections, dials), by protocol and reason.", []string{"protocol", "reason"}, nil)
	descAccuracy     = prometheus.NewDesc("globalbrain_accuracy", "Test accuracy of the last evaluated global model.", nil, nil)
	descLoss         = prometheus.NewDesc("globalbrain_loss", "Test loss of the last evaluated global model.", nil, nil)
	descAccuracyRnd  = prometheus.NewDesc("globalbrain_accuracy_round", "Round of the last evaluated global model.", nil, nil)
	descRaftRefused  = prometheus.NewDesc("globalbrain_raft_refused_total", "Raft messages from other members refused at the Raft boundary before raft saw them, by reason (round.Raft* reasons).", []string{"reason"}, nil)
	descEpsSpent     = prometheus.NewDesc("globalbrain_privacy_epsilon_spent", "Epsilon this node spent at the manifest's delta, over every run of its store.", nil, nil)
	descEpsCeiling   = prometheus.NewDesc("globalbrain_privacy_epsilon_ceiling", "This node's privacy budget: the most epsilon it will spend.", nil, nil)
	descPrivRounds   = prometheus.NewDesc("globalbrain_privacy_rounds_charged_total", "Rounds charged to this node's privacy budget, over every run of its store.", nil, nil)
	descPrivDeclines = prometheus.NewDesc("globalbrain_privacy_declines_total", "Rounds this process declined because its privacy budget would be exceeded.", nil, nil)
	descPrivExhaust  = prometheus.NewDesc("globalbrain_privacy_exhausted", "1 once this node declines rounds for its privacy budget.", nil, nil)
	collectorMetrics = []*prometheus.Desc{descRound, descApplied, descMembers, descLeader, descAlarms, descHalted, descEvents, descRaftRefused,
		descPeers, descBytesIn, descBytesOut, descCut, descAccuracy, descLoss, descAccuracyRnd,
		descEpsSpent, descEpsCeiling, descPrivRounds, descPrivDeclines, descPrivExhaust}
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range collectorMetrics {
		ch <- d
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

func boolean(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Status()
	gauge(ch, descRound, float64(st.Round))
	gauge(ch, descApplied, float64(st.Applied))
	gauge(ch, descMembers, float64(st.Members))
	gauge(ch, descLeader, boolean(st.Leader))
	gauge(ch, descAlarms, float64(len(st.Alarms)))
	gauge(ch, descHalted, boolean(st.Halted != ""))
	k := st.Counters
	for _, e := range []struct {
		name string
		v    uint64
	}{
		{"stale_entry", k.StaleEntries}, {"invalid_entry", k.InvalidEntries}, {"rejected_message", k.RejectedMessages},
		{"ignored_message", k.IgnoredMessages}, {"reproposal", k.Reproposals}, {"excluded_update", k.ExcludedUpdates},
		{"forced_campaign", k.ForcedCampaigns},
	} {
		counter(ch, descEvents, float64(e.v), e.name)
	}
	for _, reason := range []string{round.RaftUnknownSender, round.RaftUnknownType, round.RaftLocalOnly, round.RaftNoTerm, round.RaftLearner,
		round.RaftBadCommit, round.RaftBadAppend, round.RaftBadSnapshot, round.RaftPanic} {
		counter(ch, descRaftRefused, float64(k.RaftRefused[reason]), reason)
	}
	if p := st.Privacy; p != nil {
		gauge(ch, descEpsSpent, p.Spent)
		gauge(ch, descEpsCeiling, p.Ceiling)
		counter(ch, descPrivRounds, float64(p.Rounds))
		counter(ch, descPrivDeclines, float64(p.Declines))
		gauge(ch, descPrivExhaust, boolean(p.Exhausted))
	}
	connected := 0
	for _, p := range c.src.peers(st) {
		if p.Connected && !p.Self {
			connected++
		}
	}
	gauge(ch, descPeers, float64(connected))
	if c.src.Traffic != nil {
		t := c.src.Traffic()
		counter(ch, descBytesIn, float64(t.BytesIn))
		counter(ch, descBytesOut, float64(t.BytesOut))
		keys := make([]string, 0, len(t.Cut))
		for key := range t.Cut {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		for _, key := range keys {
			proto, reason, ok := strings.Cut(key, "/")
			if !ok {
				proto, reason = key, "unknown"
			}
			counter(ch, descCut, float64(t.Cut[key]), proto, reason)
		}
	}
	if c.src.Accuracy != nil {
		if a := c.src.Accuracy(); a != nil {
			gauge(ch, descAccuracy, a.Accuracy)
			gauge(ch, descLoss, a.Loss)
			gauge(ch, descAccuracyRnd, float64(a.Round))
		}
	}
}
