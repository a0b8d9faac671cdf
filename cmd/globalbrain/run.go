package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/api"
	"github.com/globalbrain/globalbrain/fedavg"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/node"
	"github.com/globalbrain/globalbrain/nodeconfig"
	"github.com/globalbrain/globalbrain/p2p"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/sim"
	"github.com/globalbrain/globalbrain/store"
	"github.com/globalbrain/globalbrain/train"
)

// runNode is `globalbrain run`: the member's node until SIGINT or SIGTERM.
func runNode(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", configName, "the node's config (see globalbrain init)")
	join := fs.Bool("join", false, "run although this node is not a genesis member of the manifest (a member added since)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: globalbrain run --config node.yaml [--join]\n\n"+
			"Runs the member's node: JSON logs on stderr, the local API on the config's http address.\n"+
			"SIGINT or SIGTERM stops it cleanly; it resumes from its store when started again.\n\n")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("run: unexpected argument %q", pos[0])
	}
	d, err := openDaemon(ctx, daemonOptions{config: *cfgPath, join: *join, logs: stderr})
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return d.serve(ctx)
}

// daemonOptions configure openDaemon.
type daemonOptions struct {
	config string    // node.yaml
	join   bool      // allow a peer ID that is not a genesis member
	logs   io.Writer // JSON log lines
	noSync bool      // store without fsync (tests)
}

// daemon is a member's node with everything around it: store, transport,
// trainer, evaluator, HTTP API and logs.
type daemon struct {
	cfg  *nodeconfig.Config
	man  *manifest.Manifest
	id   identity.Identity
	log  *slog.Logger
	db   *store.DB
	host *p2p.Host
	node *node.Node
	api  *api.Server
	http *http.Server
	ln   net.Listener
	late *lateNode
	eval *evaluator
}

// openDaemon loads the configuration and builds the node: nothing runs yet
// except the transport, which listens. On error it closes what it opened.
func openDaemon(ctx context.Context, o daemonOptions) (_ *daemon, err error) {
	cfg, err := nodeconfig.Load(o.config)
	if err != nil {
		return nil, err
	}
	man, err := manifest.Load(cfg.Manifest)
	if err != nil {
		return nil, err
	}
	if err := cfg.CheckManifest(man); err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Path, err)
	}
	if _, err := os.Stat(cfg.IdentityKey); err != nil {
		return nil, fmt.Errorf("identity key: %w (create one with globalbrain init)", err)
	}
	id, _, err := p2p.LoadOrCreateKey(cfg.IdentityKey)
	if err != nil {
		return nil, err
	}
	if !isMember(man.MemberIDs(), id.ID) && !o.join {
		return nil, fmt.Errorf("this node's peer ID %s is not a member of %q (%s): add it to the manifest's members, "+
			"or, if the consortium added it since genesis (member add/sign/submit), run with --join", id.ID, man.Name, cfg.Manifest)
	}
	var psk []byte
	if cfg.PSKFile != "" {
		if psk, err = p2p.LoadPSK(cfg.PSKFile); err != nil {
			return nil, err
		}
	}

	// A leader heard from within two election timeouts is the leader.
	leadOK := 2 * time.Duration(man.Round.ElectionTicks) * time.Duration(man.Round.Tick)
	d := &daemon{cfg: cfg, man: man, id: id, late: &lateNode{genesis: man.MemberIDs(), leadOK: leadOK}}
	d.log = slog.New(newStatusHandler(slog.NewJSONHandler(o.logs, &slog.HandlerOptions{Level: cfg.Level()}), id.ID.Short(), d.late.roundPhase))
	defer func() {
		if err != nil {
			d.close()
		}
	}()

	trainer, test, err := loadTrainer(cfg, man, id, d.log)
	if err != nil {
		return nil, err
	}
	d.eval = newEvaluator(node.ModelSpec(man), test, d.log)

	if d.ln, err = net.Listen("tcp", cfg.HTTP); err != nil {
		return nil, fmt.Errorf("http API: %w", err)
	}
	if d.db, err = store.Open(cfg.Store, store.Options{NoSync: o.noSync}); err != nil {
		return nil, err
	}
	if err := checkStoreOwner(d.db, id, man); err != nil {
		return nil, err
	}

	cid := man.ConsortiumID()
	d.host, err = p2p.New(ctx, p2p.Config{
		Identity:    id,
		Consortium:  cid,
		ListenAddrs: cfg.Listen,
		AddressBook: cfg.AddressBook,
		PSK:         psk,
		Members:     d.late.members,
		Validate:    d.validate,
		Handler:     d.late,
		Blobs:       d.db,
		Servable:    d.late.servable,
		Sync:        d.late.sync,
		Logger:      d.log,
	})
	if err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	var metrics *api.Metrics
	d.node, err = node.New(node.Config{
		Identity: id,
		Manifest: man,
		Store:    d.db,
		Network:  d.host,
		Trainer:  trainer,
		Logger:   d.log,
		Joining:  o.join && !isMember(man.MemberIDs(), id.ID),
		OnApply: func(a node.Applied) {
			metrics.ObserveApplied(a)
			d.eval.submit(a.Round, a.Model)
		},
	})
	if err != nil {
		return nil, err
	}

	d.api = api.New(api.Source{
		Status:           d.node.Status,
		Members:          d.node.Members,
		Connected:        d.connected,
		Leader:           d.late.leader,
		Accuracy:         d.eval.last,
		Traffic:          d.traffic,
		ProposeAddMember: d.node.ProposeAddMember,
		Consortium:       cid,
	}, reg, d.log)
	metrics = d.api.Metrics()
	// From here the transport's callbacks reach the node (and d.api, set
	// before this store).
	d.late.set(d.node)
	d.http = &http.Server{Handler: d.api, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelWarn)}

	// The model applied before a restart is evaluated too, so /status
	// shows an accuracy at once.
	if st := d.node.Status(); st.Applied > 0 {
		if g, err := loadModel(d.db, st.Model); err == nil {
			d.eval.submit(st.Applied, g)
		}
	}
	return d, nil
}

