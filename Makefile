# globalbrain: the two set-up commands are `make demo` and `make test`.
GO      ?= go
BIN     := bin/globalbrain
# Packages that run goroutines are also tested under the race detector.
RACE    := ./sim/... ./node/... ./store/... ./round ./p2p/... ./api/... ./cmd/...

.PHONY: build test demo bench lint clean

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/globalbrain

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

test: lint
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -race $(RACE)
	GOAMD64=v3 $(GO) test -count=1 ./fedavg/...

# 10 members, IID MNIST, the 2NN, FedAvg: >= 97% test accuracy.
demo: build
	$(BIN) simulate --out out/demo

bench: build
	GOMAXPROCS=2 $(BIN) bench

clean:
	rm -rf bin out
