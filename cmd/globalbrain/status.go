package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/globalbrain/globalbrain/api"
	"github.com/globalbrain/globalbrain/nodeconfig"
)

// statusTimeout bounds a status request.
const statusTimeout = 5 * time.Second

// status is `globalbrain status`: a readable summary of a running node's
// /status.
func status(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	httpAddr := fs.String("http", "", "host:port of the node's API (default "+nodeconfig.DefaultHTTP+", or the http of --config)")
	cfgPath := fs.String("config", "", "the node's config; its http address is asked")
	asJSON := fs.Bool("json", false, "print the /status document as it is (with --watch: one line per interval)")
	watch := fs.Bool("watch", false, "print the status again every --interval until interrupted")
	interval := fs.Duration("interval", 2*time.Second, "with --watch: time between two prints")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: globalbrain status [--http 127.0.0.1:9464 | --config node.yaml] [--json] [--watch [--interval 2s]]\n\n")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("status: unexpected argument %q", pos[0])
	}
	addr, err := apiAddr(*httpAddr, *cfgPath)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if !*watch {
		return showStatus(ctx, stdout, addr, *asJSON)
	}
	if *interval <= 0 {
		return fmt.Errorf("status: --interval %v: want a positive duration", *interval)
	}
	return watchStatus(ctx, stdout, addr, *asJSON, *interval)
}

// showStatus prints the node's status once.
func showStatus(ctx context.Context, stdout io.Writer, addr string, asJSON bool) error {
	body, err := getStatus(ctx, addr)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var st api.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("status: http://%s/status is not a globalbrain status document: %w", addr, err)
	}
	printStatus(stdout, &st)
	return nil
}

// watchStatus reprints the status every interval until ctx ends (SIGINT).
// A node that cannot be reached is said and asked again: a restarting
// node does not end the watch. On a terminal the screen is redrawn; else
// each print starts with a line naming the time.
func watchStatus(ctx context.Context, stdout io.Writer, addr string, asJSON bool, interval time.Duration) error {
	tty := false
	if f, ok := stdout.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		var b bytes.Buffer
		err := showStatus(ctx, &b, addr, asJSON)
		if ctx.Err() != nil {
			return nil
		}
		var out bytes.Buffer
		switch {
		case asJSON && err != nil:
			fmt.Fprintf(&out, "{\"error\":%q}\n", err.Error())
		case asJSON:
			if err := json.Compact(&out, b.Bytes()); err != nil {
				out.Reset()
				fmt.Fprintf(&out, "{\"error\":%q}", "status: not a JSON document: "+err.Error())
			}
			out.WriteByte('\n')
		default:
			if tty {
				out.WriteString("\033[H\033[2J")
			}
			fmt.Fprintf(&out, "-- %s, every %v (Ctrl-C stops)\n", time.Now().Format(time.TimeOnly), interval)
			if err != nil {
				fmt.Fprintf(&out, "%v\n", err)
			} else {
				out.Write(b.Bytes())
			}
		}
		if _, err := stdout.Write(out.Bytes()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// apiAddr picks the API address: --http, else the config's http (an
// address on every interface is asked on loopback), else the default.
func apiAddr(httpAddr, cfgPath string) (string, error) {
	switch {
	case httpAddr != "" && cfgPath != "":
		return "", errors.New("give --http or --config, not both")
	case httpAddr != "":
		return httpAddr, nil
	case cfgPath != "":
		c, err := nodeconfig.Load(cfgPath)
		if err != nil {
			return "", err
		}
		host, port, err := net.SplitHostPort(c.HTTP)
		if err != nil {
			return "", err
		}
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		return net.JoinHostPort(host, port), nil
	}
	return nodeconfig.DefaultHTTP, nil
}

// getStatus fetches /status, with an error that says what to check when
// the node cannot be reached.
func getStatus(ctx context.Context, addr string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	url := "http://" + addr + "/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the node's API at %s (is `globalbrain run` running, with http: %s in its config?): %w", url, addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// printStatus writes the summary an operator reads.
func printStatus(w io.Writer, st *api.Status) {
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-10s%s\n", label, fmt.Sprintf(format, args...))
	}
	role := "member"
	if st.Leader {
		role = "leader"
	}
	line("peer", "%s (%s)", st.Peer, role)
	line("round", "%d, phase %s", st.Round, st.Phase)
	line("applied", "round %d, model %s", st.Applied, st.Model)
	if st.LeaderPeer != "" && !st.Leader {
		line("leader", "%s", st.LeaderPeer)
	}
	if a := st.Accuracy; a != nil {
		line("accuracy", "%.4f (loss %.4f) of round %d's model on %d test examples", a.Accuracy, a.Loss, a.Round, a.Examples)
	} else {
		line("accuracy", "not evaluated yet")
	}
	line("members", "%d, %d of %d others connected", st.Members, st.PeersConnected, max(len(st.Peers)-1, 0))
	for _, p := range st.Peers {
		state := "not connected"
		switch {
		case p.Self:
			state = "this node"
		case p.Connected:
			state = "connected"
		}
		fmt.Fprintf(w, "  %s  %s\n", p.ID, state)
	}
	if p := st.Privacy; p != nil {
		line("privacy", "%s: epsilon %.4g of %.4g spent at delta %g, %d rounds charged", p.Mode, p.Spent, p.Ceiling, p.Delta, p.Rounds)
		if p.Exhausted {
			fmt.Fprintf(w, "  ! privacy budget exhausted: declining rounds (%d declined by this run)\n", p.Declines)
		}
	}
	c := st.Counters
	line("counters", "stale entries %d, invalid entries %d, rejected messages %d, ignored messages %d, re-proposals %d",
		c.StaleEntries, c.InvalidEntries, c.RejectedMessages, c.IgnoredMessages, c.Reproposals)
	if n := len(c.RaftRefused); n > 0 || c.ExcludedUpdates > 0 || c.Equivocations > 0 {
		var refused uint64
		for _, v := range c.RaftRefused {
			refused += v
		}
		line("refused", "raft messages %d, excluded updates %d, equivocations %d", refused, c.ExcludedUpdates, c.Equivocations)
	}
	for _, e := range st.Evidence {
		fmt.Fprintf(w, "  evidence: %s announced %.12s and %.12s for round %d\n", e.Author, e.First, e.Second, e.Round)
	}
	if st.Halted != "" {
		line("HALTED", "%s", st.Halted)
	}
	if len(st.Alarms) == 0 {
		line("alarms", "none")
		return
	}
	line("alarms", "%d", len(st.Alarms))
	for _, a := range st.Alarms {
		fmt.Fprintf(w, "  ! %s\n", a)
	}
}
