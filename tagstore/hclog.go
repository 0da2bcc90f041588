package tagstore

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// slogLevelTrace is where hclog's Trace lands in slog: below Debug.
const slogLevelTrace = slog.LevelDebug - 4

// hclogAdapter sends hashicorp/raft's hclog output to a *slog.Logger. Names become a "logger"
// attribute ("raft", "raft.snapshot"); key/value arguments become slog attributes. SetLevel
// filters on top of what the slog handler enables; it is shared by every logger derived with
// With or Named, as in hclog.
type hclogAdapter struct {
	base    *slog.Logger // without the name attribute
	l       *slog.Logger // base with name and implied arguments
	name    string
	implied []any
	level   *atomic.Int32
}

func newHclogAdapter(l *slog.Logger, name string) *hclogAdapter {
	lvl := &atomic.Int32{}
	lvl.Store(int32(hclog.Trace))
	return (&hclogAdapter{base: l, level: lvl}).derive(name, nil)
}

func (h *hclogAdapter) derive(name string, implied []any) *hclogAdapter {
	l := h.base
	if name != "" {
		l = l.With("logger", name)
	}
	if len(implied) > 0 {
		l = l.With(implied...)
	}
	return &hclogAdapter{base: h.base, l: l, name: name, implied: implied, level: h.level}
}

func toSlogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return slogLevelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default: // NoLevel, Info
		return slog.LevelInfo
	}
}

func (h *hclogAdapter) enabled(level hclog.Level) bool {
	if level == hclog.Off || (level != hclog.NoLevel && level < hclog.Level(h.level.Load())) {
		return false
	}
	return h.l.Enabled(context.Background(), toSlogLevel(level))
}

// Log emits msg at level. A first argument of type hclog.Format formats the message.
func (h *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if !h.enabled(level) {
		return
	}
	if len(args) > 0 {
		if f, ok := args[0].(hclog.Format); ok && len(f) > 0 {
			if format, ok := f[0].(string); ok {
				msg = msg + " " + fmt.Sprintf(format, f[1:]...)
			}
			args = args[1:]
		}
	}
	h.l.Log(context.Background(), toSlogLevel(level), msg, args...)
}

func (h *hclogAdapter) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogAdapter) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogAdapter) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogAdapter) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogAdapter) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hclogAdapter) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *hclogAdapter) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *hclogAdapter) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *hclogAdapter) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *hclogAdapter) IsError() bool { return h.enabled(hclog.Error) }

// ImpliedArgs returns the arguments added with With.
func (h *hclogAdapter) ImpliedArgs() []any { return h.implied }

// With returns a logger that adds args to every message.
func (h *hclogAdapter) With(args ...any) hclog.Logger {
	implied := make([]any, 0, len(h.implied)+len(args))
	implied = append(append(implied, h.implied...), args...)
	return h.derive(h.name, implied)
}

// Name returns the logger's name.
func (h *hclogAdapter) Name() string { return h.name }

// Named returns a logger whose name is this one's with name appended.
func (h *hclogAdapter) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return h.derive(name, h.implied)
}

// ResetNamed returns a logger named name.
func (h *hclogAdapter) ResetNamed(name string) hclog.Logger { return h.derive(name, h.implied) }

// SetLevel sets the minimum level, on top of the slog handler's.
func (h *hclogAdapter) SetLevel(level hclog.Level) { h.level.Store(int32(level)) }

// GetLevel returns the level set with SetLevel (Trace by default: the handler decides).
func (h *hclogAdapter) GetLevel() hclog.Level { return hclog.Level(h.level.Load()) }

// StandardLogger returns a *log.Logger writing to the slog handler, at opts.ForceLevel (Info
// by default).
func (h *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	level := slog.LevelInfo
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		level = toSlogLevel(opts.ForceLevel)
	}
	return slog.NewLogLogger(h.l.Handler(), level)
}

// StandardWriter returns the writer behind StandardLogger.
func (h *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	return h.StandardLogger(opts).Writer()
}

// Interface guards
var _ hclog.Logger = (*hclogAdapter)(nil)
