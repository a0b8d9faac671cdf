# globalbrain: the two set-up commands are `make demo` and `make test`.
GO      ?= go
BIN     := bin/globalbrain
# Packages that run goroutines are also tested under the race detector.
RACE    := ./sim/... ./node/... ./store/... ./round ./p2p/... ./api/... ./cmd/... ./member/... ./train/local/...

.PHONY: build test testdeps demo bench lint clean

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/globalbrain

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# Fashion-MNIST, which the train tests read, comes from a Debian package.
# FASHION_MNIST_DIR is train.FashionMNISTDir (override it only to try this target).
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
FASHION_MNIST_PKG := dataset-fashion-mnist

# The external trainer's tests run examples/pytorch with Debian's PyTorch
# under Debian's interpreter (the path a data owner's node.yaml names).
TORCH_PYTHON ?= /usr/bin/python3
TORCH_PKG    := python3-torch

# testdeps installs what the tests need when it is missing: as root, or
# through sudo -n; otherwise it stops and says what to install.
testdeps:
	@missing=; \
	if [ ! -d "$(FASHION_MNIST_DIR)" ]; then missing="$(FASHION_MNIST_PKG)"; fi; \
	if ! $(TORCH_PYTHON) -c 'import torch, numpy' >/dev/null 2>&1; then missing="$$missing $(TORCH_PKG)"; fi; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	need="make test needs Fashion-MNIST in $(FASHION_MNIST_DIR) (Debian package $(FASHION_MNIST_PKG)) and PyTorch for $(TORCH_PYTHON) (Debian package $(TORCH_PKG))"; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "$$need, and there is no apt-get here: install$$missing, or put Fashion-MNIST's four *-ubyte.gz files in $(FASHION_MNIST_DIR) and torch and numpy where $(TORCH_PYTHON) imports them" >&2; exit 1; \
	fi; \
	if [ "$$(id -u)" -eq 0 ]; then sudo=; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "$$need: run  sudo apt-get install$$missing  (or make testdeps as root), then make test again" >&2; exit 1; \
	fi; \
	echo "installing$$missing (for the tests)"; \
	$$sudo apt-get update -qq && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing || exit 1; \
	if [ ! -d "$(FASHION_MNIST_DIR)" ]; then echo "$$need: $(FASHION_MNIST_PKG) is installed but $(FASHION_MNIST_DIR) is still missing" >&2; exit 1; fi; \
	if ! $(TORCH_PYTHON) -c 'import torch, numpy'; then echo "$$need: $(TORCH_PKG) is installed but $(TORCH_PYTHON) cannot import torch" >&2; exit 1; fi

test: lint testdeps
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -race $(RACE)
	GOAMD64=v3 $(GO) test -count=1 ./fedavg/...

# 10 members, IID MNIST, the 2NN, FedAvg: >= 97% test accuracy.
demo: build
	$(BIN) simulate --out out/demo

bench: build
	GOMAXPROCS=2 $(BIN) bench

# Fuzz every decoder that reads the network, one target after another, for
# FUZZTIME each (plain go test, as in make test, runs only their seed corpora).
FUZZTIME ?= 30s

fuzz:
	@set -e; for t in ./round:FuzzDecodeMessage ./round:FuzzDecodeEntry ./round:FuzzDecodeSnapshot \
	  ./round:FuzzDecodeAddMember ./round:FuzzGateValidate ./p2p:FuzzReadFrame ./round:FuzzStepRaft; do \
	  pkg=$${t%%:*}; name=$${t#*:}; \
	  echo "$(GO) test -run '^$$' -fuzz '^$$name\$$' -fuzztime $(FUZZTIME) $$pkg"; \
	  $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

clean:
	rm -rf bin out
