package manifest_test

import (
	"fmt"
	"strings"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
)

func ExampleParse() {
	ids := make([]string, 3)
	for i := range ids {
		ids[i] = identity.Derive(1, i).ID.String()
	}
	doc := `
name: three-labs
members:
  - {id: ` + ids[0] + `, voter: true}
  - {id: ` + ids[1] + `, voter: true}
  - {id: ` + ids[2] + `, voter: true}
model: {arch: 2nn, height: 28, width: 28, channels: 1, classes: 10}
round:
  min_participants: 2
  max_examples_per_member: 20000
`
	m, err := manifest.Parse([]byte(doc), "three-labs.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(m.Voters()), "voters,", m.StrategyConfig().Strategy, "with deadline", m.Round.Deadline, "=", m.DeadlineTicks(), "ticks")

	// A typo is reported with the file, the line and the field.
	_, err = manifest.Parse([]byte(strings.Replace(doc, "min_participants", "min_participant", 1)), "three-labs.yaml")
	fmt.Println(err)
	// Output:
	// 3 voters, fedavg with deadline 1m0s = 600 ticks
	// three-labs.yaml:9: round.min_participant: unknown field, want one of fraction, min_participants, over_select, tick, deadline, election_ticks, max_examples_per_member, retain_rounds
}

func ExampleExample() {
	ids := make([]identity.PeerID, 10)
	for i := range ids {
		ids[i] = identity.Derive(1, i).ID
	}
	m := manifest.Example(ids)
	fmt.Println(len(m.MemberIDs()), "members,", len(m.Voters()), "voters, valid:", m.Validate() == nil)
	// Output:
	// 10 members, 5 voters, valid: true
}
