package member_test

import (
	"context"
	"strings"
	"testing"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/member"
	"github.com/globalbrain/globalbrain/member/membertest"
	"github.com/globalbrain/globalbrain/node"
)

// Under dp-sgd a trainer that is not DP-SGD cannot publish: the node
// refuses to start, saying so.
func TestDPSGDNeedsADPSGDTrainer(t *testing.T) {
	var ids []identity.PeerID
	for i := range 3 {
		ids = append(ids, identity.Derive(7, i).ID)
	}
	man := manifest.Example(ids)
	man.Privacy = manifest.Privacy{Mode: manifest.PrivacyDPSGD, DP: manifest.DP{Z: 1, ExampleClip: 1, Epsilon: 3}}
	man.ApplyDefaults()
	if err := man.Validate(); err != nil {
		t.Fatal(err)
	}
	_, err := member.Open(context.Background(), member.Options{Identity: identity.Derive(7, 0), Manifest: man, StoreDir: t.TempDir(),
		MemNet: node.NewMemNet(1), Trainer: membertest.FixedTrainer{Scale: 1}})
	if err == nil || !strings.Contains(err.Error(), "privacy.mode dp-sgd needs a DP-SGD trainer") {
		t.Errorf("Open = %v, want a DP-SGD trainer asked for", err)
	}
}