// serve runs the node until ctx ends, then stops it: ticker, event loop,
// HTTP API, transport, store, in that order. It returns nil after a clean
// stop, or the error that stopped the node.
func (d *daemon) serve(ctx context.Context) error {
	st := d.node.Status()
	d.log.Info("node started", "peer_id", d.id.ID.String(), "consortium", d.man.Name, "members", st.Members,
		"applied_round", st.Applied, "model", short(st.Model), "listen", d.host.Addrs(), "http", d.ln.Addr().String(),
		"store", d.cfg.Store)

	loopCtx, stopLoop := context.WithCancel(context.Background())
	loopDone := make(chan error, 1)
	go func() { loopDone <- d.node.Run(loopCtx) }()
	httpDone := make(chan error, 1)
	go func() { httpDone <- d.http.Serve(d.ln) }()

	tick := time.NewTicker(time.Duration(d.man.Round.Tick))
	members := len(d.node.Members())
	last := st
	var failure error
	loopStopped := false
run:
	for {
		select {
		case <-ctx.Done():
			break run
		case err := <-loopDone:
			loopStopped = true
			failure = fmt.Errorf("event loop stopped: %w", err)
			if err == nil {
				failure = errors.New("event loop stopped")
			}
			break run
		case err := <-httpDone:
			failure = fmt.Errorf("http API: %w", err)
			httpDone <- nil // Shutdown below must not wait for it
			break run
		case now := <-tick.C:
			d.node.Tick()
			st := d.node.Status()
			d.api.Metrics().ObservePhase(st, now)
			if n := len(d.node.Members()); n != members {
				d.log.Info("membership changed; reloading the transport's allow-list", "members", n, "was", members)
				members = n
				d.host.Reload()
			}
			d.logProgress(last, st)
			last = st
		}
	}
	if failure != nil {
		d.log.Error("stopping", "err", failure)
	} else {
		d.log.Info("stopping")
	}
	tick.Stop()
	stopLoop()
	if !loopStopped {
		<-loopDone
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := d.http.Shutdown(shut); err != nil {
		d.log.Warn("http API shutdown", "err", err)
	}
	cancel()
	<-httpDone
	d.eval.stop(2 * time.Second)
	d.close()
	st = d.node.Status()
	d.log.Info("stopped", "applied_round", st.Applied, "model", short(st.Model))
	return failure
}

// close releases what openDaemon opened, in reverse order: transport, then
// store. The event loop must have stopped.
func (d *daemon) close() {
	if d.ln != nil && d.http == nil {
		d.ln.Close()
	}
	if d.host != nil {
		if err := d.host.Close(); err != nil {
			d.log.Warn("closing the transport", "err", err)
		}
	}
	if d.db != nil {
		if err := d.db.Close(); err != nil {
			d.log.Warn("closing the store", "err", err)
		}
	}
}

// logProgress logs a new round, a phase change and the end of training.
func (d *daemon) logProgress(prev, st node.Status) {
	switch {
	case st.Halted != "" && prev.Halted == "":
		d.log.Error("halted", "reason", st.Halted)
	case st.Phase == "done" && prev.Phase != "done":
		d.log.Info("all rounds done", "applied_round", st.Applied, "model", short(st.Model))
	case st.Round != prev.Round:
		d.log.Info("round started", "applied_round", st.Applied, "leader", st.Leader)
	case st.Phase != prev.Phase:
		d.log.Debug("phase changed", "from", prev.Phase)
	}
	if len(st.Alarms) > len(prev.Alarms) {
		for _, a := range st.Alarms[len(prev.Alarms):] {
			d.log.Warn("alarm raised", "alarm", a)
		}
	}
}

// validate is the transport's gossip validator: the node's CheckGossip
// mapped onto p2p verdicts, other members' update announcements counted by
// result.
func (d *daemon) validate(author identity.PeerID, msg []byte) (p2p.Verdict, string) {
	n := d.late.get()
	if n == nil {
		return p2p.Ignore, "starting"
	}
	verdict, reason := n.CheckGossip(author, msg)
	if m, err := round.DecodeMessage(msg); err == nil && m.Kind == round.KindAnnounce && identity.Compare(author, d.id.ID) != 0 {
		result := api.ResultAccepted
		if verdict != node.GossipAccept {
			result = api.ResultRejected
		}
		d.api.Metrics().CountUpdate(result, reason)
	}
	switch verdict {
	case node.GossipAccept:
		return p2p.Accept, ""
	case node.GossipIgnore:
		return p2p.Ignore, reason
	}
	return p2p.Reject, reason
}

// connected reports whether a member is connected.
func (d *daemon) connected(id identity.PeerID) bool {
	return slices.ContainsFunc(d.host.Connected(), func(p identity.PeerID) bool { return identity.Compare(p, id) == 0 })
}

// traffic is the transport's counters for /metrics: its bytes, and what
// it cut off (every counter but those of work done: served, resumed,
// accepted).
func (d *daemon) traffic() api.Traffic {
	s := d.host.Stats()
	in, out := s.Bytes()
	cut := s.Snapshot()
	for key := range cut {
		if _, reason, _ := strings.Cut(key, "/"); reason == p2p.ReasonServed || reason == p2p.ReasonResumed || reason == p2p.ReasonAccepted {
			delete(cut, key)
		}
	}
	return api.Traffic{BytesIn: in, BytesOut: out, Cut: cut}
}

// checkStoreOwner records the store's identity and consortium on first use
// and refuses a store that belongs to another node or consortium.
func checkStoreOwner(db *store.DB, id identity.Identity, man *manifest.Manifest) error {
	cid := man.ConsortiumID()
	for _, kv := range []struct {
		key, what string
		want      []byte
	}{{"peer", "peer ID", id.ID}, {"consortium", "consortium", cid[:]}} {
		got, err := db.Get("owner", kv.key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if err := db.Put("owner", kv.key, kv.want); err != nil {
				return err
			}
		case err != nil:
			return err
		case string(got) != string(kv.want):
			return fmt.Errorf("store %s belongs to another %s; give this node its own store directory (or restore the manifest it was created with)", db.Dir(), kv.what)
		}
	}
	return nil
}

// loadModel reads a stored model by its hex digest.
func loadModel(db *store.DB, digest string) (*fedavg.Global, error) {
	var d store.Digest
	h, err := hex.DecodeString(digest)
	if err != nil || len(h) != len(d) {
		return nil, fmt.Errorf("model digest %q", digest)
	}
	copy(d[:], h)
	b, err := db.Blob(d)
	if err != nil {
		return nil, err
	}
	return fedavg.Decode(b)
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}

// lateNode lets the transport be built before the node it serves: it holds
// the node once there is one and answers for it until then (genesis
// members, nothing servable, traffic dropped: Raft retransmits and members
// repeat their announcements). It also notes the Raft leader from the
// messages only a leader sends.
type lateNode struct {
	n       atomic.Pointer[node.Node]
	genesis []identity.PeerID

	mu     sync.Mutex
	lead   identity.PeerID
	term   uint64
	heard  time.Time
	leadOK time.Duration
}

func (l *lateNode) set(n *node.Node) { l.n.Store(n) }
func (l *lateNode) get() *node.Node  { return l.n.Load() }

func (l *lateNode) members() []identity.PeerID {
	if n := l.get(); n != nil {
		return n.Members()
	}
	return l.genesis
}

func (l *lateNode) servable(d [32]byte) bool {
	n := l.get()
	return n != nil && n.Servable(d)
}

func (l *lateNode) sync(r uint64) [][]byte {
	n := l.get()
	if n == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return n.RoundMessages(ctx, r)
}

// HandleGossip implements p2p.Handler.
func (l *lateNode) HandleGossip(from identity.PeerID, msg []byte) {
	if n := l.get(); n != nil {
		n.HandleGossip(from, msg)
	}
}

// HandleRaft implements p2p.Handler.
func (l *lateNode) HandleRaft(from identity.PeerID, msg []byte) {
	n := l.get()
	if n == nil {
		return
	}
	l.noteLeader(from, msg)
	n.HandleRaft(from, msg)
}

// noteLeader remembers the sender of the message types only a Raft leader
// sends (appends, heartbeats, snapshots), in the highest term seen.
func (l *lateNode) noteLeader(from identity.PeerID, b []byte) {
	var m pb.Message
	if proto.Unmarshal(b, &m) != nil {
		return
	}
	switch m.GetType() {
	case pb.MessageType_MsgApp, pb.MessageType_MsgHeartbeat, pb.MessageType_MsgSnap:
	default:
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if m.GetTerm() >= l.term {
		l.term, l.lead, l.heard = m.GetTerm(), from, time.Now()
	}
}

// leader is the leader heard from recently, nil if none.
func (l *lateNode) leader() identity.PeerID {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lead == nil || time.Since(l.heard) > l.leadOK {
		return nil
	}
	return l.lead
}

// roundPhase is what the log handler adds to every line.
func (l *lateNode) roundPhase() (uint64, string) {
	n := l.get()
	if n == nil {
		return 0, "starting"
	}
	st := n.Status()
	return st.Round, st.Phase
}

// statusHandler adds the peer, round and phase to every log record that
// does not carry them already, at the top level even inside a group.
type statusHandler struct {
	inner  slog.Handler // the handler to log with, groups and attributes applied
	peer   string
	status func() (uint64, string)
	has    map[string]bool // top-level keys added with WithAttrs
	// Inside a group, the top-level attributes must be added before the
	// group opens: the handler is rebuilt from top for each record.
	top    slog.Handler
	nested []func(slog.Handler) slog.Handler
}

func newStatusHandler(inner slog.Handler, peer string, status func() (uint64, string)) *statusHandler {
	return &statusHandler{inner: inner, peer: peer, status: status, has: map[string]bool{}}
}

func (h *statusHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *statusHandler) Handle(ctx context.Context, r slog.Record) error {
	has := map[string]bool{"peer": h.has["peer"], "round": h.has["round"], "phase": h.has["phase"]}
	if h.top == nil {
		r.Attrs(func(a slog.Attr) bool {
			if _, ok := has[a.Key]; ok {
				has[a.Key] = true
			}
			return true
		})
	}
	rd, phase := h.status()
	var add []slog.Attr
	if !has["peer"] {
		add = append(add, slog.String("peer", h.peer))
	}
	if !has["round"] {
		add = append(add, slog.Uint64("round", rd))
	}
	if !has["phase"] {
		add = append(add, slog.String("phase", phase))
	}
	if h.top == nil {
		r = r.Clone()
		r.AddAttrs(add...)
		return h.inner.Handle(ctx, r)
	}
	out := h.top.WithAttrs(add)
	for _, f := range h.nested {
		out = f(out)
	}
	return out.Handle(ctx, r)
}

func (h *statusHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(attrs)
	if h.top != nil {
		c.nested = append(slices.Clip(h.nested), func(x slog.Handler) slog.Handler { return x.WithAttrs(attrs) })
		return &c
	}
	c.has = maps.Clone(h.has)
	for _, a := range attrs {
		c.has[a.Key] = true
	}
	return &c
}

func (h *statusHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.inner = h.inner.WithGroup(name)
	if h.top == nil {
		c.top = h.inner
	}
	c.nested = append(slices.Clip(h.nested), func(x slog.Handler) slog.Handler { return x.WithGroup(name) })
	return &c
}

// loadTrainer builds the built-in trainer over the configured partition of
// the data set's training set, and returns the test set for evaluation.
func loadTrainer(cfg *nodeconfig.Config, man *manifest.Manifest, id identity.Identity, log *slog.Logger) (node.Trainer, *train.Dataset, error) {
	start := time.Now()
	trainSet, testSet, err := train.Load(cfg.Data.Dataset, cfg.Data.Dir)
	if err != nil {
		return nil, nil, fmt.Errorf("data: %w", err)
	}
	spec := node.ModelSpec(man)
	if trainSet.Height != spec.Height || trainSet.Width != spec.Width || trainSet.Channels != spec.Channels || trainSet.Classes != spec.Classes {
		return nil, nil, fmt.Errorf("data: %s is %dx%dx%d with %d classes, the manifest's model %dx%dx%d with %d classes",
			trainSet.Name, trainSet.Height, trainSet.Width, trainSet.Channels, trainSet.Classes, spec.Height, spec.Width, spec.Channels, spec.Classes)
	}
	dc := cfg.Data
	var parts [][]int
	switch dc.Partition {
	case "iid":
		parts, err = train.PartitionIID(trainSet.N, dc.Members, dc.Seed)
	case "shards":
		parts, err = train.PartitionShards(trainSet.Y, dc.Members, dc.Shards, dc.Seed)
	case "dirichlet":
		parts, err = train.PartitionDirichlet(trainSet.Y, trainSet.Classes, dc.Members, dc.Alpha, dc.Seed)
	default:
		err = fmt.Errorf("partition %q unknown", dc.Partition)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("data: %w", err)
	}
	model, err := train.NewModel(spec)
	if err != nil {
		return nil, nil, err
	}
	t := &builtinTrainer{
		model:  model,
		data:   trainSet,
		member: sim.Member{Index: dc.Index, Identity: id, Partition: parts[dc.Index]},
		seed:   dc.Seed,
		cap:    cfg.ExampleCap(man),
		log:    log,
	}
	log.Info("data loaded", "dataset", trainSet.Name, "partition", dc.Partition, "part", fmt.Sprintf("%d/%d", dc.Index, dc.Members),
		"examples", len(t.member.Partition), "test_examples", testSet.N, "seconds", time.Since(start).Seconds())
	return t, testSet, nil
}

// builtinTrainer trains the manifest's model on the node's partition, as a
// simulated member does (sim.LocalUpdate): the same seeds, the same update.
type builtinTrainer struct {
	mu     sync.Mutex // one model, one training at a time
	model  *train.Model
	data   *train.Dataset
	member sim.Member
	seed   uint64
	cap    int64
	log    *slog.Logger
}

// Train implements node.Trainer. Local training cannot be interrupted, so
// when ctx ends first (the node stops) Train returns at once and the
// training finishes unobserved, its update dropped: a node shutting down
// never waits for a round's training.
func (t *builtinTrainer) Train(ctx context.Context, r uint64, g *fedavg.Global, cfg fedavg.TrainConfig) ([]float32, int64, error) {
	type result struct {
		u   fedavg.Update
		st  train.TrainStats
		err error
	}
	done := make(chan result, 1)
	go func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if err := ctx.Err(); err != nil {
			done <- result{err: err}
			return
		}
		u, st, err := sim.LocalUpdate(t.model, g, t.data, t.member, cfg, t.seed, r, t.cap)
		done <- result{u, st, err}
	}()
	start := time.Now()
	select {
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	case res := <-done:
		if res.err != nil {
			return nil, 0, res.err
		}
		t.log.Info("trained", "round", r, "examples", res.u.Examples, "train_loss", res.st.Loss, "seconds", time.Since(start).Seconds())
		return res.u.Delta, res.u.Examples, nil
	}
}

// evaluator evaluates applied models on the test set off the node's loop,
// one at a time; a model applied while another is evaluated replaces any
// still waiting.
type evaluator struct {
	model *train.Model
	test  *train.Dataset
	log   *slog.Logger
	err   error

	mu      sync.Mutex
	pending *evalJob
	running bool
	stopped bool
	wg      sync.WaitGroup
	result  atomic.Pointer[api.Accuracy]
}

type evalJob struct {
	round uint64
	g     *fedavg.Global
}

func newEvaluator(spec train.Spec, test *train.Dataset, log *slog.Logger) *evaluator {
	m, err := train.NewModel(spec)
	return &evaluator{model: m, test: test, log: log, err: err}
}

// submit queues g, the model of round r, for evaluation.
func (e *evaluator) submit(r uint64, g *fedavg.Global) {
	if g == nil || e.err != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return
	}
	e.pending = &evalJob{round: r, g: g}
	if !e.running {
		e.running = true
		e.wg.Add(1)
		go e.run()
	}
}

