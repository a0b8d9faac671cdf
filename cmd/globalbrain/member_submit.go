package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/globalbrain/globalbrain/api"
)

func memberSubmit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var httpAddr string
	path, cfgPath, err := memberFlags("submit", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&httpAddr, "http", "", "host:port of the node's API (default: the http of --config)")
	})
	if err != nil {
		return err
	}
	_, m, err := loadNode(cfgPath)
	if err != nil {
		return fmt.Errorf("member submit: %w", err)
	}
	req, err := readRequest(path)
	if err != nil {
		return fmt.Errorf("member submit: %w", err)
	}
	if err := api.CountSignatures(req, m.ConsortiumID(), m.MemberIDs()).Err(); err != nil {
		return fmt.Errorf("member submit: %s: %w", path, err)
	}
	if httpAddr == "" {
		if httpAddr, err = apiAddr("", cfgPath); err != nil {
			return fmt.Errorf("member submit: %w", err)
		}
	}
	resp, code, err := postSubmit(ctx, httpAddr, req.Encode())
	if err != nil {
		return fmt.Errorf("member submit: %w", err)
	}
	switch code {
	case http.StatusOK:
		fmt.Fprintf(stdout, "proposed adding %s; every member validates it when it commits (see globalbrain status)\n", req.Member)
		return nil
	case http.StatusConflict:
		if strings.HasPrefix(resp.Error, "not the leader") {
			return fmt.Errorf("member submit: %s; submit it on the leader's node", resp.Error)
		}
		return fmt.Errorf("member submit: %s", resp.Error)
	}
	return fmt.Errorf("member submit: the node refused the request (%d): %s", code, resp.Error)
}

func postSubmit(ctx context.Context, addr string, body []byte) (api.SubmitResponse, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	url := "http://" + addr + "/member/submit"
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return api.SubmitResponse{}, 0, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		return api.SubmitResponse{}, 0, fmt.Errorf("cannot reach the node's API at %s (is `globalbrain run` running?): %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return api.SubmitResponse{}, 0, err
	}
	var out api.SubmitResponse
	if err := json.Unmarshal(b, &out); err != nil {
		out.Error = strings.TrimSpace(string(b))
	}
	return out, resp.StatusCode, nil
}
