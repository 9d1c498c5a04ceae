# meshauth — see README.md. `make run` starts the development stack;
# `make test` runs every test (PostgreSQL tests run when
# MESHAUTH_TEST_POSTGRES_URL is set, as .ci/run does).
GO      ?= go
BIN     := bin/meshauth
PKGS    := ./...

.PHONY: build run test race bench lint fuzz clean

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/meshauth

run: build
	./$(BIN) dev

test:
	$(GO) test -count=1 $(PKGS)

# Packages with goroutines, locks or shared caches run under the race detector.
race:
	$(GO) test -race -count=1 ./issuer/... ./jwks/... ./token/... ./proxy/... ./exchange/... ./internal/... ./cmd/... ./xds/... ./audit/...

bench:
	$(GO) run ./bench/report

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Short fuzzing of every parser of untrusted input; FUZZTIME=5m for longer.
FUZZTIME ?= 20s
fuzz:
	for t in FuzzParseForm FuzzAssertionSubject FuzzAuthorizationRequest FuzzCodeVerifier FuzzPrefersIntrospectionJWT FuzzForeignIntrospection; do $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) ./issuer/ || exit 1; done
	for t in FuzzVerify FuzzClaims FuzzParseJWKS FuzzSignedToken FuzzAuthenticator FuzzVerifyJWS FuzzReadIdentity; do $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) ./token/ || exit 1; done
	for t in FuzzBearer FuzzClientAddr; do $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) ./proxy/ || exit 1; done
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeUpdate$$' -fuzztime=$(FUZZTIME) ./jwks/
	for t in FuzzDecide FuzzParseTokenResponse; do $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) ./exchange/ || exit 1; done
	$(GO) test -run='^$$' -fuzz='^FuzzParseConfig$$' -fuzztime=$(FUZZTIME) ./xds/
	for t in FuzzParseRecord FuzzVerify FuzzAppendString; do $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) ./audit/ || exit 1; done

clean:
	rm -rf bin
