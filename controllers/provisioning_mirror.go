package controllers

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
)

// ChecksumsFile is the file at the root of an artifact mirror that lists the sha256 of
// every artifact, as sha256sum prints them.
const ChecksumsFile = "SHA256SUMS"

// mirrorTTL is how long a mirror's checksums are used before they are read again.
const mirrorTTL = 5 * time.Minute

// mirrors reads and caches the checksums of artifact mirrors
// (spec.provisioning.artifactsURL).
type mirrors struct {
	client *http.Client
	mu     sync.Mutex
	cache  map[string]mirrorEntry
}

type mirrorEntry struct {
	sums    map[string]string
	err     error
	fetched time.Time
}

func newMirrors() *mirrors {
	return &mirrors{client: &http.Client{Timeout: 10 * time.Second}, cache: map[string]mirrorEntry{}}
}

// checksums returns the mirror's artifacts and their sha256.
func (m *mirrors) checksums(ctx context.Context, base string) (map[string]string, error) {
	m.mu.Lock()
	e, ok := m.cache[base]
	m.mu.Unlock()
	if ok && time.Since(e.fetched) < mirrorTTL {
		return e.sums, e.err
	}
	sums, err := m.fetch(ctx, base)
	m.mu.Lock()
	m.cache[base] = mirrorEntry{sums: sums, err: err, fetched: time.Now()}
	m.mu.Unlock()
	return sums, err
}

func (m *mirrors) fetch(ctx context.Context, base string) (map[string]string, error) {
	u := strings.TrimSuffix(base, "/") + "/" + ChecksumsFile
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("spec.provisioning.artifactsURL: %w", err)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("spec.provisioning.artifactsURL: cannot read %s: %w", u, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("spec.provisioning.artifactsURL: %s answered %s", u, resp.Status)
	}
	return ParseChecksums(io.LimitReader(resp.Body, 1<<20))
}

var checksumLine = regexp.MustCompile(`^([0-9a-f]{64}) [ *](\S+)$`)

// ParseChecksums reads sha256sum's output: "<hex>  <path>" per line ("*" before the
// path in binary mode, "./" in front of it tolerated). Blank lines and comments are
// skipped; any other line is an error that names it.
func ParseChecksums(r io.Reader) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := checksumLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("%s line %d is not \"<sha256>  <path>\"", ChecksumsFile, n)
		}
		out[strings.TrimPrefix(m[2], "./")] = m[1]
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s lists no file", ChecksumsFile)
	}
	return out, nil
}
