package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestInfo(t *testing.T) {
	vcs := func(settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	for _, tc := range []struct {
		name            string
		version, commit string
		bi              *debug.BuildInfo
		wantVersion     string
		wantCommit      string
	}{
		{name: "stamped", version: "v0.2.0", commit: "abc123", bi: vcs("vcs.revision", "def456"), wantVersion: "v0.2.0", wantCommit: "abc123"},
		{name: "toolchain revision when not stamped", version: "dev", bi: vcs("vcs.revision", "def456", "vcs.modified", "false"), wantVersion: "dev", wantCommit: "def456"},
		{name: "dirty tree", version: "dev", bi: vcs("vcs.revision", "def456", "vcs.modified", "true"), wantVersion: "dev", wantCommit: "def456-dirty"},
		{name: "stamped commit wins over a dirty tree", version: "dev", commit: "abc123", bi: vcs("vcs.revision", "def456", "vcs.modified", "true"), wantVersion: "dev", wantCommit: "abc123"},
		{name: "no vcs information (-buildvcs=false)", version: "dev", bi: vcs(), wantVersion: "dev", wantCommit: "unknown"},
		{name: "no build information", version: "dev", bi: nil, wantVersion: "dev", wantCommit: "unknown"},
		{name: "empty version", version: "", bi: nil, wantVersion: "dev", wantCommit: "unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := info(tc.version, tc.commit, tc.bi)
			if got.Version != tc.wantVersion || got.Commit != tc.wantCommit {
				t.Errorf("info() = version %q commit %q, want %q %q", got.Version, got.Commit, tc.wantVersion, tc.wantCommit)
			}
			if s := got.String(); !strings.HasPrefix(s, "drover "+tc.wantVersion+" (commit "+tc.wantCommit+",") {
				t.Errorf("String() = %q", s)
			}
		})
	}
}

func TestImage(t *testing.T) {
	for _, tc := range []struct{ version, want string }{
		{"dev", DefaultImageRepository + ":latest"},
		{"", DefaultImageRepository + ":latest"},
		{"v0.2.0", DefaultImageRepository + ":v0.2.0"},
	} {
		old := Version
		Version = tc.version
		got := Image()
		Version = old
		if got != tc.want {
			t.Errorf("Image() with Version %q = %q, want %q", tc.version, got, tc.want)
		}
	}
}
