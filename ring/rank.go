package ring

import (
	"cmp"
	"slices"
)

// FNV-1a 64-bit parameters.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// memberSeed returns the FNV-1a state after hashing member followed by a zero byte. The zero
// byte separates member from key so that ("ab", "c") and ("a", "bc") hash differently; it
// cannot occur inside a valid "host:port".
func memberSeed(member string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(member); i++ {
		h ^= uint64(member[i])
		h *= fnvPrime64
	}
	// The separator byte: XOR with zero is the identity, so only the multiply remains.
	h *= fnvPrime64
	return h
}

// weight continues the FNV-1a hash from seed over key and finishes it with the MurmurHash3
// fmix64 finalizer. FNV-1a alone only carries differences toward the high bits; the finalizer
// spreads every input bit over the whole word, so weights of similar members ("10.0.0.1:80",
// "10.0.0.2:80") and similar keys are independent.
func weight(seed uint64, key string) uint64 {
	h := seed
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= fnvPrime64
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// Weight returns member's rendezvous weight for key. Rank orders members by it, highest
// first. It is exposed for diagnostics (`ring status` can show why a member owns a key).
func Weight(member, key string) uint64 {
	return weight(memberSeed(member), key)
}

// ranked is one member with its weight for the key being ranked.
type ranked struct {
	w      uint64
	member string
}

// rankSeeded orders members (with precomputed seeds) for key, highest weight first. Ties,
// which need two 64-bit weights to collide, are broken by address so the order stays total and
// identical everywhere.
func rankSeeded(key string, members []string, seeds []uint64) []string {
	rs := make([]ranked, len(members))
	for i, m := range members {
		rs[i] = ranked{w: weight(seeds[i], key), member: m}
	}
	slices.SortFunc(rs, func(a, b ranked) int {
		if c := cmp.Compare(b.w, a.w); c != 0 {
			return c
		}
		return cmp.Compare(a.member, b.member)
	})
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.member
	}
	return out
}

// Rank returns every distinct member ordered by preference for key: the first R entries are
// the key's R replicas. The order is deterministic (it depends only on the key and the set of
// members, not on the order or repetition of members) and stable: removing a member from the
// set removes it from every ranking without reordering the others, and adding one inserts it
// without reordering the others. Duplicates are removed. Rank does not modify members and
// returns a new slice; it returns an empty slice when members is empty.
func Rank(key string, members []string) []string {
	uniq := dedupe(members)
	seeds := make([]uint64, len(uniq))
	for i, m := range uniq {
		seeds[i] = memberSeed(m)
	}
	return rankSeeded(key, uniq, seeds)
}

// dedupe returns the distinct members in lexical order, in a new slice.
func dedupe(members []string) []string {
	out := slices.Clone(members)
	slices.Sort(out)
	return slices.Compact(out)
}
