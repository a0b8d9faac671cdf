package identity

import (
	"crypto/ed25519"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDeriveIsDeterministicAndDistinct(t *testing.T) {
	a, b := Derive(1, 0), Derive(1, 0)
	require.Equal(t, a.ID, b.ID)
	require.NotEqual(t, a.ID, Derive(1, 1).ID)
	require.NotEqual(t, a.ID, Derive(2, 0).ID)
	msg := []byte("announce")
	require.True(t, ed25519.Verify(a.Public, msg, ed25519.Sign(b.Private, msg)))
}

// TestPeerIDTextForm checks the libp2p text form: Ed25519 peer IDs are
// identity multihashes and so always start with "12D3KooW".
func TestPeerIDTextForm(t *testing.T) {
	for i := range 20 {
		id := Derive(7, i).ID
		s := id.String()
		require.Len(t, s, 52)
		require.Equal(t, "12D3KooW", s[:8])
		back, err := ParsePeerID(s)
		require.NoError(t, err)
		require.Equal(t, id, back)
		pub, err := back.PublicKey()
		require.NoError(t, err)
		require.Equal(t, Derive(7, i).Public, pub)
	}
}

func TestParsePeerIDErrors(t *testing.T) {
	for _, s := range []string{"", "0OIl", "12D3", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"} {
		_, err := ParsePeerID(s)
		require.Error(t, err, s)
	}
}
