package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/round"
)

var consortium = [32]byte{1, 2, 3}

// members returns n identities sorted by peer ID.
func members(n int) []identity.Identity {
	ids := make([]identity.Identity, n)
	for i := range ids {
		ids[i] = identity.Derive(7, i)
	}
	slices.SortFunc(ids, func(a, b identity.Identity) int { return identity.Compare(a.ID, b.ID) })
	return ids
}

func peerIDs(ids []identity.Identity) []identity.PeerID {
	out := make([]identity.PeerID, len(ids))
	for i, id := range ids {
		out[i] = id.ID
	}
	return out
}

// fake is a node as the API sees it.
type fake struct {
	status   node.Status
	members  []identity.Identity
	up       map[string]bool
	leader   identity.PeerID
	acc      *Accuracy
	traffic  Traffic
	proposed []*round.AddMember
	propose  error
}

func (f *fake) source() Source {
	return Source{
		Status:    func() node.Status { return f.status },
		Members:   func() []identity.PeerID { return peerIDs(f.members) },
		Connected: func(id identity.PeerID) bool { return f.up[id.String()] },
		Leader:    func() identity.PeerID { return f.leader },
		Accuracy:  func() *Accuracy { return f.acc },
		Traffic:   func() Traffic { return f.traffic },
		ProposeAddMember: func(_ context.Context, req *round.AddMember) error {
			if f.propose != nil {
				return f.propose
			}
			f.proposed = append(f.proposed, req)
			return nil
		},
		Consortium: consortium,
	}
}

func newFake(n int) *fake {
	ms := members(n)
	f := &fake{members: ms, up: map[string]bool{}}
	f.status = node.Status{Peer: ms[0].ID.String(), Round: 3, Phase: "collecting", Applied: 2, Model: "ab12", Members: n,
		Counters: round.Counters{StaleEntries: 4, InvalidEntries: 1}}
	for _, m := range ms[1:3] {
		f.up[m.ID.String()] = true
	}
	f.leader = ms[1].ID
	f.acc = &Accuracy{Round: 2, Model: "ab12", Accuracy: 0.91, Loss: 0.3, Examples: 100}
	f.traffic = Traffic{BytesIn: 1000, BytesOut: 2000, Cut: map[string]uint64{"blob/frame_too_large": 2, "raft/not_member": 1}}
	return f
}

func get(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

func post(t *testing.T, h http.Handler, path string, body []byte) (int, SubmitResponse) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
	var resp SubmitResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("POST %s: %d %q: %v", path, rec.Code, rec.Body, err)
	}
	return rec.Code, resp
}

func TestStatus(t *testing.T) {
	f := newFake(5)
	s := New(f.source(), prometheus.NewRegistry(), nil)
	rec := get(t, s, "/status")
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /status: %d %s", rec.Code, rec.Header())
	}
	var st Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Round != 3 || st.Applied != 2 || st.Phase != "collecting" || st.Model != "ab12" || st.Peer != f.members[0].ID.String() {
		t.Errorf("node fields: %+v", st.Status)
	}
	if st.Counters.StaleEntries != 4 {
		t.Errorf("counters: %+v", st.Counters)
	}
	if len(st.Peers) != 5 || !st.Peers[0].Self || !st.Peers[0].Connected || !st.Peers[1].Connected || st.Peers[3].Connected {
		t.Errorf("peers: %+v", st.Peers)
	}
	if st.PeersConnected != 2 {
		t.Errorf("peers connected %d, want 2", st.PeersConnected)
	}
	if st.LeaderPeer != f.members[1].ID.String() {
		t.Errorf("leader %q", st.LeaderPeer)
	}
	if st.Accuracy == nil || st.Accuracy.Accuracy != 0.91 || st.Accuracy.Round != 2 {
		t.Errorf("accuracy %+v", st.Accuracy)
	}
	// The raw document uses the names operators script against.
	for _, key := range []string{`"applied_round": 2`, `"model_digest": "ab12"`, `"peers_connected": 2`, `"connected": false`, `"accuracy": 0.91`} {
		if !strings.Contains(rec.Body.String(), key) {
			t.Errorf("/status lacks %s:\n%s", key, rec.Body)
		}
	}

	f.status.Leader = true
	if st := s.Snapshot(); st.LeaderPeer != f.members[0].ID.String() {
		t.Errorf("a leader names itself, got %q", st.LeaderPeer)
	}
	if rec := httptest.NewRecorder(); true {
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/status", nil))
		if rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("POST /status: %d", rec.Code)
		}
	}
}

