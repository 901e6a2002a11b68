# syntax=docker/dockerfile:1
# One image serves the manager (`drover`) and the agent (`drover agent`).
# Build it with `make docker-build IMG=...`; `make deploy IMG=...` installs it.

# The build stage runs on the builder's own platform and cross-compiles.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG VERSION=dev
# The git commit, for `drover version` (make docker-build passes it).
ARG COMMIT=""
ARG TARGETOS=linux
ARG TARGETARCH=amd64
WORKDIR /src
# Dependencies first, so that source changes do not refetch modules.
COPY go.mod go.sum ./
RUN go mod download
# The sources: .dockerignore keeps out tests, docs, tools and build output.
COPY . .
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X github.com/drover-io/drover/version.Version=${VERSION} -X github.com/drover-io/drover/version.Commit=${COMMIT}" -o /out/drover .

# A static binary on distroless, as an unprivileged user (65532:65532).
FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/drover /drover
USER 65532:65532
ENTRYPOINT ["/drover"]
