// Package fakes3 serves an in-memory S3 (gofakes3) over HTTPS for tests, on an
// address of the test's choosing (so that hosts in network namespaces reach it
// through their gateway), with a CA of its own. It records the access key IDs
// requests were signed with, so that a test can check which credentials reached
// the storage.
package fakes3

import (
	"bytes"
	"crypto/tls"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/drover-io/drover/selfcert"
)

// Server is a running fake S3.
type Server struct {
	// Endpoint is host:port.
	Endpoint string
	// CA verifies the server's certificate (PEM).
	CA      []byte
	backend *s3mem.Backend
	mu      sync.Mutex
	keys    map[string]bool
}

// Start serves a fake S3 with the given buckets on addr ("127.0.0.1:0" for any
// port) until the test ends.
func Start(t testing.TB, addr string, buckets ...string) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(ln.Addr().String())
	b, _, err := selfcert.Bundle{}.Ensure("fake-s3-ca", "fake-s3", selfcert.NamesFor(host), time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(b.Cert, b.Key)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Endpoint: ln.Addr().String(), CA: b.CA, backend: s3mem.New(), keys: map[string]bool{}}
	for _, name := range buckets {
		if err := s.backend.CreateBucket(name); err != nil {
			t.Fatal(err)
		}
	}
	h := gofakes3.New(s.backend).Server()
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, after, ok := strings.Cut(r.Header.Get("Authorization"), "Credential="); ok {
				s.mu.Lock()
				s.keys[strings.SplitN(after, "/", 2)[0]] = true
				s.mu.Unlock()
			}
			h.ServeHTTP(w, r)
		})}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// SignedWith says whether a request was signed with the access key ID.
func (s *Server) SignedWith(accessKeyID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[accessKeyID]
}

// Keys lists the objects of a bucket, sorted.
func (s *Server) Keys(t testing.TB, bucket string) []string {
	t.Helper()
	res, err := s.backend.ListBucket(bucket, &gofakes3.Prefix{}, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range res.Contents {
		keys = append(keys, o.Key)
	}
	slices.Sort(keys)
	return keys
}

// Object returns an object's content.
func (s *Server) Object(t testing.TB, bucket, key string) []byte {
	t.Helper()
	o, err := s.backend.GetObject(bucket, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = o.Contents.Close() }()
	var b bytes.Buffer
	if _, err := b.ReadFrom(o.Contents); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