func (e *evaluator) run() {
	defer e.wg.Done()
	for {
		e.mu.Lock()
		j := e.pending
		e.pending = nil
		if j == nil || e.stopped {
			e.running = false
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()
		start := time.Now()
		mt, err := e.model.Evaluate(j.g.Weights, e.test)
		if err != nil {
			e.log.Error("evaluation failed", "round", j.round, "err", err)
			continue
		}
		digest := j.g.Digest().String()
		e.result.Store(&api.Accuracy{Round: j.round, Model: digest, Accuracy: mt.Accuracy, Loss: mt.Loss, Examples: mt.N})
		e.log.Info("evaluated", "round", j.round, "model", short(digest), "accuracy", mt.Accuracy, "test_loss", mt.Loss,
			"seconds", time.Since(start).Seconds())
	}
}

// last is the latest result, nil before the first.
func (e *evaluator) last() *api.Accuracy { return e.result.Load() }

// stop drops what is waiting and waits a little for a running evaluation
// (it touches nothing but the log and the result, so it may finish
// unobserved; evaluating a large model takes seconds).
func (e *evaluator) stop(wait time.Duration) {
	e.mu.Lock()
	e.stopped = true
	e.pending = nil
	e.mu.Unlock()
	done := make(chan struct{})
	go func() {
		e.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(wait):
	}
}
