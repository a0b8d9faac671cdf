package member

import (
	"context"
	"log/slog"
	"maps"
	"slices"
)

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
