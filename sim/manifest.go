package sim

import (
	"time"

	"github.com/globalbrain/globalbrain/identity"
	"github.com/globalbrain/globalbrain/manifest"
	"github.com/globalbrain/globalbrain/train"
)

// SimDeadline is the round deadline of simulated consortia, in virtual time.
const SimDeadline = 10 * time.Second

// Manifest is the genesis manifest a simulation's flags describe: both the
// direct loop and the nodes derive the consortium ID, the sampling and G(0)
// from it.
func (c Config) Manifest(members []Member, d *train.Dataset) (*manifest.Manifest, error) {
	ids := make([]identity.PeerID, len(members))
	for i, m := range members {
		ids[i] = m.Identity.ID
	}
	m := manifest.Example(ids)
	m.Name = "simulate"
	m.Model = manifest.Model{Arch: c.Model, Height: d.Height, Width: d.Width, Channels: d.Channels, Classes: d.Classes, InitSeed: c.Seed}
	t := c.Strategy.Train
	m.Training = manifest.Training{Rounds: c.Rounds, Epochs: t.Epochs, BatchSize: t.BatchSize, LR: t.LR, ProxMu: t.ProxMu}
	m.Round.Fraction = c.Fraction
	m.Round.MinParticipants = c.MinParticipants
	m.Round.Deadline = manifest.Duration(SimDeadline)
	m.Round.MaxExamplesPerMember = c.MaxExamples
	if c.MaxExamples == 0 {
		m.Round.MaxExamplesPerMember = int64(d.N)
	}
	s := c.Strategy
	m.Strategy = manifest.Strategy{Name: s.Strategy, ServerLR: s.ServerLR, Momentum: s.Momentum, Beta1: s.Beta1,
		Beta2: s.Beta2, Tau: s.Tau, TrimFraction: s.TrimFraction, Byzantine: s.Byzantine, MultiKrumM: s.MultiKrumM, ClipNorm: s.ClipNorm}
	if c.PrivacyOn() {
		m.Privacy = c.Privacy
		m.ApplyDefaults()
	}
	return m, m.Validate()
}
