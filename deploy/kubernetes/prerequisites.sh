#!/bin/sh
# Creates what the manifests read but never apply, once, from your values:
#
# - the Secret meshauth-issuer in namespace meshauth: the PostgreSQL URL
#   (store), the admin token and the key-encryption key;
# - the NATS users (base/nats.yaml): the Secret nats-users (keys
#   issuer-nkey and verifier-nkey, the public NKeys NATS admits) in
#   namespace meshauth, the issuers' seed nats-issuer-seed (key seed) in
#   meshauth, and the verifiers' seed nats-verifier-seed (key seed) in
#   meshauth (for meshauth xds) and in each namespace with sidecars;
# - the ConfigMap meshauth-ca (key ca.crt, the mesh CA's certificate) in
#   namespace meshauth and in each namespace with sidecars, unless
#   trust-manager distributes it (a Bundle whose target is a ConfigMap
#   meshauth-ca, key ca.crt).
#
#   MESHAUTH_STORE='postgres://meshauth:…@db.internal:5432/meshauth?sslmode=verify-full' \
#   MESHAUTH_CA_FILE=mesh-ca.crt MESHAUTH_SIDECAR_NAMESPACES=shop \
#     sh deploy/kubernetes/prerequisites.sh
#
# MESHAUTH_SIDECAR_NAMESPACES lists the namespaces of your sidecars
# (meshauth's own is always included); run the script again when you add
# one. MESHAUTH_ADMIN_TOKEN and MESHAUTH_KEY_ENCRYPTION_KEY are generated
# unless set. Keep the key-encryption key (it is in the Secret): it seals
# the signing keys in the store. The NATS seeds are
# MESHAUTH_NATS_ISSUER_SEED and MESHAUTH_NATS_VERIFIER_SEED if set, else
# the ones already in namespace meshauth, else a fresh pair each; a seed
# that is not the one nats-users admits is refused. nk makes and checks
# the NKeys: go install github.com/nats-io/nkeys/nk@v0.4.16. Values pass
# through files readable by you alone, never through command lines, and
# are never printed. An existing Secret or ConfigMap is left as it is.
set -eu

fail() {
	echo "prerequisites.sh: $*" >&2
	exit 1
}

: "${MESHAUTH_STORE:?set MESHAUTH_STORE to the PostgreSQL URL of the issuers}"
command -v nk >/dev/null 2>&1 ||
	fail "nk not found, which makes the NATS NKeys: go install github.com/nats-io/nkeys/nk@v0.4.16"
umask 077
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# exists NAMESPACE KIND NAME
exists() {
	kubectl -n "$1" get "$2" "$3" >/dev/null 2>&1
}

namespaces=meshauth
for ns in ${MESHAUTH_SIDECAR_NAMESPACES:-}; do
	case " $namespaces " in *" $ns "*) ;; *) namespaces="$namespaces $ns" ;; esac
done
for ns in $namespaces; do
	kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
done

if exists meshauth secret meshauth-issuer; then
	echo "secret meshauth/meshauth-issuer exists: left as it is"
else
	printf '%s' "$MESHAUTH_STORE" > "$dir/store"
	if [ -n "${MESHAUTH_ADMIN_TOKEN:-}" ]; then
		printf '%s' "$MESHAUTH_ADMIN_TOKEN" > "$dir/admin-token"
	else
		openssl rand -base64 32 | tr -d '\n' > "$dir/admin-token"
	fi
	if [ -n "${MESHAUTH_KEY_ENCRYPTION_KEY:-}" ]; then
		printf '%s' "$MESHAUTH_KEY_ENCRYPTION_KEY" > "$dir/key-encryption-key"
	else
		openssl rand -base64 32 | tr -d '\n' > "$dir/key-encryption-key"
	fi
	kubectl -n meshauth create secret generic meshauth-issuer \
		--from-file=store="$dir/store" \
		--from-file=admin-token="$dir/admin-token" \
		--from-file=key-encryption-key="$dir/key-encryption-key"
fi

# natsuser ROLE VARIABLE VALUE: the seed of the NATS user ROLE (issuer,
# verifier) in $dir/ROLE.seed and its public key in $dir/ROLE.pub. The
# seed already in namespace meshauth wins; VALUE, from VARIABLE, must then
# be the same.
natsuser() {
	seed=$dir/$1.seed
	if exists meshauth secret "nats-$1-seed"; then
		kubectl -n meshauth get secret "nats-$1-seed" -o 'jsonpath={.data.seed}' > "$seed.base64"
		openssl base64 -d -A -in "$seed.base64" -out "$seed"
		if [ -n "$3" ] && [ "$3" != "$(cat "$seed")" ]; then
			fail "$2 is not the seed in Secret meshauth/nats-$1-seed"
		fi
	elif [ -n "$3" ]; then
		printf '%s' "$3" > "$seed"
	else
		nk -gen user > "$seed"
	fi
	nk -inkey "$seed" -pubout > "$dir/$1.pub.line" || fail "the $1 seed ($2 or Secret meshauth/nats-$1-seed) is not an NKey seed"
	tr -d '\n' < "$dir/$1.pub.line" > "$dir/$1.pub"
	case $(cat "$dir/$1.pub") in
	U*) ;;
	*) fail "the $1 seed ($2 or Secret meshauth/nats-$1-seed) is not the seed of an NKey user" ;;
	esac
	if exists meshauth secret nats-users; then
		kubectl -n meshauth get secret nats-users -o "jsonpath={.data.$1-nkey}" > "$dir/$1.admitted.base64"
		openssl base64 -d -A -in "$dir/$1.admitted.base64" -out "$dir/$1.admitted"
		if [ "$(cat "$dir/$1.pub")" != "$(cat "$dir/$1.admitted")" ]; then
			fail "the $1 seed ($2 or Secret meshauth/nats-$1-seed) is not the one whose public key is $1-nkey in Secret meshauth/nats-users"
		fi
	fi
}

# seedsecret NAMESPACE ROLE
seedsecret() {
	if exists "$1" secret "nats-$2-seed"; then
		echo "secret $1/nats-$2-seed exists: left as it is"
	else
		kubectl -n "$1" create secret generic "nats-$2-seed" --from-file=seed="$dir/$2.seed"
	fi
}

natsuser issuer MESHAUTH_NATS_ISSUER_SEED "${MESHAUTH_NATS_ISSUER_SEED:-}"
natsuser verifier MESHAUTH_NATS_VERIFIER_SEED "${MESHAUTH_NATS_VERIFIER_SEED:-}"
# The seeds before the public keys: a run cut short leaves seeds that the
# next run takes up, never public keys whose seeds are lost.
seedsecret meshauth issuer
for ns in $namespaces; do
	seedsecret "$ns" verifier
done
if exists meshauth secret nats-users; then
	echo "secret meshauth/nats-users exists: left as it is"
else
	kubectl -n meshauth create secret generic nats-users \
		--from-file=issuer-nkey="$dir/issuer.pub" \
		--from-file=verifier-nkey="$dir/verifier.pub"
fi

if [ -z "${MESHAUTH_CA_FILE:-}" ]; then
	echo "MESHAUTH_CA_FILE not set: no ConfigMap meshauth-ca created (trust-manager's job, then)"
	exit 0
fi
for ns in $namespaces; do
	if exists "$ns" configmap meshauth-ca; then
		echo "configmap $ns/meshauth-ca exists: left as it is"
	else
		kubectl -n "$ns" create configmap meshauth-ca --from-file=ca.crt="$MESHAUTH_CA_FILE"
	fi
done
