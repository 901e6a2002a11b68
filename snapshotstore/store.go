// Package snapshotstore keeps etcd snapshots of provisioned clusters in
// S3-compatible object storage (AWS S3, MinIO, Ceph RGW, ...).
//
// It runs on the etcd node that takes or restores a snapshot, as `drover
// etcd-snapshot-s3`, which the planner's instructions call through the node
// agent's own binary. The hub never handles snapshot bytes: it writes the
// storage's address and credentials into a file of the node's plan (mode 0600,
// present only while the operation runs) and records where the snapshot went.
//
// Every object is verified: an upload sends each part's MD5 for the storage to
// check and the file's sha256 as object metadata, then reads the object back
// (HEAD) and compares its size and sha256; a download recomputes the sha256 and
// refuses a file that does not match. Pruning deletes only objects whose name is
// exactly <folder>/<cluster>-<YYYYMMDD-HHMMSS>.db, so a bucket shared with other
// clusters or other data never loses anything Drover did not write.
package snapshotstore

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Config is where snapshots go, as the plan's file holds it (JSON).
type Config struct {
	// Endpoint is host[:port] of the storage, without a scheme.
	Endpoint string `json:"endpoint"`
	Bucket   string `json:"bucket"`
	// Folder is a prefix inside the bucket ("" for the bucket's root).
	Folder string `json:"folder,omitempty"`
	Region string `json:"region,omitempty"`
	// Insecure speaks plain HTTP instead of HTTPS.
	Insecure bool `json:"insecure,omitempty"`
	// CA is a PEM bundle that verifies the endpoint's certificate, in addition to
	// the system's roots.
	CA string `json:"ca,omitempty"`
	// AccessKeyID, SecretAccessKey and SessionToken are static credentials; with
	// none, the node's own (AWS_* environment, then the instance's IAM role).
	AccessKeyID     string `json:"accessKeyID,omitempty"`
	SecretAccessKey string `json:"secretAccessKey,omitempty"`
	SessionToken    string `json:"sessionToken,omitempty"`
}

// metaSHA256 is the user metadata key holding an object's sha256 (hex).
const metaSHA256 = "Drover-Sha256"

// Validate checks a configuration before it is used.
func (c Config) Validate() error {
	switch {
	case c.Endpoint == "":
		return errors.New("endpoint is empty")
	case strings.Contains(c.Endpoint, "/"):
		return fmt.Errorf("endpoint %q must be host[:port], without a scheme or a path", c.Endpoint)
	case c.Bucket == "":
		return errors.New("bucket is empty")
	case (c.AccessKeyID == "") != (c.SecretAccessKey == ""):
		return errors.New("accessKeyID and secretAccessKey go together")
	case strings.HasPrefix(c.Folder, "/") || strings.HasSuffix(c.Folder, "/") || strings.Contains(c.Folder, "//"):
		return fmt.Errorf("folder %q must not start or end with / or hold //", c.Folder)
	case c.CA != "" && !x509.NewCertPool().AppendCertsFromPEM([]byte(c.CA)):
		return errors.New("the CA bundle (endpointCA) holds no PEM certificate")
	}
	return nil
}

// Location names where the named snapshot goes, endpoint included: what the
// instructions that move it carry, so that another storage moves it again.
func (c Config) Location(name string) string {
	return c.Endpoint + "/" + c.Bucket + "/" + c.Key(name)
}

// Key is the object name of the named snapshot.
func (c Config) Key(name string) string {
	if c.Folder == "" {
		return name + ".db"
	}
	return c.Folder + "/" + name + ".db"
}

// URL is the snapshot's location, for status and messages (no credentials).
func (c Config) URL(name string) string {
	return "s3://" + c.Bucket + "/" + c.Key(name)
}

// snapshotStamp is what follows the cluster in the object names Drover gives
// snapshots: <cluster>-<YYYYMMDD-HHMMSS>.db.
var snapshotStamp = regexp.MustCompile(`^-[0-9]{8}-[0-9]{6}\.db$`)

// OwnedBy says whether key is a snapshot object of cluster in this folder, and
// nothing else: the one test pruning applies.
func (c Config) OwnedBy(key, cluster string) bool {
	prefix := c.Key(cluster)
	prefix = strings.TrimSuffix(prefix, ".db")
	rest, ok := strings.CutPrefix(key, prefix)
	return ok && cluster != "" && snapshotStamp.MatchString(rest)
}

// Store is a connection to the storage.
type Store struct {
	cfg    Config
	client *minio.Client
}

// Open connects (lazily: nothing is sent until the first call).
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tr, err := minio.DefaultTransport(!cfg.Insecure)
	if err != nil {
		return nil, err
	}
	if cfg.CA != "" {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		pool.AppendCertsFromPEM([]byte(cfg.CA)) // Validate checked it holds one
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	creds := credentials.NewChainCredentials([]credentials.Provider{&credentials.EnvAWS{}, &credentials.IAM{}})
	if cfg.AccessKeyID != "" {
		creds = credentials.NewStaticV4(cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken)
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{Creds: creds, Secure: !cfg.Insecure, Region: cfg.Region, Transport: tr})
	if err != nil {
		return nil, err
	}
	return &Store{cfg: cfg, client: client}, nil
}

