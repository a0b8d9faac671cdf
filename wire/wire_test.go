package wire

import "testing"

func TestVerdictString(t *testing.T) {
	for v, want := range map[Verdict]string{Accept: "accept", Ignore: "ignore", Reject: "reject", Verdict(7): "verdict(7)"} {
		if got := v.String(); got != want {
			t.Errorf("Verdict(%d).String() = %q, want %q", int(v), got, want)
		}
	}
}
