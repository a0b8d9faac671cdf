package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/round"
)

func memberAdd(args []string, stdout, stderr io.Writer) error {
	var out string
	arg, cfgPath, err := memberFlags("add", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&out, "out", "", "where to write the request (default add-<peer>.json)")
	})
	if err != nil {
		return err
	}
	id, err := identity.ParsePeerID(arg)
	if err != nil {
		return fmt.Errorf("member add: %w", err)
	}
	_, m, err := loadNode(cfgPath)
	if err != nil {
		return fmt.Errorf("member add: %w", err)
	}
	if isMember(m.MemberIDs(), id) {
		return fmt.Errorf("member add: %s is already a genesis member of %s", id, m.Name)
	}
	if out == "" {
		out = "add-" + id.Short() + ".json"
	}
	if err := writeRequest(out, round.NewAddMember(id), false); err != nil {
		return fmt.Errorf("member add: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s: a request to add %s to %s\n", out, id, m.Name)
	fmt.Fprintf(stdout, "next: the new member and a majority (%d of %d) of the members each run\n  globalbrain member sign %s --config node.yaml\n",
		len(m.Members)/2+1, len(m.Members), out)
	return nil
}
