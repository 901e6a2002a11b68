package hosts

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"
)

// Images for containerd on the hosts. No registry is reachable here, so the pause
// image and the images of test pods are made on the spot, from one static Go binary
// (./tiny), and loaded with `ctr images import`.
const (
	// PauseImage is what containerd's sandbox_image is set to.
	PauseImage = "drover.test/pause:1"
	// TinyImage runs /tiny; `tiny serve :8080` answers HTTP with its hostname.
	TinyImage = "drover.test/tiny:1"
)

// OCIArchive returns an image in the OCI image layout, as one tar stream that
// `ctr images import` loads under the name ref: one uncompressed layer holding files
// (path in the image -> contents, all mode 0755) and the directories they need, and
// a configuration for linux/amd64 that runs entrypoint.
func OCIArchive(ref string, files map[string][]byte, entrypoint []string) ([]byte, error) {
	epoch := time.Unix(0, 0)
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	dirs := map[string]bool{"etc": true, "tmp": true}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
		for d := filepath.Dir(name); d != "." && d != "/"; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	sort.Strings(names)
	dirList := make([]string, 0, len(dirs))
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList)
	for _, d := range dirList {
		if err := lw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	for _, name := range names {
		if err := lw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(files[name])), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := lw.Write(files[name]); err != nil {
			return nil, err
		}
	}
	if err := lw.Close(); err != nil {
		return nil, err
	}

	blobs := map[string][]byte{}
	descriptor := func(mediaType string, b []byte) map[string]any {
		sum := sha256.Sum256(b)
		digest := "sha256:" + hex.EncodeToString(sum[:])
		blobs[digest] = b
		return map[string]any{"mediaType": mediaType, "digest": digest, "size": len(b)}
	}
	layerDesc := descriptor("application/vnd.oci.image.layer.v1.tar", layer.Bytes())
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": entrypoint, "Env": []string{"PATH=/"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDesc["digest"].(string)}},
	})
	if err != nil {
		return nil, err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor("application/vnd.oci.image.config.v1+json", config),
		"layers":        []any{layerDesc},
	})
	if err != nil {
		return nil, err
	}
	manifestDesc := descriptor("application/vnd.oci.image.manifest.v1+json", manifest)
	manifestDesc["annotations"] = map[string]string{"io.containerd.image.name": ref}
	manifestDesc["platform"] = map[string]string{"architecture": "amd64", "os": "linux"}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []any{manifestDesc},
	})
	if err != nil {
		return nil, err
	}

	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	add := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return nil, err
	}
	if err := add("index.json", index); err != nil {
		return nil, err
	}
	digests := make([]string, 0, len(blobs))
	for d := range blobs {
		digests = append(digests, d)
	}
	sort.Strings(digests)
	for _, d := range digests {
		if err := add("blobs/sha256/"+d[len("sha256:"):], blobs[d]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

var tinyBuild struct {
	once sync.Once
	bin  []byte
	err  error
}

// Tiny builds ./tiny, statically, once per process and returns the binary.
func Tiny(t testing.TB) []byte {
	t.Helper()
	bin, err := BuildTiny()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// BuildTiny is Tiny for programs: it builds ./tiny once per process, from the
// repository the working directory is in.
func BuildTiny() ([]byte, error) {
	tinyBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "drover-tiny-")
		if err != nil {
			tinyBuild.err = err
			return
		}
		defer os.RemoveAll(dir)
		root, err := repoRoot()
		if err != nil {
			tinyBuild.err = err
			return
		}
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(dir, "tiny"), "./internal/hosts/tiny")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if out, err := cmd.CombinedOutput(); err != nil {
			tinyBuild.err = fmt.Errorf("building tiny: %w: %s", err, out)
			return
		}
		tinyBuild.bin, tinyBuild.err = os.ReadFile(filepath.Join(dir, "tiny"))
	})
	return tinyBuild.bin, tinyBuild.err
}

// WriteImages writes the pause image, named pauseRef (PauseImage when empty), and
// TinyImage as OCI archives into dir, as pause.tar and tiny.tar, for an artifact
// source or `ctr images import` by hand.
func WriteImages(dir, pauseRef string) ([]string, error) {
	if pauseRef == "" {
		pauseRef = PauseImage
	}
	bin, err := BuildTiny()
	if err != nil {
		return nil, err
	}
	var written []string
	for _, img := range []struct {
		file, ref  string
		entrypoint []string
	}{{"pause.tar", pauseRef, []string{"/tiny", "pause"}}, {"tiny.tar", TinyImage, []string{"/tiny"}}} {
		archive, err := OCIArchive(img.ref, map[string][]byte{"tiny": bin}, img.entrypoint)
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, img.file)
		if err := os.WriteFile(p, archive, 0o644); err != nil {
			return nil, err
		}
		written = append(written, p)
	}
	return written, nil
}

// ImportImages loads PauseImage and TinyImage into the containerd that listens on
// address inside h (its CRI namespace, k8s.io), with `ctr images import`.
func ImportImages(t testing.TB, h *Host, address string) {
	t.Helper()
	// The host sees the machine's temporary directory.
	files, err := WriteImages(t.TempDir(), PauseImage)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, err := h.Run(t.Context(), "ctr", "--address", address, "--namespace", "k8s.io", "images", "import", f); err != nil {
			t.Fatal(err)
		}
	}
}
