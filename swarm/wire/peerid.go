package wire

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
)

// A peer id may be bound to the holder named by its certificate, so that a peer with a
// certificate of its own cannot take another host's peer id (and with it that host's place in
// the tracker's handouts, or its standing in other peers' blacklists). The id is a random salt
// followed by a tag: the first bytes of SHA-256 over a fixed label, the salt and the holder's
// name. Anyone can check a tag; making one for a name needs a preimage of the hash.
//
// The salt keeps hosts that share one certificate (one Secret for a whole DaemonSet) apart:
// each process draws its own, so their ids differ, though any of them could claim another's
// id — they hold the same key, so they are one identity anyway. With 8 bytes of salt, two of
// 100,000 hosts on one certificate draw the same salt with odds of about 3 in 10^10.
const (
	boundSaltLength = 8
	boundTagLength  = PeerIDLength - boundSaltLength
	boundLabel      = "krakenctl peer id v1\x00"
)

// BoundPeerID returns a fresh peer id bound to holder: a random salt and the tag of holder
// under it. Peers check it with PeerID.BoundTo against the name in the certificate the
// connection presented.
func BoundPeerID(holder string) PeerID {
	var id PeerID
	_, _ = rand.Read(id[:boundSaltLength]) // crypto/rand.Read never returns an error.
	tag := boundTag(id[:boundSaltLength], holder)
	copy(id[boundSaltLength:], tag[:boundTagLength])
	return id
}

// BoundTo reports whether id was made by BoundPeerID for holder.
func (id PeerID) BoundTo(holder string) bool {
	tag := boundTag(id[:boundSaltLength], holder)
	return subtle.ConstantTimeCompare(id[boundSaltLength:], tag[:boundTagLength]) == 1
}

func boundTag(salt []byte, holder string) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(boundLabel))
	h.Write(salt)
	h.Write([]byte(holder))
	return [sha256.Size]byte(h.Sum(nil))
}
