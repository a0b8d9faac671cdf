package round

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func messageSeeds() map[string][]byte {
	seeds := map[string][]byte{}
	for name, m := range seedMessages() {
		seeds[name] = m.Encode()
	}
	ann := seedMessages()["announce"]
	enc := string(ann.Encode())
	seeds["trailing-data"] = []byte(enc + `{"kind":"have"}`)
	seeds["unknown-field"] = []byte(strings.Replace(enc, `"kind"`, `"extra":1,"kind"`, 1))
	seeds["upper-case-keys"] = []byte(strings.Replace(strings.Replace(enc, `"kind"`, `"KIND"`, 1), `"round"`, `"Round"`, 1))
	seeds["duplicate-round"] = []byte(strings.Replace(enc, `"round":1`, `"round":1,"round":2`, 1))
	seeds["round-0"] = []byte(strings.Replace(enc, `"round":1`, `"round":0`, 1))
	seeds["negative-length"] = []byte(strings.Replace(enc, `"length":40`, `"length":-40`, 1))
	seeds["short-author"] = []byte(`{"kind":"have","round":1,"author":"AAAA","sig":""}`)
	seeds["unknown-kind"] = []byte(strings.Replace(enc, `"announce"`, `"join"`, 1))
	// Near the size limit, with a reason the encoder escapes: each '<' is one
	// byte here and six ("\u003c") once re-encoded.
	big := &Message{Kind: KindInvalid, Round: 1, Index: 2}
	big.Sign(fuzzConsortium, fuzzIDs[0])
	pre := string(big.Encode())
	pad := MaxMessageBytes - len(pre) - len(`,"reason":""`)
	seeds["escapes-near-limit"] = []byte(strings.Replace(pre, `"index":2`, `"index":2,"reason":"`+strings.Repeat("<", pad)+`"`, 1))
	return withMalformed(seeds)
}

// FuzzDecodeMessage: DecodeMessage never panics, and what it accepts
// re-encodes into a message it accepts again, equal to the first; the
// re-encoding is canonical (encoding it again gives the same bytes).
//
// The one exception, documented here rather than asserted away: Encode
// (encoding/json) escapes '<', '>', '&', U+2028 and U+2029 and writes
// U+FFFD for invalid UTF-8, so a string field can grow up to six-fold when
// re-encoded. A message accepted close to MaxMessageBytes may therefore
// re-encode beyond it and be refused as malformed (seed escapes-near-limit).
func FuzzDecodeMessage(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMessage(data)
		if err != nil {
			if m != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeMessage error %v with message %v", err, m)
			}
			return
		}
		enc := m.Encode()
		m2, err := DecodeMessage(enc)
		if len(enc) > MaxMessageBytes {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("re-encoding of %d bytes beyond the limit: %v", len(enc), err)
			}
			return
		}
		if err != nil {
			t.Fatalf("accepted %q, refused its re-encoding %q: %v", data, enc, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the message:\n in  %q\n out %q\n %#v\n %#v", data, enc, m, m2)
		}
		if !bytes.Equal(enc, m2.Encode()) {
			t.Fatalf("encoding is not canonical: %q then %q", enc, m2.Encode())
		}
		if !bytes.Equal(m.signedBytes(fuzzConsortium), m2.signedBytes(fuzzConsortium)) {
			t.Fatal("round trip changed the signed bytes")
		}
	})
}
