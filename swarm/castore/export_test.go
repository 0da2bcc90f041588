package castore

// RereadBytes reports how many upload bytes were hashed a second time, for tests that check
// the persisted hash state spares the re-read.
func (s *Store) RereadBytes() int64 { return s.reread.Load() }

// SetFault makes step return err from fault (nil: carry on) at every fault-injection point of
// the store, so tests can fail a write as a full disk would. Set it before using the store.
func (s *Store) SetFault(fault func(step string) error) { s.inject = fault }

// The fault-injection steps, for SetFault.
const (
	StepWrite      = stepWrite
	StepSync       = stepSync
	StepPrepare    = stepPrepare
	StepMeta       = stepMeta
	StepMetaRename = stepMetaRename
	StepRename     = stepRename
	StepRenamed    = stepRenamed
)
