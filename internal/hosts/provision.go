package hosts

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// NodeBinaries are what a provisioned node runs from an artifact source.
var NodeBinaries = []string{"etcd", "etcdctl", "etcdutl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"}

// ArtifactSource makes an artifact source as `drover --artifacts-dir` wants it, in a
// temporary directory: see WriteArtifactSource.
func ArtifactSource(t testing.TB, version, pauseRef string) string {
	t.Helper()
	dir := t.TempDir()
	if err := WriteArtifactSource(dir, NodeBinDir(t), version, pauseRef); err != nil {
		t.Fatal(err)
	}
	return dir
}

// WriteArtifactSource fills dir as an artifact source: version/<binary> (hard links
// to binDir's, which `hack/kubebin.sh node` fills, or copies) and images/pause.tar
// (named pauseRef) and images/tiny.tar (TinyImage).
func WriteArtifactSource(dir, binDir, version, pauseRef string) error {
	vdir := filepath.Join(dir, version)
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		return err
	}
	for _, name := range NodeBinaries {
		if err := linkOrCopy(filepath.Join(binDir, name), filepath.Join(vdir, name)); err != nil {
			return err
		}
	}
	images := filepath.Join(dir, "images")
	if err := os.MkdirAll(images, 0o755); err != nil {
		return err
	}
	_, err := WriteImages(images, pauseRef)
	return err
}

func linkOrCopy(src, dst string) error {
	if os.Link(src, dst) == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// BuildDrover builds the drover binary (static), for hosts to download from a hub
// whose manager runs inside a test binary (--node-agent-binary).
func BuildDrover(t testing.TB) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "drover")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}
