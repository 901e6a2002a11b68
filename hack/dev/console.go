package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"sync"
	"time"
)

// console writes everyone's output to the terminal, one whole line at a time, each
// line stamped with the time and prefixed with its source: "12:00:01 [manager] ...".
type console struct {
	mu    sync.Mutex
	out   io.Writer
	color bool
	now   func() time.Time
}

func newConsole(out *os.File) *console {
	color := false
	if fi, err := out.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("NO_COLOR") == "" {
		color = true
	}
	return &console{out: out, color: color, now: time.Now}
}

// ANSI colours for prefixes.
const (
	colorDev     = "1"  // bold
	colorServer  = "36" // cyan: control planes, kwok
	colorManager = "35" // magenta
	colorAgent   = "32" // green
	colorWarn    = "33" // yellow
)

// zapTime matches the ISO 8601 timestamp zap starts its console lines with; the
// console's own stamp replaces it, so that every line reads the same way.
var zapTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)\s+`)

// line writes one line under tag.
func (c *console) line(tag, color, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	stamp := c.now().Format("15:04:05")
	if c.color {
		fmt.Fprintf(c.out, "%s \x1b[%sm[%s]\x1b[0m %s\n", stamp, color, tag, text)
		return
	}
	fmt.Fprintf(c.out, "%s [%s] %s\n", stamp, tag, text)
}

// printf writes a message of make dev's own.
func (c *console) printf(format string, args ...any) {
	c.line("dev", colorDev, fmt.Sprintf(format, args...))
}

// tagf writes a message of make dev's own about one component, under its tag.
func (c *console) tagf(tag, color, format string, args ...any) {
	c.line(tag, color, fmt.Sprintf(format, args...))
}

// raw writes text as it is, for the banner.
func (c *console) raw(text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, _ = io.WriteString(c.out, text)
}

// writer returns a writer that prints each complete line under tag.
func (c *console) writer(tag, color string) io.Writer {
	return &lineWriter{emit: func(l string) { c.line(tag, color, zapTime.ReplaceAllString(l, "")) }}
}

// lineWriter splits what is written to it into lines and emits each one.
type lineWriter struct {
	mu   sync.Mutex
	buf  []byte
	emit func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(string(bytes.TrimRight(w.buf[:i], "\r")))
		w.buf = w.buf[i+1:]
	}
	// A process that never ends its line must not grow the buffer without bound.
	if len(w.buf) > 64<<10 {
		w.emit(string(w.buf))
		w.buf = w.buf[:0]
	}
	return len(p), nil
}
