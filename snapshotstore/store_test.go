package snapshotstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/drover-io/drover/internal/fakes3"
)

type fakeS3 struct {
	*fakes3.Server
	cfg Config
}

func newFakeS3(t *testing.T) *fakeS3 {
	t.Helper()
	srv := fakes3.Start(t, "127.0.0.1:0", "snapshots")
	return &fakeS3{Server: srv, cfg: Config{Endpoint: srv.Endpoint, Bucket: "snapshots", Folder: "fleet/etcd", Region: "us-east-1",
		CA: string(srv.CA), AccessKeyID: "AKIDDROVERTEST", SecretAccessKey: "not-a-real-secret"}}
}

// put stores an object the way another writer would, bypassing Upload's checks.
func (f *fakeS3) put(t *testing.T, key string, body []byte, meta map[string]string) {
	t.Helper()
	s, err := Open(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.PutObject(context.Background(), "snapshots", key, bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{UserMetadata: meta}); err != nil {
		t.Fatal(err)
	}
}

func (f *fakeS3) list(t *testing.T) []string { return f.Keys(t, "snapshots") }

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUploadDownload(t *testing.T) {
	f := newFakeS3(t)
	s, err := Open(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	body := bytes.Repeat([]byte("etcd snapshot "), 5000)
	src := writeFile(t, dir, "snap.db", body)
	u, err := s.Upload(ctx, src, "edge-1-20261126-120000")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	if u.URL != "s3://snapshots/fleet/etcd/edge-1-20261126-120000.db" || u.Size != int64(len(body)) || u.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("upload = %+v", u)
	}
	if !f.SignedWith("AKIDDROVERTEST") {
		t.Fatal("no request was signed with the configured access key")
	}
	// Uploading again finds it there.
	if _, err := s.Upload(ctx, src, "edge-1-20261126-120000"); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "restore.db")
	d, err := s.Download(ctx, "edge-1-20261126-120000", dst)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, body) || d.SHA256 != u.SHA256 {
		t.Fatalf("downloaded %d bytes (%v), %+v", len(got), err, d)
	}
}

func TestDownloadRefusesWhatDoesNotMatch(t *testing.T) {
	f := newFakeS3(t)
	s, err := Open(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.put(t, "fleet/etcd/edge-1-20261126-120000.db", []byte("tampered"), map[string]string{metaSHA256: strings.Repeat("0", 64)})
	f.put(t, "fleet/etcd/edge-1-20261126-130000.db", []byte("foreign"), nil)
	dir := t.TempDir()
	for name, want := range map[string]string{
		"edge-1-20261126-120000": "but the upload recorded",
		"edge-1-20261126-130000": "records no sha256",
		"edge-1-20261126-140000": "downloading s3://snapshots/fleet/etcd/edge-1-20261126-140000.db",
	} {
		dst := filepath.Join(dir, name)
		_, err := s.Download(context.Background(), name, dst)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", name, err, want)
		}
		if _, err := os.Stat(dst); err == nil {
			t.Errorf("%s: a file was left", name)
		}
		if _, err := os.Stat(dst + ".part"); err == nil {
			t.Errorf("%s: a .part file was left", name)
		}
	}
}

