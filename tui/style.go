package tui

import (
	"io"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
)

// styles are the view's lipgloss styles, made from one renderer so that a test (or NO_COLOR)
// fixes the colour profile for every one of them. Colours are adaptive: each has a light and a
// dark terminal variant, chosen by the renderer's background detection.
type styles struct {
	r *lipgloss.Renderer

	title, focusTitle, header, dim, selected lipgloss.Style
	origin, good, warn, bad, paused, key     lipgloss.Style
	help                                     lipgloss.Style
}

var (
	colAccent = lipgloss.AdaptiveColor{Light: "#005FAF", Dark: "#5FAFFF"}
	colDim    = lipgloss.AdaptiveColor{Light: "#6C6C6C", Dark: "#8A8A8A"}
	colOrigin = lipgloss.AdaptiveColor{Light: "#8700AF", Dark: "#D787FF"}
	colGood   = lipgloss.AdaptiveColor{Light: "#007F00", Dark: "#5FD75F"}
	colWarn   = lipgloss.AdaptiveColor{Light: "#AF5F00", Dark: "#FFAF00"}
	colBad    = lipgloss.AdaptiveColor{Light: "#AF0000", Dark: "#FF5F5F"}
	colSelBg  = lipgloss.AdaptiveColor{Light: "#D7E6F5", Dark: "#303A4A"}
)

// newStyles builds the styles on r; noColor forces the ASCII profile (no escape codes at all,
// as NO_COLOR asks). A nil r is lipgloss's default renderer (standard output).
func newStyles(r *lipgloss.Renderer, noColor bool) styles {
	if r == nil {
		r = lipgloss.DefaultRenderer()
	}
	if noColor {
		// A renderer of its own: setting the profile on the default one would change it for
		// every other user of lipgloss in the process.
		nr := lipgloss.NewRenderer(io.Discard)
		nr.SetColorProfile(termenv.Ascii)
		r = nr
	}
	s := styles{r: r}
	s.title = r.NewStyle().Bold(true)
	s.focusTitle = r.NewStyle().Bold(true).Foreground(colAccent)
	s.header = r.NewStyle().Foreground(colDim).Bold(true)
	s.dim = r.NewStyle().Foreground(colDim)
	s.selected = r.NewStyle().Background(colSelBg).Bold(true)
	s.origin = r.NewStyle().Foreground(colOrigin).Bold(true)
	s.good = r.NewStyle().Foreground(colGood)
	s.warn = r.NewStyle().Foreground(colWarn)
	s.bad = r.NewStyle().Foreground(colBad).Bold(true)
	s.paused = r.NewStyle().Foreground(colWarn).Bold(true).Reverse(true)
	s.key = r.NewStyle().Foreground(colAccent).Bold(true)
	s.help = r.NewStyle().Border(lipgloss.RoundedBorder()).BorderForeground(colAccent).Padding(0, 1)
	return s
}
