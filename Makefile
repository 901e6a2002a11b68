# Drover's build. `make help` lists the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Pinned tools, installed into ./bin by `go install` through the Go module proxy.
LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_TOOLS_VERSION ?= v0.21.0
GOLANGCI_LINT_VERSION ?= v2.15.0
KUSTOMIZE_VERSION ?= v5.8.1
HELM_VERSION ?= v4.3.1
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)

# Control-plane binaries for tests (kube-apiserver, kube-controller-manager, etcd,
# kwok), built by hack/kubebin.sh and cached outside the repository.
KUBEBIN = hack/kubebin.sh

VERSION ?= dev
# The commit goes into `drover version`; "-dirty" marks a tree with uncommitted changes.
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
# Development builds (VERSION=dev) use the tag latest, as version.Image does.
IMG ?= ghcr.io/drover-io/drover:$(if $(filter dev,$(VERSION)),latest,$(VERSION))
LDFLAGS = -s -w -X github.com/drover-io/drover/version.Version=$(VERSION) -X github.com/drover-io/drover/version.Commit=$(COMMIT)
TEST_TIMEOUT ?= 20m

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-14s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs into config/crd/bases and RBAC into config/rbac, copy them into the Helm chart, and write config/argocd/argocd-cm.yaml.
	$(CONTROLLER_GEN) rbac:roleName=drover-manager crd paths="./..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@# The Helm chart carries copies of the CRDs, the RBAC and the webhook configuration.
	rm -f charts/drover/crds/*.yaml && cp config/crd/bases/*.yaml charts/drover/crds/
	cp config/rbac/role.yaml charts/drover/files/role.yaml
	cp config/webhook/manifests.yaml charts/drover/files/webhook.yaml
	hack/argocd-cm.sh

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt.
	gofmt -s -w .

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint.
	$(GOLANGCI_LINT) run ./...

.PHONY: kubebin
kubebin: ## Build (once) and cache kube-apiserver, kube-controller-manager, etcd and kwok.
	$(KUBEBIN)

.PHONY: kubebin-node
kubebin-node: ## Build (once) and cache what provisioned hosts run: kubelet, kube-scheduler, kube-proxy, etcdctl.
	$(KUBEBIN) node

# Packages whose tests need no API server; they also run under the race detector.
UNIT_PKGS = ./render/ ./authproxy/ ./userkubeconfig/ ./admission/ ./targetsync/ ./remote/ ./selfcert/ ./hubserver/ ./registration/ ./tunnel/ ./clusterfacts/ ./kubeconfig/ ./version/ ./nodeplan/ ./nodeagent/ ./nodes/

.PHONY: test
test: manifests generate vet chart ## Run unit tests (with the race detector) and integration tests against real API servers.
	go test -race -count=1 $(UNIT_PKGS)
	KUBEBUILDER_ASSETS="$$($(KUBEBIN))" HELM="$(HELM)" go test ./... -count=1 -timeout $(TEST_TIMEOUT)

# The chart is rendered with its defaults and with every option on; internal/install
# installs the rendered output into a real API server.
CHART_ALL_ON = --set replicaCount=2,webhook.certManager.enabled=true,metrics.serviceMonitor.enabled=true,hub.tlsSecretName=hub-tls,hub.url=https://drover.example.com,hub.service.type=LoadBalancer
.PHONY: chart
chart: $(HELM) ## Lint the Helm chart (charts/drover) and render it.
	$(HELM) lint --strict charts/drover
	$(HELM) lint --strict charts/drover $(CHART_ALL_ON)
	$(HELM) template drover charts/drover --namespace drover-system --include-crds >/dev/null
	$(HELM) template drover charts/drover --namespace drover-system $(CHART_ALL_ON) >/dev/null
	$(HELM) lint --strict charts/drover --set sharding.shards=2
	$(HELM) template drover charts/drover --namespace drover-system --set sharding.shards=2 >/dev/null

.PHONY: fuzz
fuzz: ## Run each fuzz test for a short while (FUZZTIME, default 30s).
	go test ./render/ -run '^$$' -fuzz FuzzRender -fuzztime $(or $(FUZZTIME),30s)
	go test ./remote/ -run '^$$' -fuzz FuzzParseKubeconfig -fuzztime $(or $(FUZZTIME),30s)
	go test ./nodeplan/ -run '^$$' -fuzz FuzzDecode -fuzztime $(or $(FUZZTIME),30s)

.PHONY: bench
bench: ## Run the benchmarks against real control planes and print their figures.
	KUBEBUILDER_ASSETS="$$($(KUBEBIN))" go test ./bench/ -run '^$$' -bench . -benchtime 1x -count=1 -timeout 60m -v

# The scale benchmark (docs/performance.md): one manager, a real hub and 10, 100 and
# 1,000 simulated clusters (bench/simcluster); under 20 minutes on 2 cores. Not part
# of make test or make bench. SCALE_SIZES=10,100 picks the sizes.
.PHONY: bench-scale
bench-scale: ## Measure one manager with 10, 100 and 1,000 simulated clusters and print the table, then two shards splitting 1,000.
	DROVER_BENCH_SCALE=1 SCALE_SIZES="$(SCALE_SIZES)" KUBEBUILDER_ASSETS="$$($(KUBEBIN))" go test ./bench/ -run '^$$' -bench '^BenchmarkScale$$' -benchtime 1x -count=1 -timeout 40m -v
	DROVER_BENCH_SCALE=1 SCALE_SHARD_CLUSTERS="$(SCALE_SHARD_CLUSTERS)" KUBEBUILDER_ASSETS="$$($(KUBEBIN))" go test ./bench/ -run '^$$' -bench '^BenchmarkScaleShards$$' -benchtime 1x -count=1 -timeout 40m -v

.PHONY: verify
verify: manifests generate fmt build-installer ## Regenerate and reformat, then fail if anything changed.
	go mod tidy
	@if [ -n "$$(git status --porcelain)" ]; then \
		echo "generated files are out of date or files are unformatted; run 'make manifests generate fmt' and commit:"; \
		git status --porcelain; git --no-pager diff --stat; exit 1; \
	fi

##@ Build

.PHONY: build
build: ## Build bin/drover.
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/drover .

.PHONY: run
run: manifests generate ## Run the manager against the cluster in $KUBECONFIG.
	go run -ldflags "$(LDFLAGS)" . --metrics-bind-address=:8080 --health-probe-bind-address=:8081

.PHONY: docker-build
docker-build: ## Build the container image IMG (needs a container engine).
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMG) .

# dist/install.yaml is committed (make verify checks that it is current) and installs
# IMG: a release runs make build-installer VERSION=v0.2.0. It renders a copy of config/,
# so that setting the image leaves no change behind.
.PHONY: build-installer
build-installer: manifests $(KUSTOMIZE) ## Render config/default into dist/install.yaml, which applies in one pass.
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; cp -r config "$$tmp/"; \
	(cd "$$tmp/config/manager" && $(KUSTOMIZE) edit set image drover=$(IMG)); \
	mkdir -p dist; \
	{ echo "# Drover, image $(IMG): CRDs, RBAC, the manager and its admission webhook, in namespace"; \
	  echo "# drover-system. Generated from config/default by make build-installer; do not edit."; \
	  echo "#   kubectl apply --server-side -f dist/install.yaml    (docs/install.md)"; \
	  $(KUSTOMIZE) build "$$tmp/config/default"; } > dist/install.yaml

# A release packages the chart with its version and image tag: make chart-package VERSION=v0.2.0
# writes dist/drover-0.2.0.tgz, whose appVersion (the default image tag) is v0.2.0.
.PHONY: chart-package
chart-package: $(HELM) ## Package the Helm chart for release VERSION into dist/.
	@if [ "$(VERSION)" = dev ]; then echo "set VERSION, e.g. make chart-package VERSION=v0.2.0"; exit 1; fi
	mkdir -p dist
	$(HELM) package charts/drover --version $(patsubst v%,%,$(VERSION)) --app-version $(VERSION) --destination dist

##@ Run

.PHONY: dev
dev: build ## Run Drover locally: a hub, two kubeconfig targets and one behind an agent tunnel, the manager and agents, on this machine. Ctrl-C stops it.
	go build -trimpath -o $(LOCALBIN)/drover-dev ./hack/dev
	KUBEBUILDER_ASSETS="$$($(KUBEBIN))" $(LOCALBIN)/drover-dev $(strip --drover=$(LOCALBIN)/drover $(DEV_FLAGS))

# deploy and undeploy render config/default from a copy of config/, so that setting
# the image leaves no change behind in the repository.
.PHONY: deploy
deploy: $(KUSTOMIZE) ## Install Drover into the cluster in $KUBECONFIG, running image IMG (see make docker-build).
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; cp -r config "$$tmp/"; \
	(cd "$$tmp/config/manager" && $(KUSTOMIZE) edit set image drover=$(IMG)); \
	echo "installing the CRDs"; \
	$(KUSTOMIZE) build "$$tmp/config/crd" | kubectl apply --server-side -f -; \
	$(KUSTOMIZE) build "$$tmp/config/crd" | kubectl wait --for=condition=Established --timeout=60s -f -; \
	echo "installing Drover with image $(IMG)"; \
	$(KUSTOMIZE) build "$$tmp/config/default" | kubectl apply --server-side -f -

UNDEPLOY_TIMEOUT ?= 5m
.PHONY: undeploy
undeploy: $(KUSTOMIZE) ## Remove Drover and everything it installed in the targets from the cluster in $KUBECONFIG.
	@set -e; if kubectl get crd managedclusters.management.drover.io >/dev/null 2>&1; then \
		echo "deleting every ManagedCluster, while the manager runs to clean up what Drover installed in the targets"; \
		kubectl delete managedclusters --all --timeout=$(UNDEPLOY_TIMEOUT); \
		kubectl delete accessbindings,clusterprojects,roletemplates --all --timeout=$(UNDEPLOY_TIMEOUT); \
	fi
	$(KUSTOMIZE) build config/default | kubectl delete --ignore-not-found -f -

##@ Tools

$(LOCALBIN):
	mkdir -p $(LOCALBIN)

$(CONTROLLER_GEN): | $(LOCALBIN)
	$(call go-install,$@,sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

$(GOLANGCI_LINT): | $(LOCALBIN)
	$(call go-install,$@,github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))

$(KUSTOMIZE): | $(LOCALBIN)
	$(call go-install,$@,sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))

$(HELM): | $(LOCALBIN)
	$(call go-install,$@,helm.sh/helm/v4/cmd/helm,$(HELM_VERSION))

# go-install installs package $(2) at version $(3) as $(1).
define go-install
	@set -e; tmp=$$(mktemp -d); echo "installing $(2)@$(3)"; \
	GOBIN=$$tmp go install $(2)@$(3); mv $$tmp/* $(1); rm -rf $$tmp
endef
