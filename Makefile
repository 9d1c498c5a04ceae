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
	$(GO) test -race -count=1 ./issuer/... ./rp/... ./jwks/... ./token/... ./proxy/... ./exchange/... ./internal/... ./cmd/... ./xds/... ./audit/...

bench:
	$(GO) run ./bench/report

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Short fuzzing of every parser of untrusted input; FUZZTIME=5m for longer.
FUZZTIME ?= 20s
FUZZ_TARGETS = \
	./issuer/:FuzzParseForm \
	./issuer/:FuzzAssertionSubject \
	./issuer/:FuzzAuthorizationRequest \
	./issuer/:FuzzCodeVerifier \
	./issuer/:FuzzPrefersIntrospectionJWT \
	./issuer/:FuzzForeignIntrospection \
	./issuer/:FuzzSessionCookie \
	./token/:FuzzVerify \
	./token/:FuzzClaims \
	./token/:FuzzParseJWKS \
	./token/:FuzzSignedToken \
	./token/:FuzzAuthenticator \
	./token/:FuzzVerifyJWS \
	./token/:FuzzReadIdentity \
	./proxy/:FuzzBearer \
	./proxy/:FuzzClientAddr \
	./proxy/:FuzzCanonicalPath \
	./proxy/:FuzzForwardedFields \
	./jwks/:FuzzDecodeUpdate \
	./issuer/exchangepolicy/:FuzzDecide \
	./exchange/:FuzzParseTokenResponse \
	./internal/discovery/:FuzzParseMetadata \
	./xds/:FuzzParseConfig \
	./rp/:FuzzIDTokenClaims \
	./audit/:FuzzParseRecord \
	./audit/:FuzzVerify \
	./audit/:FuzzAppendString \

fuzz:
	for t in $(FUZZ_TARGETS); do $(GO) test -run='^$$' -fuzz="^$${t##*:}$$" -fuzztime=$(FUZZTIME) $${t%%:*} || exit 1; done

clean:
	rm -rf bin
