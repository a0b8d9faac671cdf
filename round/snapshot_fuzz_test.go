package round

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func snapshotSeeds() map[string][]byte {
	s := seedSnapshot()
	enc := string(mustMarshal(s))
	seeds := map[string][]byte{
		"attested":        []byte(enc),
		"unattested":      mustMarshal(&Snapshot{State: s.State, Members: s.Members}),
		"null-attests":    []byte(strings.Replace(enc, `"attests":[`, `"attests":[null,`, 1)),
		"unknown-field":   []byte(strings.Replace(enc, `"state":{`, `"state":{"Extra":1,`, 1)),
		"trailing-data":   []byte(enc + "]"),
		"empty-snapshot":  mustMarshal(&Snapshot{}),
		"huge-round":      []byte(strings.Replace(enc, `"Round":5`, `"Round":18446744073709551616`, 1)),
		"model-too-short": []byte(`{"state":{"Index":1,"Round":1,"Model":[1,2,3]},"members":null,"attests":null}`),
	}
	return withMalformed(seeds)
}

// FuzzDecodeSnapshot: DecodeSnapshot never panics on a snapshot's data
// (raft hands it over from the network in a MsgSnap), and what it accepts
// marshals back (as maybeSnapshot marshals a snapshot) into data it
// accepts again, a fixed point after one pass. The checks against the
// attestations are verifySnapshot's, fuzzed through FuzzStepRaft (MsgSnap)
// and here against a fresh member.
func FuzzDecodeSnapshot(f *testing.F) {
	m := fuzzMachine(f, 0)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeSnapshot(data)
		if err != nil {
			if s != nil {
				t.Fatalf("DecodeSnapshot error %v with snapshot %v", err, s)
			}
			return
		}
		enc, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("accepted snapshot does not marshal: %v", err)
		}
		s2, err := DecodeSnapshot(enc)
		if err != nil {
			t.Fatalf("accepted %q, refused its re-encoding %q: %v", data, enc, err)
		}
		if enc2, _ := json.Marshal(s2); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not canonical: %q then %q", enc, enc2)
		}
		_ = m.verifySnapshot(s) // read-only: must not panic on nil or odd attestations
	})
}
