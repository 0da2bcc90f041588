# krakenctl: the developer and CI entry points. `make test` is the one command that proves the
# tree works: it installs what is missing, starts the real servers and runs every check and test.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
GO ?= go
BIN ?= bin/krakenctl

.PHONY: all build test deps lint docs release-check image bench-replicate k8s-e2e k8s-e2e-tls clean help

all: build

## build: the krakenctl binary for this machine, pure Go, into bin/krakenctl
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/krakenctl

## test: install test dependencies, start servers, static checks, go test -race ./...
test:
	scripts/test.sh

## deps: install the test dependencies only (apt packages, goreleaser, golangci-lint, SeaweedFS)
deps:
	scripts/install-test-deps.sh

## lint: gofmt, go vet and golangci-lint (.golangci.yml)
lint:
	scripts/check.sh fmt vet lint

## docs: regenerate completions/ and man/ (commit the result)
docs:
	scripts/gen-docs.sh

## release-check: goreleaser check and pure-Go cross builds for linux/darwin x amd64/arm64
release-check:
	scripts/check.sh release cross

## image: the krakenctl image for linux/amd64 and arm64 into bin/image (OCI layout + docker tarballs), offline; loads this machine's platform as krakenctl:dev when a Docker daemon answers (PLATFORM=, TAG= to narrow)
image:
	scripts/image.sh build $(if $(PLATFORM),--platform $(PLATFORM)) $(if $(TAG),--tag $(TAG))

## bench-replicate: replicate run against crane copy between two dev clusters (ROUNDS=3; not in test)
bench-replicate:
	scripts/bench-replicate.sh $(or $(ROUNDS),3)

## k8s-e2e: the chart on a real single-node Kubernetes built from the Go module proxy, in a netns of its own (root; ~15 min cold, ~3 min warm; not in test)
k8s-e2e:
	scripts/k8s-lab.sh e2e

## k8s-e2e-tls: the same run with the chart's mutual TLS (existingSecrets from a new CA per run, scripts/k8slab/tlscerts; root; not in test)
k8s-e2e-tls:
	K8S_LAB_TLS=1 scripts/k8s-lab.sh e2e

## clean: remove build outputs
clean:
	rm -rf bin dist

help:
	@sed -n 's/^## //p' $(MAKEFILE_LIST)
