package bench

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"strings"
	"unicode/utf8"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// svgCanvas writes the chart as SVG text.
type svgCanvas struct{ b *bytes.Buffer }

// writeSVG draws the chart of rows as an SVG file.
func writeSVG(path, title string, rows []plotRow) error {
	w, h := plotSize(len(rows))
	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="12">`+"\n",
		w, h, w, h)
	fmt.Fprintf(&b, "<title>%s</title>\n", xmlEscape(title))
	drawChart(svgCanvas{&b}, title, rows)
	b.WriteString("</svg>\n")
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func (s svgCanvas) rect(x0, y0, x1, y1 float64, fill color.NRGBA) {
	fmt.Fprintf(s.b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"%s/>`+"\n",
		x0, y0, x1-x0, y1-y0, svgColor(fill), svgOpacity("fill", fill))
}

func (s svgCanvas) line(x0, y0, x1, y1, width float64, c color.NRGBA) {
	fmt.Fprintf(s.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%g"%s/>`+"\n",
		x0, y0, x1, y1, svgColor(c), width, svgOpacity("stroke", c))
}

func (s svgCanvas) dot(x, y, r float64, c color.NRGBA) {
	fmt.Fprintf(s.b, `<circle cx="%.1f" cy="%.1f" r="%g" fill="%s"%s/>`+"\n",
		x, y, r, svgColor(c), svgOpacity("fill", c))
}

func (s svgCanvas) text(x, y float64, str string, anchor textAnchor, c color.NRGBA) {
	a := [...]string{anchorStart: "start", anchorMiddle: "middle", anchorEnd: "end"}[anchor]
	fmt.Fprintf(s.b, `<text x="%.1f" y="%.1f" text-anchor="%s" fill="%s">%s</text>`+"\n",
		x, y, a, svgColor(c), xmlEscape(str))
}

func svgColor(c color.NRGBA) string { return fmt.Sprintf("#%02x%02x%02x", c.R, c.G, c.B) }

func svgOpacity(attr string, c color.NRGBA) string {
	if c.A == 0xff {
		return ""
	}
	return fmt.Sprintf(` %s-opacity="%.2f"`, attr, float64(c.A)/0xff)
}

// xmlEscape escapes s for XML character data and attribute values.
func xmlEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '"':
			b.WriteString("&quot;")
		case '\'':
			b.WriteString("&apos;")
		default:
			if r < 0x20 && r != '\t' && r != '\n' || r == utf8.RuneError {
				r = '?' // not allowed in XML 1.0
			}
			b.WriteRune(r)
		}
	}
	return b.String()
}

// pngCanvas draws the chart into an image with the 7×13 bitmap font.
type pngCanvas struct{ img *image.RGBA }

// writePNG draws the chart of rows as a PNG file.
func writePNG(path, title string, rows []plotRow) error {
	w, h := plotSize(len(rows))
	c := pngCanvas{image.NewRGBA(image.Rect(0, 0, w, h))}
	drawChart(c, title, rows)
	var b bytes.Buffer
	if err := png.Encode(&b, c.img); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func (p pngCanvas) fill(r image.Rectangle, c color.NRGBA) {
	draw.Draw(p.img, r, image.NewUniform(c), image.Point{}, draw.Over)
}

func (p pngCanvas) rect(x0, y0, x1, y1 float64, fill color.NRGBA) {
	p.fill(image.Rect(round(x0), round(y0), round(x1), round(y1)), fill)
}

func (p pngCanvas) line(x0, y0, x1, y1, width float64, c color.NRGBA) {
	// Only horizontal and vertical lines are drawn: a rectangle width thick.
	hw := width / 2
	p.fill(image.Rect(round(min(x0, x1)-hw), round(min(y0, y1)-hw), round(max(x0, x1)+hw), round(max(y0, y1)+hw)), c)
}

func (p pngCanvas) dot(x, y, r float64, c color.NRGBA) {
	for dy := -math.Floor(r); dy <= r; dy++ {
		dx := math.Sqrt(r*r - dy*dy)
		yy := round(y + dy)
		p.fill(image.Rect(round(x-dx), yy, round(x+dx)+1, yy+1), c)
	}
}

func (p pngCanvas) text(x, y float64, s string, anchor textAnchor, c color.NRGBA) {
	s = asciiText(s)
	d := font.Drawer{Dst: p.img, Src: image.NewUniform(c), Face: basicfont.Face7x13}
	wpx := float64(d.MeasureString(s).Round())
	switch anchor {
	case anchorMiddle:
		x -= wpx / 2
	case anchorEnd:
		x -= wpx
	}
	d.Dot = fixed.P(round(x), round(y))
	d.DrawString(s)
}

// asciiText spells s in the bitmap font's ASCII: → as ->, µ as u.
func asciiText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '→':
			b.WriteString("->")
		case r == 'µ' || r == 'μ':
			b.WriteByte('u')
		case r < 0x20 || r > 0x7e:
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func round(f float64) int { return int(math.Round(f)) }
