package node

import (
	"context"
	"fmt"
	"slices"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/round"
	"github.com/globalbrain/globalbrain/wire"
)

// Run is the event loop. It returns when ctx ends (nil) or a crash point
// fires or the store fails (the error). Tasks still running are cancelled
// and waited for.
func (n *Node) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		close(n.done)
		n.tasks.Wait()
	}()
	n.cfg.Network.SetMembers(n.m.Members())
	if err := n.ready(ctx); err != nil {
		n.err = err
		return err
	}
	inbox := n.cfg.Network.Inbox()
	for {
		var f func()
		select {
		case <-ctx.Done():
			n.err = ctx.Err()
			return nil
		case <-n.tickc:
			f = n.m.Tick
		case in := <-inbox:
			f = func() { n.receive(ctx, in) }
		case f = <-n.results:
		case f = <-n.reqc:
		}
		n.busy.Add(1)
		f()
		err := n.stop
		if err == nil {
			err = n.ready(ctx)
		}
		n.busy.Add(-1)
		if err != nil {
			n.err = err
			return err
		}
	}
}

// receive steps what the network delivered into the machine.
func (n *Node) receive(ctx context.Context, in wire.Inbound) {
	switch in.Kind {
	case wire.Gossip:
		msg, ok := in.Msg.(*round.Message)
		if !ok {
			n.log.Debug("gossip without a decoded message dropped", "from", in.From.Short())
			return
		}
		if err := n.m.Step(msg); err != nil {
			n.log.Debug("gossip refused", "from", in.From.Short(), "msg", msg, "err", err)
		}
	case wire.Raft:
		var msg pb.Message
		if err := proto.Unmarshal(in.Data, &msg); err != nil {
			n.log.Debug("raft message refused", "from", in.From.Short(), "err", err)
			return
		}
		if sender, ok := n.raftPeer[msg.GetFrom()]; !ok || identity.Compare(sender, in.From) != 0 {
			n.log.Warn("raft message from a peer that is not its sender", "from", in.From.Short())
			n.m.Counters.RejectedMessages++
			return
		}
		_ = n.m.StepRaft(&msg)
	case wire.SyncRequest:
		var out [][]byte
		for _, m := range n.m.RoundMessages() {
			if m.Round == in.Round {
				out = append(out, m.Encode())
			}
		}
		select {
		case in.Reply <- out:
		default:
		}
	}
}

func (n *Node) crash(point string) error {
	if n.cfg.Crash == nil {
		return nil
	}
	return n.cfg.Crash(point)
}

// ready carries out the machine's work in order: persist, send and
// publish, then hand out the tasks, then Advance.
func (n *Node) ready(ctx context.Context) error {
	for {
		rd := n.m.Ready()
		if rd.Empty() {
			n.publishState()
			return nil
		}
		if err := n.crash(CrashBeforePersist); err != nil {
			return err
		}
		if rd.HardState != nil || len(rd.Entries) > 0 || rd.Snapshot != nil {
			if err := n.cfg.Store.SaveRaft(rd.HardState, rd.Entries, rd.Snapshot); err != nil {
				return fmt.Errorf("node: persist raft state: %w", err)
			}
		}
		if err := n.crash(CrashAfterPersist); err != nil {
			return err
		}
		for _, msg := range rd.Messages {
			to, ok := n.raftPeer[msg.GetTo()]
			b, err := proto.Marshal(msg)
			if err != nil || !ok {
				continue
			}
			_ = n.cfg.Network.SendRaft(ctx, to, b)
		}
		for _, g := range rd.Gossip {
			_ = n.cfg.Network.Publish(ctx, g.Encode())
		}
		if err := n.crash(CrashAfterPublish); err != nil {
			return err
		}
		for _, e := range rd.Evidence {
			// Persisted with both signed messages before anything else
			// happens: proof anyone can check (round.Evidence.Verify).
			if err := n.cfg.Store.Put(evidenceBucket, e.Key(), e.Encode()); err != nil {
				return fmt.Errorf("node: persist evidence: %w", err)
			}
			n.noteEvidence(e)
			n.log.Warn("equivocation evidence kept", "round", e.Round, "author", e.Author.String())
		}
		if rd.Members != nil {
			n.setRaftPeers(rd.Members)
			n.log.Info("membership changed", "members", len(rd.Members))
			n.cfg.Network.SetMembers(rd.Members)
		}
		for _, a := range rd.Alarms {
			// Keep the latest alarms only: they are copied into every
			// status, and a misbehaving peer can raise one per message.
			n.alarms = append(n.alarms, a)
			if len(n.alarms) > maxAlarms {
				n.alarms = slices.Delete(n.alarms, 0, len(n.alarms)-maxAlarms)
			}
			n.log.Warn("alarm", "round", n.m.State().Round+1, "alarm", a)
		}
		if c := rd.Compact; c != nil {
			if err := n.cfg.Store.SaveRaft(nil, nil, c.Snapshot); err != nil {
				return fmt.Errorf("node: persist snapshot: %w", err)
			}
			if c.CompactTo > 1 {
				if err := n.cfg.Store.CompactRaft(c.CompactTo); err != nil {
					return fmt.Errorf("node: compact log: %w", err)
				}
			}
		}
		n.carryOut(ctx, rd)
		n.m.Advance(rd)
		if err := n.crash(CrashAfterAdvance); err != nil {
			return err
		}
	}
}

// carryOut starts the Ready's tasks; their results come back as inputs.
func (n *Node) carryOut(ctx context.Context, rd *round.Ready) {
	if st := rd.Install; st != nil {
		n.install(ctx, st)
	}
	if rd.Train != nil {
		n.train(ctx, rd.Train)
	}
	for _, t := range rd.SecAgg {
		n.secAggWork(ctx, t)
	}
	if rd.Sync != 0 {
		n.sync(ctx, rd.Sync)
	}
	for _, f := range rd.Fetch {
		n.fetch(ctx, f)
	}
	if rd.Aggregate != nil {
		n.aggregate(ctx, rd.Aggregate)
	}
	if rd.Apply != nil {
		n.apply(ctx, rd.Apply)
	}
}

// async runs work off the loop; the function it returns runs on the loop.
func (n *Node) async(ctx context.Context, work func() func()) {
	n.busy.Add(1)
	n.tasks.Add(1)
	go func() {
		defer n.tasks.Done()
		then := work()
		if then == nil || ctx.Err() != nil {
			n.busy.Add(-1)
			return
		}
		select {
		case n.results <- then:
		case <-ctx.Done():
		}
		n.busy.Add(-1)
	}()
}
