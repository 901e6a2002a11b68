// Package roletemplates holds Drover's built-in RoleTemplates: the YAML files beside
// this file, which are also a kustomize base. They are embedded into the binary so
// that the manager can create them on a hub that does not hold them yet (package
// builtins), whichever way Drover was installed.
package roletemplates

import "embed"

// FS holds every YAML file of this directory, kustomization.yaml included; readers
// keep the RoleTemplates.
//
//go:embed *.yaml
var FS embed.FS
