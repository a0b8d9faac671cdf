package member

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/globalbrain/globalbrain/node"
)

// actor is one supervised component: run until interrupted or failed;
// interrupt makes run return.
type actor struct {
	name      string
	run       func() error
	interrupt func()
}

// Run runs the member until ctx ends or a component fails, then stops the
// components in this order: ticks (nothing new starts), the event loop
// (tasks cancelled and waited for), the HTTP API (it reads the node), the
// transport (peers see the member leave), the store (after every writer).
// It returns nil after a clean stop, or the error that stopped the member.
func (m *Member) Run(ctx context.Context) error {
	st := m.node.Status()
	attrs := []any{"peer_id", m.o.Identity.ID.String(), "consortium", m.o.Manifest.Name, "members", st.Members,
		"applied_round", st.Applied, "model", short(st.Model), "store", m.o.StoreDir}
	if m.host != nil {
		attrs = append(attrs, "listen", m.host.Addrs())
	}
	if m.o.HTTP != nil {
		attrs = append(attrs, "http", m.o.HTTP.Addr().String())
	}
	m.log.Info("node started", attrs...)

	var actors []actor
	if m.o.Tick > 0 {
		stop := make(chan struct{})
		actors = append(actors, actor{"ticks", func() error { m.tick(stop); return nil }, func() { close(stop) }})
	}
	loopCtx, stopLoop := context.WithCancel(context.Background())
	actors = append(actors, actor{"event loop", func() error {
		if err := m.node.Run(loopCtx); err != nil {
			return err
		}
		if loopCtx.Err() == nil {
			return errors.New("stopped")
		}
		return nil
	}, stopLoop})
	if m.http != nil {
		actors = append(actors, actor{"http API", func() error {
			if err := m.http.Serve(m.o.HTTP); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}, func() {
			shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := m.http.Shutdown(shut); err != nil {
				m.log.Warn("http API shutdown", "err", err)
			}
		}})
	}
	release := make(chan struct{})
	actors = append(actors, actor{"transport and store", func() error { <-release; return nil }, func() {
		close(release)
		if m.o.Evaluator != nil {
			m.o.Evaluator.Stop(2 * time.Second)
		}
		m.Close()
	}})

	type exit struct {
		i   int
		err error
	}
	exits := make(chan exit, len(actors))
	for i, a := range actors {
		go func() { exits <- exit{i, a.run()} }()
	}
	var failure error
	done := make([]bool, len(actors))
	select {
	case <-ctx.Done():
	case e := <-exits:
		done[e.i] = true
		if e.err != nil {
			failure = fmt.Errorf("%s: %w", actors[e.i].name, e.err)
		} else {
			failure = fmt.Errorf("%s stopped", actors[e.i].name)
		}
	}
	if failure != nil {
		m.log.Error("stopping", "err", failure)
	} else {
		m.log.Info("stopping")
	}
	for i, a := range actors {
		a.interrupt()
		for !done[i] {
			e := <-exits
			done[e.i] = true
		}
	}
	st = m.node.Status()
	m.log.Info("stopped", "applied_round", st.Applied, "model", short(st.Model))
	return failure
}

// tick ticks the node in real time, feeds the phase metrics and logs the
// progress an operator follows.
func (m *Member) tick(stop <-chan struct{}) {
	t := time.NewTicker(m.o.Tick)
	defer t.Stop()
	last := m.node.Status()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			m.node.Tick()
			st := m.node.Status()
			if m.api != nil {
				m.api.Metrics().ObservePhase(st, now)
			}
			m.logProgress(last, st)
			last = st
		}
	}
}

// logProgress logs a new round, a phase change and the end of training.
func (m *Member) logProgress(prev, st node.Status) {
	switch {
	case st.Halted != "" && prev.Halted == "":
		m.log.Error("halted", "reason", st.Halted)
	case st.Phase == "done" && prev.Phase != "done":
		m.log.Info("all rounds done", "applied_round", st.Applied, "model", short(st.Model))
	case st.Round != prev.Round:
		m.log.Info("round started", "applied_round", st.Applied, "leader", st.Leader)
	case st.Phase != prev.Phase:
		m.log.Debug("phase changed", "from", prev.Phase)
	}
	if len(st.Alarms) > len(prev.Alarms) {
		for _, a := range st.Alarms[len(prev.Alarms):] {
			m.log.Warn("alarm raised", "alarm", a)
		}
	}
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}