func TestMetrics(t *testing.T) {
	f := newFake(5)
	reg := prometheus.NewRegistry()
	s := New(f.source(), reg, nil)
	m := s.Metrics()

	m.CountUpdate(ResultAccepted, "")
	m.CountUpdate(ResultAccepted, "")
	m.CountUpdate(ResultRejected, "not_member")
	if got := testutil.ToFloat64(m.updates.WithLabelValues(ResultAccepted, "")); got != 2 {
		t.Errorf("accepted %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.updates.WithLabelValues(ResultRejected, "not_member")); got != 1 {
		t.Errorf("rejected not_member %v, want 1", got)
	}

	ann := &round.Message{Kind: round.KindAnnounce}
	m.ObserveApplied(node.Applied{Round: 1, Entry: &round.Entry{Kind: round.EntryCommit, Round: 1, Included: []*round.Message{ann, ann}}})
	m.ObserveApplied(node.Applied{Round: 2, Entry: &round.Entry{Kind: round.EntryAbandon, Round: 2}})
	if testutil.ToFloat64(m.applied.WithLabelValues("commit")) != 1 || testutil.ToFloat64(m.applied.WithLabelValues("abandon")) != 1 ||
		testutil.ToFloat64(m.included) != 2 {
		t.Errorf("applied outcomes not counted")
	}

	t0 := time.Unix(1000, 0)
	m.ObservePhase(node.Status{Round: 3, Phase: "training"}, t0)
	m.ObservePhase(node.Status{Round: 3, Phase: "training"}, t0.Add(time.Second))
	m.ObservePhase(node.Status{Round: 3, Phase: "collecting"}, t0.Add(2*time.Second))
	m.ObservePhase(node.Status{Round: 4, Phase: "collecting"}, t0.Add(5*time.Second))
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP globalbrain_phase_seconds Time spent in each phase of a round (training, collecting, closing).
# TYPE globalbrain_phase_seconds histogram
globalbrain_phase_seconds_bucket{phase="collecting",le="0.1"} 0
globalbrain_phase_seconds_bucket{phase="collecting",le="0.25"} 0
globalbrain_phase_seconds_bucket{phase="collecting",le="0.5"} 0
globalbrain_phase_seconds_bucket{phase="collecting",le="1"} 0
globalbrain_phase_seconds_bucket{phase="collecting",le="2.5"} 0
globalbrain_phase_seconds_bucket{phase="collecting",le="5"} 1
globalbrain_phase_seconds_bucket{phase="collecting",le="10"} 1
globalbrain_phase_seconds_bucket{phase="collecting",le="30"} 1
globalbrain_phase_seconds_bucket{phase="collecting",le="60"} 1
globalbrain_phase_seconds_bucket{phase="collecting",le="120"} 1
globalbrain_phase_seconds_bucket{phase="collecting",le="300"} 1
globalbrain_phase_seconds_bucket{phase="collecting",le="600"} 1
globalbrain_phase_seconds_bucket{phase="collecting",le="+Inf"} 1
globalbrain_phase_seconds_sum{phase="collecting"} 3
globalbrain_phase_seconds_count{phase="collecting"} 1
globalbrain_phase_seconds_bucket{phase="training",le="0.1"} 0
globalbrain_phase_seconds_bucket{phase="training",le="0.25"} 0
globalbrain_phase_seconds_bucket{phase="training",le="0.5"} 0
globalbrain_phase_seconds_bucket{phase="training",le="1"} 0
globalbrain_phase_seconds_bucket{phase="training",le="2.5"} 1
globalbrain_phase_seconds_bucket{phase="training",le="5"} 1
globalbrain_phase_seconds_bucket{phase="training",le="10"} 1
globalbrain_phase_seconds_bucket{phase="training",le="30"} 1
globalbrain_phase_seconds_bucket{phase="training",le="60"} 1
globalbrain_phase_seconds_bucket{phase="training",le="120"} 1
globalbrain_phase_seconds_bucket{phase="training",le="300"} 1
globalbrain_phase_seconds_bucket{phase="training",le="600"} 1
globalbrain_phase_seconds_bucket{phase="training",le="+Inf"} 1
globalbrain_phase_seconds_sum{phase="training"} 2
globalbrain_phase_seconds_count{phase="training"} 1
`), "globalbrain_phase_seconds")
	if err != nil {
		t.Error(err)
	}

	err = testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP globalbrain_applied_round Last applied round.
# TYPE globalbrain_applied_round gauge
globalbrain_applied_round 2
# HELP globalbrain_round Round in progress.
# TYPE globalbrain_round gauge
globalbrain_round 3
# HELP globalbrain_peers_connected Members connected to this node (itself excluded).
# TYPE globalbrain_peers_connected gauge
globalbrain_peers_connected 2
# HELP globalbrain_accuracy Test accuracy of the last evaluated global model.
# TYPE globalbrain_accuracy gauge
globalbrain_accuracy 0.91
# HELP globalbrain_bytes_in_total Payload bytes received over the stream protocols.
# TYPE globalbrain_bytes_in_total counter
globalbrain_bytes_in_total 1000
# HELP globalbrain_bytes_out_total Payload bytes sent over the stream protocols.
# TYPE globalbrain_bytes_out_total counter
globalbrain_bytes_out_total 2000
# HELP globalbrain_messages_cut_total What the transport refused, dropped or cut off (messages, streams, connections, dials), by protocol and reason.
# TYPE globalbrain_messages_cut_total counter
globalbrain_messages_cut_total{protocol="blob",reason="frame_too_large"} 2
globalbrain_messages_cut_total{protocol="raft",reason="not_member"} 1
# HELP globalbrain_round_events_total The round machine's counters: stale and invalid entries, rejected and ignored messages, re-proposals, excluded updates, forced campaigns.
# TYPE globalbrain_round_events_total counter
globalbrain_round_events_total{event="excluded_update"} 0
globalbrain_round_events_total{event="forced_campaign"} 0
globalbrain_round_events_total{event="ignored_message"} 0
globalbrain_round_events_total{event="invalid_entry"} 1
globalbrain_round_events_total{event="rejected_message"} 0
globalbrain_round_events_total{event="reproposal"} 0
globalbrain_round_events_total{event="stale_entry"} 4
`), "globalbrain_applied_round", "globalbrain_round", "globalbrain_peers_connected", "globalbrain_accuracy",
		"globalbrain_bytes_in_total", "globalbrain_bytes_out_total", "globalbrain_messages_cut_total", "globalbrain_round_events_total")
	if err != nil {
		t.Error(err)
	}
	// The privacy budget, under a mode that keeps one (none here).
	if n, _ := testutil.GatherAndCount(reg, "globalbrain_privacy_epsilon_spent"); n != 0 {
		t.Errorf("privacy metrics without a budget: %d", n)
	}
	f.status.Privacy = &node.PrivacyStatus{Mode: "update", Delta: 1e-5, Ceiling: 8, Spent: 2.5, Rounds: 3, Declines: 1, Exhausted: true}
	err = testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP globalbrain_privacy_declines_total Rounds this process declined because its privacy budget would be exceeded.
