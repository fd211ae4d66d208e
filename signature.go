package outlast

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// Webhook signing, shared by the partner side (partnersim, real banks' docs)
// and the receiving side (http): HMAC-SHA256 over timestamp + "." + body,
// hex-encoded, sent as the Outlast-Signature header with the unix-seconds
// timestamp in Outlast-Timestamp.
const (
	HeaderTimestamp = "Outlast-Timestamp"
	HeaderSignature = "Outlast-Signature"
	// SignatureWindow is how far a webhook's timestamp may be from now, in
	// either direction, before it is refused as stale (replay defence).
	SignatureWindow = 5 * time.Minute
)

// Sign returns the hex HMAC-SHA256 of timestamp + "." + body under secret.
func Sign(secret []byte, timestamp int64, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(strconv.FormatInt(timestamp, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// VerifySignature checks a webhook's timestamp header and signature header
// against body at now, in constant time. It returns EUNAUTHORIZED with a
// reason a partner's engineer can act on.
func VerifySignature(secret []byte, timestampHeader, signatureHeader string, body []byte, now time.Time) error {
	// Only the spelling Sign writes: ParseInt also takes "+1700000000"
	// and "01700000000", which would let one signature pass under several
	// headers.
	ts, err := strconv.ParseInt(timestampHeader, 10, 64)
	if err != nil || ts <= 0 || strconv.FormatInt(ts, 10) != timestampHeader {
		return Errorf(EUNAUTHORIZED, "%s must be unix seconds in decimal digits, with no sign or leading zero", HeaderTimestamp)
	}
	skew := now.Sub(time.Unix(ts, 0))
	if skew > SignatureWindow || skew < -SignatureWindow {
		return Errorf(EUNAUTHORIZED, "%s is outside the %s window", HeaderTimestamp, SignatureWindow)
	}
	got, err := hex.DecodeString(signatureHeader)
	if err != nil || len(got) != sha256.Size {
		return Errorf(EUNAUTHORIZED, "%s must be a hex HMAC-SHA256", HeaderSignature)
	}
	want, _ := hex.DecodeString(Sign(secret, ts, body))
	if !hmac.Equal(got, want) {
		return Errorf(EUNAUTHORIZED, "signature does not match")
	}
	return nil
}