func TestPruneTouchesOnlyTheClustersSnapshots(t *testing.T) {
	f := newFakeS3(t)
	s, err := Open(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	others := []string{
		"fleet/etcd/edge-1-b-20261120-000000.db", // another cluster, whose name starts alike
		"fleet/etcd/edge-10-20261120-000000.db",
		"fleet/etcd/edge-1-manual.db",
		"fleet/etcd/edge-1-20261120-000000.db.part",
		"fleet/edge-1-20261120-000000.db", // another folder
		"edge-1-20261120-000000.db",
	}
	for _, k := range others {
		f.put(t, k, []byte("x"), nil)
	}
	for _, ts := range []string{"20261121-000000", "20261124-000000", "20261122-000000", "20261123-000000"} {
		f.put(t, "fleet/etcd/edge-1-"+ts+".db", []byte(ts), nil)
	}
	deleted, err := s.Prune(context.Background(), "edge-1", 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"s3://snapshots/fleet/etcd/edge-1-20261121-000000.db", "s3://snapshots/fleet/etcd/edge-1-20261122-000000.db"}; !slices.Equal(deleted, want) {
		t.Fatalf("deleted %v, want %v", deleted, want)
	}
	want := append(slices.Clone(others), "fleet/etcd/edge-1-20261123-000000.db", "fleet/etcd/edge-1-20261124-000000.db")
	slices.Sort(want)
	if got := f.list(t); !slices.Equal(got, want) {
		t.Fatalf("bucket holds %v, want %v", got, want)
	}
}

func TestMain_UploadAndDownload(t *testing.T) {
	f := newFakeS3(t)
	dir := t.TempDir()
	b, _ := json.Marshal(f.cfg)
	cfg := writeFile(t, dir, "s3.json", b)
	for _, ts := range []string{"20261124-000000", "20261125-000000", "20261126-000000"} {
		src := writeFile(t, dir, ts, []byte("snapshot "+ts))
		var out bytes.Buffer
		if err := Main(context.Background(), []string{"upload", "--config", cfg, "--file", src, "--name", "edge-1-" + ts, "--cluster", "edge-1", "--retention", "2"}, &out); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), f.cfg.SecretAccessKey) {
			t.Fatalf("output holds the secret: %s", out.String())
		}
		if ts == "20261126-000000" && !strings.Contains(out.String(), "deleted s3://snapshots/fleet/etcd/edge-1-20261124-000000.db") {
			t.Fatalf("output = %s", out.String())
		}
	}
	dst := filepath.Join(dir, "restored.db")
	var out bytes.Buffer
	if err := Main(context.Background(), []string{"download", "--config", cfg, "--file", dst, "--name", "edge-1-20261125-000000"}, &out); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dst); string(got) != "snapshot 20261125-000000" {
		t.Fatalf("restored %q", got)
	}
	for _, args := range [][]string{nil, {"list"}, {"upload", "--config", cfg}, {"download", "--config", filepath.Join(dir, "missing"), "--file", dst, "--name", "x"}} {
		if err := Main(context.Background(), args, &out); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Config{Endpoint: "s3.example.com", Bucket: "b"}
	for name, tc := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"ok":          {func(*Config) {}, ""},
		"no endpoint": {func(c *Config) { c.Endpoint = "" }, "endpoint is empty"},
		"scheme":      {func(c *Config) { c.Endpoint = "https://s3.example.com" }, "without a scheme"},
		"no bucket":   {func(c *Config) { c.Bucket = "" }, "bucket is empty"},
		"half keys":   {func(c *Config) { c.AccessKeyID = "a" }, "go together"},
		"folder /":    {func(c *Config) { c.Folder = "/a" }, "folder"},
		"folder //":   {func(c *Config) { c.Folder = "a//b" }, "folder"},
	} {
		c := ok
		tc.mod(&c)
		err := c.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
	if _, err := Open(Config{Endpoint: "s3.example.com", Bucket: "b", CA: "not pem"}); err == nil {
		t.Error("a CA without PEM was accepted")
	}
}

func TestOwnedBy(t *testing.T) {
	c := Config{Bucket: "b", Folder: "f"}
	for key, want := range map[string]bool{
		"f/edge-1-20261126-120000.db":      true,
		"f/edge-1-20261126-120000.db.part": false,
		"f/edge-1-b-20261126-120000.db":    false,
		"f/edge-10-20261126-120000.db":     false,
		"edge-1-20261126-120000.db":        false,
		"g/edge-1-20261126-120000.db":      false,
		"f/edge-1-2026112-120000.db":       false,
		"f/edge-1-20261126-120000":         false,
	} {
		if got := c.OwnedBy(key, "edge-1"); got != want {
			t.Errorf("OwnedBy(%q) = %v, want %v", key, got, want)
		}
	}
	if (Config{Bucket: "b"}).OwnedBy("-20261126-120000.db", "") {
		t.Error("an empty cluster owns something")
	}
}

func FuzzOwnedBy(f *testing.F) {
	f.Add("f", "f/edge-1-20261126-120000.db", "edge-1")
	f.Add("", "edge-1-b-20261126-120000.db", "edge-1")
	f.Fuzz(func(t *testing.T, folder, key, cluster string) {
		c := Config{Bucket: "b", Folder: folder}
		if !c.OwnedBy(key, cluster) {
			return
		}
		// Whatever is owned is exactly the key of a snapshot name Drover gives this
		// cluster: <cluster>-YYYYMMDD-HHMMSS in this folder.
		stamp, ok := strings.CutPrefix(key, strings.TrimSuffix(c.Key(cluster), ".db"))
		if !ok || len(stamp) != len("-20261126-120000.db") {
			t.Fatalf("owned key %q of cluster %q in folder %q has stamp %q", key, cluster, folder, stamp)
		}
		if c.Key(cluster+strings.TrimSuffix(stamp, ".db")) != key {
			t.Fatalf("owned key %q is not a snapshot key of cluster %q in folder %q", key, cluster, folder)
		}
	})
}