# TYPE globalbrain_privacy_declines_total counter
globalbrain_privacy_declines_total 1
# HELP globalbrain_privacy_epsilon_ceiling This node's privacy budget: the most epsilon it will spend.
# TYPE globalbrain_privacy_epsilon_ceiling gauge
globalbrain_privacy_epsilon_ceiling 8
# HELP globalbrain_privacy_epsilon_spent Epsilon this node spent at the manifest's delta, over every run of its store.
# TYPE globalbrain_privacy_epsilon_spent gauge
globalbrain_privacy_epsilon_spent 2.5
# HELP globalbrain_privacy_exhausted 1 once this node declines rounds for its privacy budget.
# TYPE globalbrain_privacy_exhausted gauge
globalbrain_privacy_exhausted 1
# HELP globalbrain_privacy_rounds_charged_total Rounds charged to this node's privacy budget, over every run of its store.
# TYPE globalbrain_privacy_rounds_charged_total counter
globalbrain_privacy_rounds_charged_total 3
`), "globalbrain_privacy_declines_total", "globalbrain_privacy_epsilon_ceiling", "globalbrain_privacy_epsilon_spent",
		"globalbrain_privacy_exhausted", "globalbrain_privacy_rounds_charged_total")
	if err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}

	// Over HTTP, in the text format; nothing lands in the default registry.
	rec := get(t, s, "/metrics")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "globalbrain_applied_round 2") ||
		!strings.Contains(rec.Body.String(), `globalbrain_updates_total{reason="not_member",result="rejected"} 1`) {
		t.Errorf("GET /metrics: %d\n%s", rec.Code, rec.Body)
	}
	if mfs, _ := prometheus.DefaultGatherer.Gather(); slices.ContainsFunc(mfs, func(mf *dto.MetricFamily) bool { return strings.HasPrefix(mf.GetName(), "globalbrain_") }) {
		t.Errorf("metrics registered on the default registry")
	}

	// Two nodes in one process each have their own registry.
	New(newFake(3).source(), prometheus.NewRegistry(), nil)
}

// signed returns a request to add newcomer signed by it and by signers.
func signed(newcomer identity.Identity, signers ...identity.Identity) *round.AddMember {
	req := round.NewAddMember(newcomer.ID)
	req.Sign(consortium, newcomer)
	for _, s := range signers {
		req.Sign(consortium, s)
	}
	return req
}

func TestCountSignatures(t *testing.T) {
	ms := members(5)
	ids := peerIDs(ms)
	newcomer := identity.Derive(8, 0)

	s := CountSignatures(signed(newcomer, ms[0], ms[2], ms[4]), consortium, ids)
	if err := s.Err(); err != nil || len(s.Signed) != 3 || !s.Record {
		t.Errorf("3 of 5: %+v %v", s, err)
	}
	s = CountSignatures(signed(newcomer, ms[0], ms[2]), consortium, ids)
	if err := s.Err(); err == nil || err.Error() != "2 of 5 members signed; a majority (3) is needed" {
		t.Errorf("2 of 5: %v", err)
	}
	// Signing twice counts once.
	s = CountSignatures(signed(newcomer, ms[0], ms[2], ms[2], ms[0]), consortium, ids)
	if len(s.Signed) != 2 || s.Err() == nil {
		t.Errorf("repeated signatures: %+v", s)
	}
	// The new member's own record is required.
	req := round.NewAddMember(newcomer.ID)
	for _, m := range ms[:3] {
		req.Sign(consortium, m)
	}
	if err := CountSignatures(req, consortium, ids).Err(); err == nil || !strings.Contains(err.Error(), "own record") {
		t.Errorf("without the record: %v", err)
	}
	// Signatures for another consortium, by non-members, or tampered do not count.
	other := signed(newcomer, ms[0], ms[1], ms[2])
	if s := CountSignatures(other, [32]byte{9}, ids); s.Record || len(s.Signed) != 0 {
		t.Errorf("another consortium: %+v", s)
	}
	outsiders := signed(newcomer, identity.Derive(9, 0), identity.Derive(9, 1), ms[0])
	if s := CountSignatures(outsiders, consortium, ids); len(s.Signed) != 1 {
		t.Errorf("outsiders counted: %+v", s)
	}
	tampered := signed(newcomer, ms[0], ms[1], ms[2])
	tampered.Sigs[1].Sig[0] ^= 1
	if s := CountSignatures(tampered, consortium, ids); len(s.Signed) != 2 {
		t.Errorf("tampered signature counted: %+v", s)
	}
}

func TestSubmit(t *testing.T) {
	f := newFake(5)
	s := New(f.source(), prometheus.NewRegistry(), nil)
	newcomer := identity.Derive(8, 0)

	code, resp := post(t, s, "/member/submit", signed(newcomer, f.members[0], f.members[1], f.members[2]).Encode())
	if code != http.StatusOK || resp.Status != "proposed" || len(f.proposed) != 1 || identity.Compare(f.proposed[0].Member, newcomer.ID) != 0 {
		t.Errorf("majority: %d %+v", code, resp)
	}

	code, resp = post(t, s, "/member/submit", signed(newcomer, f.members[0], f.members[1]).Encode())
	if code != http.StatusBadRequest || resp.Error != "2 of 5 members signed; a majority (3) is needed" {
		t.Errorf("minority: %d %+v", code, resp)
	}

	for _, body := range []string{"", "{", `{"member":"x"}`, `{"member":"AAAA","sigs":[]}`, `{"member":null,"extra":1}`} {
		code, resp = post(t, s, "/member/submit", []byte(body))
		if code != http.StatusBadRequest || !strings.Contains(resp.Error, "malformed") {
			t.Errorf("body %q: %d %+v", body, code, resp)
		}
	}
	code, resp = post(t, s, "/member/submit", bytes.Repeat([]byte(" "), MaxRequestBytes+1))
	if code != http.StatusBadRequest {
		t.Errorf("oversized body: %d %+v", code, resp)
	}

	f.propose = round.ErrNotLeader
	code, resp = post(t, s, "/member/submit", signed(newcomer, f.members[0], f.members[1], f.members[2]).Encode())
	if want := "not the leader (leader is " + f.members[1].ID.String() + ")"; code != http.StatusConflict || resp.Error != want || resp.Leader != f.members[1].ID.String() {
		t.Errorf("not the leader: %d %+v, want %q", code, resp, want)
	}
	f.leader = nil
	code, resp = post(t, s, "/member/submit", signed(newcomer, f.members[0], f.members[1], f.members[2]).Encode())
	if code != http.StatusConflict || !strings.Contains(resp.Error, "leader unknown") {
		t.Errorf("no leader known: %d %+v", code, resp)
	}

	f.propose = nil
	code, resp = post(t, s, "/member/submit", signed(f.members[4], f.members[0], f.members[1], f.members[2]).Encode())
	if code != http.StatusConflict || resp.Error != f.members[4].ID.String()+" is already a member" {
		t.Errorf("a member: %d %+v", code, resp)
	}

	rec := get(t, s, "/member/submit")
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /member/submit: %d", rec.Code)
	}
	_, _ = io.Copy(io.Discard, rec.Body)
}
