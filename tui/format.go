package tui

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/charmbracelet/x/ansi"
	"github.com/opencontainers/go-digest"
)

// FormatBytes renders n bytes in binary units with three significant digits ("512 B",
// "1.50 KiB", "412 MiB"), so columns of sizes stay narrow and comparable.
func FormatBytes(n float64) string {
	if math.IsNaN(n) || math.IsInf(n, 0) {
		return "?"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	var s string
	switch {
	case i == 0:
		s = fmt.Sprintf("%.0f %s", n, units[i])
	case n >= 100:
		s = fmt.Sprintf("%.0f %s", n, units[i])
	case n >= 10:
		s = fmt.Sprintf("%.1f %s", n, units[i])
	default:
		s = fmt.Sprintf("%.2f %s", n, units[i])
	}
	if neg {
		s = "-" + s
	}
	return s
}

// FormatRate renders a rate in bytes per second ("45.0 MiB/s").
func FormatRate(bps float64) string {
	return FormatBytes(bps) + "/s"
}

// FormatDuration renders d coarsely, as an operator reads an ETA: "45s", "3m05s", "2h10m",
// "3d4h"; "-" for zero or less (unknown or done).
func FormatDuration(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	d = d.Round(time.Second)
	if d < time.Second {
		return "<1s"
	}
	h := int64(d / time.Hour)
	m := int64(d/time.Minute) % 60
	s := int64(d/time.Second) % 60
	switch {
	case h >= 24:
		return fmt.Sprintf("%dd%dh", h/24, h%24)
	case h > 0:
		return fmt.Sprintf("%dh%02dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm%02ds", m, s)
	default:
		return fmt.Sprintf("%ds", s)
	}
}

// FormatSeconds is FormatDuration of a float number of seconds (the snapshot's ETA).
func FormatSeconds(s float64) string {
	if math.IsNaN(s) || s <= 0 {
		return "-"
	}
	if s > float64(math.MaxInt64/int64(time.Second)) {
		return "∞"
	}
	return FormatDuration(time.Duration(s * float64(time.Second)))
}

// ShortDigest is the first 12 hex characters of a digest, the way docker shortens image ids;
// enough to tell the swarms of one cluster apart.
func ShortDigest(d digest.Digest) string {
	s := string(d)
	if _, hex, ok := strings.Cut(s, ":"); ok {
		s = hex
	}
	if len(s) > 12 {
		s = s[:12]
	}
	return s
}

// formatPercent renders a fraction in [0, 1] as a percentage.
func formatPercent(f float64) string {
	if math.IsNaN(f) {
		return "?"
	}
	return fmt.Sprintf("%.0f%%", clamp01(f)*100)
}

func clamp01(f float64) float64 {
	switch {
	case math.IsNaN(f) || f < 0:
		return 0
	case f > 1:
		return 1
	}
	return f
}

// bar draws a fraction in [0, 1] as width cells of full and empty blocks.
func bar(f float64, width int) string {
	if width <= 0 {
		return ""
	}
	full := int(math.Round(clamp01(f) * float64(width)))
	return strings.Repeat("█", full) + strings.Repeat("░", width-full)
}

// fit pads or truncates s (which may hold ANSI codes) to exactly width cells.
func fit(s string, width int) string {
	if width <= 0 {
		return ""
	}
	w := ansi.StringWidth(s)
	if w > width {
		return ansi.Truncate(s, width, "…")
	}
	return s + strings.Repeat(" ", width-w)
}

// clip truncates s to at most width cells without padding.
func clip(s string, width int) string {
	if width <= 0 {
		return ""
	}
	if ansi.StringWidth(s) > width {
		return ansi.Truncate(s, width, "…")
	}
	return s
}

// padLeft right-aligns plain s in width cells.
func padLeft(s string, width int) string {
	w := ansi.StringWidth(s)
	if w >= width {
		return s
	}
	return strings.Repeat(" ", width-w) + s
}
