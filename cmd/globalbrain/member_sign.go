package main

import (
	"fmt"
	"io"
	"os"

	"github.com/globalbrain/globalbrain/api"
	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/p2p"
)

func memberSign(args []string, stdout, stderr io.Writer) error {
	path, cfgPath, err := memberFlags("sign", args, stderr, nil)
	if err != nil {
		return err
	}
	c, m, err := loadNode(cfgPath)
	if err != nil {
		return fmt.Errorf("member sign: %w", err)
	}
	req, err := readRequest(path)
	if err != nil {
		return fmt.Errorf("member sign: %w", err)
	}
	if _, err := os.Stat(c.IdentityKey); err != nil {
		return fmt.Errorf("member sign: identity key: %w (run globalbrain init first)", err)
	}
	id, _, err := p2p.LoadOrCreateKey(c.IdentityKey)
	if err != nil {
		return fmt.Errorf("member sign: %w", err)
	}
	self := identity.Compare(id.ID, req.Member) == 0
	members := m.MemberIDs()
	if !self && !isMember(members, id.ID) {
		fmt.Fprintf(stderr, "note: this node (%s) is not a genesis member: its signature counts only if it was added since\n", id.ID)
	}
	cid := m.ConsortiumID()
	req.Sign(cid, id)
	if err := writeRequest(path, req, true); err != nil {
		return fmt.Errorf("member sign: %w", err)
	}
	what := "its agreement"
	if self {
		what = "its own record (the new member)"
	}
	s := api.CountSignatures(req, cid, members)
	fmt.Fprintf(stdout, "signed %s as %s: %s\n", path, id.ID, what)
	fmt.Fprintf(stdout, "%s\n", signatureSummary(s))
	return nil
}

// signatureSummary says where a request stands.
func signatureSummary(s api.Signatures) string {
	record := "not yet signed"
	if s.Record {
		record = "signed"
	}
	line := fmt.Sprintf("the new member's record: %s; %d of %d members signed (a majority is %d)", record, len(s.Signed), s.Members, s.Needed())
	if s.Err() == nil {
		line += "; ready: globalbrain member submit"
	}
	return line
}