// Uploaded is what an upload stored.
type Uploaded struct {
	URL    string
	Size   int64
	SHA256 string
}

// Upload stores the file as the named snapshot and checks what the storage holds.
// Uploading a snapshot that is there already with the same content does nothing.
func (s *Store) Upload(ctx context.Context, file, name string) (Uploaded, error) {
	sum, size, err := fileSHA256(file)
	if err != nil {
		return Uploaded{}, err
	}
	key := s.cfg.Key(name)
	out := Uploaded{URL: s.cfg.URL(name), Size: size, SHA256: sum}
	if info, err := s.client.StatObject(ctx, s.cfg.Bucket, key, minio.StatObjectOptions{}); err == nil && info.Size == size && metaValue(info.UserMetadata, metaSHA256) == sum {
		return out, nil
	}
	_, err = s.client.FPutObject(ctx, s.cfg.Bucket, key, file, minio.PutObjectOptions{
		ContentType:    "application/octet-stream",
		UserMetadata:   map[string]string{metaSHA256: sum},
		SendContentMd5: true,
	})
	if err != nil {
		return Uploaded{}, fmt.Errorf("uploading %s: %w", out.URL, err)
	}
	info, err := s.client.StatObject(ctx, s.cfg.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return Uploaded{}, fmt.Errorf("checking %s after the upload: %w", out.URL, err)
	}
	if info.Size != size {
		return Uploaded{}, fmt.Errorf("%s holds %d bytes after the upload, not %d", out.URL, info.Size, size)
	}
	if got := metaValue(info.UserMetadata, metaSHA256); got != sum {
		return Uploaded{}, fmt.Errorf("%s records sha256 %q after the upload, not %s", out.URL, got, sum)
	}
	return out, nil
}

// Download fetches the named snapshot into file (through file.part, renamed once
// its sha256 matches the one recorded at upload).
func (s *Store) Download(ctx context.Context, name, file string) (Uploaded, error) {
	key := s.cfg.Key(name)
	url := s.cfg.URL(name)
	obj, err := s.client.GetObject(ctx, s.cfg.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return Uploaded{}, fmt.Errorf("downloading %s: %w", url, err)
	}
	defer func() { _ = obj.Close() }()
	info, err := obj.Stat()
	if err != nil {
		return Uploaded{}, fmt.Errorf("downloading %s: %w", url, err)
	}
	want := metaValue(info.UserMetadata, metaSHA256)
	if want == "" {
		return Uploaded{}, fmt.Errorf("%s records no sha256: Drover did not upload it, so it is not restored", url)
	}
	part := file + ".part"
	f, err := os.OpenFile(part, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return Uploaded{}, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), obj)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(part)
		return Uploaded{}, fmt.Errorf("downloading %s: %w", url, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		_ = os.Remove(part)
		return Uploaded{}, fmt.Errorf("%s: downloaded %d bytes with sha256 %s, but the upload recorded %s", url, n, got, want)
	}
	if err := os.Rename(part, file); err != nil {
		return Uploaded{}, err
	}
	return Uploaded{URL: url, Size: n, SHA256: want}, nil
}

// Prune deletes the cluster's oldest snapshots in the folder, keeping keep of
// them, and returns the URLs it deleted. Only objects OwnedBy the cluster count.
func (s *Store) Prune(ctx context.Context, cluster string, keep int) ([]string, error) {
	prefix := strings.TrimSuffix(s.cfg.Key(cluster), ".db")
	var keys []string
	for o := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix}) {
		if o.Err != nil {
			return nil, fmt.Errorf("listing s3://%s/%s: %w", s.cfg.Bucket, prefix, o.Err)
		}
		if s.cfg.OwnedBy(o.Key, cluster) {
			keys = append(keys, o.Key)
		}
	}
	// The names sort by time: <cluster>-YYYYMMDD-HHMMSS.
	slices.Sort(keys)
	var deleted []string
	for len(keys) > max(keep, 1) {
		if err := s.client.RemoveObject(ctx, s.cfg.Bucket, keys[0], minio.RemoveObjectOptions{}); err != nil {
			return deleted, fmt.Errorf("deleting s3://%s/%s: %w", s.cfg.Bucket, keys[0], err)
		}
		deleted = append(deleted, "s3://"+s.cfg.Bucket+"/"+keys[0])
		keys = keys[1:]
	}
	return deleted, nil
}

// ReadConfig reads a configuration file.
func ReadConfig(file string) (Config, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return Config{}, err
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("%s: %w", file, err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", file, err)
	}
	return c, nil
}

func fileSHA256(file string) (string, int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", 0, err
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// metaValue finds a user metadata value whatever the case its key came back in.
func metaValue(meta map[string]string, key string) string {
	for k, v := range meta {
		if strings.EqualFold(k, key) || strings.EqualFold(k, "X-Amz-Meta-"+key) {
			return v
		}
	}
	return ""
}
