package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/round"
)

// Source is the running node as the API reads it. Status is required; the
// other functions may be nil.
type Source struct {
	// Status is the node's latest state (node.Node.Status).
	Status func() node.Status
	// Members is the applied membership (node.Node.Members).
	Members func() []identity.PeerID
	// Connected reports whether a member is connected to this node.
	Connected func(identity.PeerID) bool
	// Leader is the Raft leader as far as this node knows, nil if unknown.
	Leader func() identity.PeerID
	// Accuracy is the last evaluated model's result on the local test set,
	// nil before the first evaluation.
	Accuracy func() *Accuracy
	// Traffic is the transport's byte and cut-off counters.
	Traffic func() Traffic
	// ProposeAddMember proposes a membership change
	// (node.Node.ProposeAddMember); it fails with round.ErrNotLeader on a
	// member that does not lead.
	ProposeAddMember func(ctx context.Context, req *round.AddMember) error
	// Consortium is the consortium ID the signatures of a request are
	// checked against.
	Consortium [32]byte
}

// peers lists the applied members with their connection state.
func (s Source) peers(st node.Status) []Peer {
	if s.Members == nil {
		return nil
	}
	ms := s.Members()
	out := make([]Peer, 0, len(ms))
	for _, id := range ms {
		p := Peer{ID: id.String(), Self: id.String() == st.Peer}
		p.Connected = p.Self || (s.Connected != nil && s.Connected(id))
		out = append(out, p)
	}
	return out
}

// Status is the /status document: the node's state, its members and the
// last evaluated accuracy.
type Status struct {
	node.Status
	// LeaderPeer is the Raft leader's peer ID as far as this node knows.
	LeaderPeer string `json:"leader_peer,omitempty"`
	// Peers are the applied members; Self marks this node.
	Peers []Peer `json:"peers"`
	// PeersConnected counts the members connected, this node excluded.
	PeersConnected int `json:"peers_connected"`
	// Accuracy is the last evaluated global model's result on this node's
	// test set.
	Accuracy *Accuracy `json:"accuracy,omitempty"`
}

// Peer is one member in /status.
type Peer struct {
	ID        string `json:"peer"`
	Self      bool   `json:"self,omitempty"`
	Connected bool   `json:"connected"`
}

// Accuracy is a global model's result on the local test set.
type Accuracy struct {
	Round    uint64  `json:"round"`
	Model    string  `json:"model_digest"`
	Accuracy float64 `json:"accuracy"`
	Loss     float64 `json:"loss"`
	Examples int     `json:"examples"`
}

// Traffic is the transport's counters: payload bytes and what it cut off,
// keyed "protocol/reason".
type Traffic struct {
	BytesIn, BytesOut int64
	Cut               map[string]uint64
}

// Server is the HTTP API.
type Server struct {
	src     Source
	metrics *Metrics
	log     *slog.Logger
	mux     *http.ServeMux
}

// MaxRequestBytes bounds a POSTed request body.
const MaxRequestBytes = 1 << 20

// New builds the API over src, registering its metrics on reg, which
// /metrics serves.
func New(src Source, reg *prometheus.Registry, log *slog.Logger) *Server {
	return NewServer(src, reg, NewMetrics(reg), log)
}

// NewServer builds the API over src with metrics already registered on
// reg (NewMetrics), adding those read from src at scrape time.
func NewServer(src Source, reg *prometheus.Registry, metrics *Metrics, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg.MustRegister(&collector{src: src})
	s := &Server{src: src, metrics: metrics, log: log, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /status", s.status)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, ErrorLog: slogErrors{log}}))
	s.mux.HandleFunc("POST /member/submit", s.submit)
	return s
}

// Metrics returns the metrics the server registered, for the node to feed.
func (s *Server) Metrics() *Metrics { return s.metrics }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Snapshot returns the /status document.
func (s *Server) Snapshot() Status {
	st := Status{Status: s.src.Status()}
	st.Peers = s.src.peers(st.Status)
	for _, p := range st.Peers {
		if p.Connected && !p.Self {
			st.PeersConnected++
		}
	}
	if st.Leader {
		st.LeaderPeer = st.Peer
	} else if s.src.Leader != nil {
		if id := s.src.Leader(); id != nil {
			st.LeaderPeer = id.String()
		}
	}
	if s.src.Accuracy != nil {
		st.Accuracy = s.src.Accuracy()
	}
	return st
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Snapshot())
}

// SubmitResponse is the body of a /member/submit response.
type SubmitResponse struct {
	Member string `json:"member,omitempty"`
	Status string `json:"status,omitempty"` // "proposed"
	Error  string `json:"error,omitempty"`
	Leader string `json:"leader,omitempty"` // with 409: the leader, if known
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, SubmitResponse{Error: fmt.Sprintf("reading the request: %v", err)})
		return
	}
	req, err := round.DecodeAddMember(body)
	if err == nil {
		_, err = req.Member.PublicKey()
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, SubmitResponse{Error: fmt.Sprintf("malformed add-member request: %v", err)})
		return
	}
	if s.src.Members != nil {
		members := s.src.Members()
		for _, m := range members {
			if identity.Compare(m, req.Member) == 0 {
				writeJSON(w, http.StatusConflict, SubmitResponse{Member: req.Member.String(), Error: req.Member.String() + " is already a member"})
				return
			}
		}
		if err := CountSignatures(req, s.src.Consortium, members).Err(); err != nil {
			writeJSON(w, http.StatusBadRequest, SubmitResponse{Member: req.Member.String(), Error: err.Error()})
			return
		}
	}
	if s.src.ProposeAddMember == nil {
		writeJSON(w, http.StatusServiceUnavailable, SubmitResponse{Error: "this node cannot propose"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	switch err := s.src.ProposeAddMember(ctx, req); {
	case err == nil:
		s.log.Info("add-member proposed", "member", req.Member.String())
		writeJSON(w, http.StatusOK, SubmitResponse{Member: req.Member.String(), Status: "proposed"})
	case errors.Is(err, round.ErrNotLeader):
		leader := s.Snapshot().LeaderPeer
		msg := "not the leader (leader unknown; try again once one is elected)"
		if leader != "" {
			msg = fmt.Sprintf("not the leader (leader is %s)", leader)
		}
		writeJSON(w, http.StatusConflict, SubmitResponse{Member: req.Member.String(), Error: msg, Leader: leader})
	default:
		writeJSON(w, http.StatusServiceUnavailable, SubmitResponse{Member: req.Member.String(), Error: err.Error()})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// slogErrors adapts a logger to promhttp's error log.
type slogErrors struct{ log *slog.Logger }

func (l slogErrors) Println(v ...any) { l.log.Error("metrics", "err", fmt.Sprint(v...)) }
