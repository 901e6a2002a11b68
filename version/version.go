// Package version holds the version of this build of Drover, stamped at link time:
//
//	go build -ldflags "-X github.com/drover-io/drover/version.Version=v0.1.0 -X github.com/drover-io/drover/version.Commit=$(git rev-parse HEAD)"
//
// `make build` and the Dockerfile stamp both.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release this binary was built from; "dev" for local builds.
var Version = "dev"

// Commit is the git commit this binary was built from. When the build did not stamp
// it, Info falls back to the revision the Go toolchain recorded (vcs.revision).
var Commit = ""

// DefaultImageRepository is where release images of Drover are published.
const DefaultImageRepository = "ghcr.io/drover-io/drover"

// Image is the image of this very build: the manager installs the agent from it
// unless told otherwise.
func Image() string {
	tag := Version
	if tag == "dev" || tag == "" {
		tag = "latest"
	}
	return DefaultImageRepository + ":" + tag
}

// BuildInfo is what `drover version` prints.
type BuildInfo struct {
	Version string
	// Commit is the git commit, "unknown" when neither the build nor the toolchain
	// recorded it; a trailing "-dirty" means the tree had uncommitted changes.
	Commit    string
	GoVersion string
	Platform  string
}

// String is the one line `drover version` prints.
func (b BuildInfo) String() string {
	return fmt.Sprintf("drover %s (commit %s, %s, %s)", b.Version, b.Commit, b.GoVersion, b.Platform)
}

// Info describes this binary.
func Info() BuildInfo {
	bi, _ := debug.ReadBuildInfo()
	return info(Version, Commit, bi)
}

// info resolves the commit: the stamped one first, else the toolchain's vcs.revision.
func info(ver, commit string, bi *debug.BuildInfo) BuildInfo {
	b := BuildInfo{Version: ver, Commit: commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if b.Version == "" {
		b.Version = "dev"
	}
	if b.Commit == "" && bi != nil {
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Commit = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if b.Commit != "" && dirty {
			b.Commit += "-dirty"
		}
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}
