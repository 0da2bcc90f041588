package blob

import (
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/krakenctl/krakenctl/cli/iostreams"
)

// progress draws a byte-count progress bar on stderr when stderr is a terminal, and does
// nothing otherwise. Its methods may be called from the goroutine doing the transfer only.
type progress struct {
	bar *progressbar.ProgressBar // nil when not drawing
}

// newProgress starts a bar for total bytes (-1 when unknown) labelled desc. A transient bar
// (for a preparatory step such as hashing) disappears when it finishes; call clear to remove it.
func newProgress(ios *iostreams.IOStreams, total int64, desc string, transient bool) *progress {
	if !ios.IsStderrTTY() || total == 0 {
		return &progress{}
	}
	end := progressbar.OptionOnCompletion(func() { _, _ = ios.ErrOut.Write([]byte("\n")) })
	if transient {
		end = progressbar.OptionClearOnFinish()
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(ios.ErrOut),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		// No timer goroutine for unknown lengths: the bar redraws as bytes move.
		progressbar.OptionSetSpinnerChangeInterval(0),
		end,
	)
	_ = bar.Add64(0) // start the clock now, not at the first update, so the rate is right
	return &progress{bar: bar}
}

// set moves the bar to done bytes; total, when not negative, becomes the bar's length.
func (p *progress) set(done, total int64) {
	if p.bar == nil {
		return
	}
	if total >= 0 && total != p.bar.GetMax64() {
		p.bar.ChangeMax64(total)
	}
	_ = p.bar.Set64(done)
}

// done finishes the bar: filled on success, left where it stopped on failure.
func (p *progress) done(ok bool) {
	if p.bar == nil {
		return
	}
	if ok {
		_ = p.bar.Finish()
		return
	}
	_ = p.bar.Exit()
}

// clear removes a transient bar from the terminal, finished or not.
func (p *progress) clear() {
	if p.bar == nil {
		return
	}
	_ = p.bar.Clear()
	_ = p.bar.Exit()
}
