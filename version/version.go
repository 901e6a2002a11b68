// Package version holds the version of this build of Drover, stamped at link time:
//
//	go build -ldflags "-X github.com/drover-io/drover/version.Version=v0.1.0"
package version

// Version is the release this binary was built from; "dev" for local builds.
var Version = "dev"

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
