package relay_test

import (
	"crypto/rand"
	"encoding/hex"
)

func randomHex() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
