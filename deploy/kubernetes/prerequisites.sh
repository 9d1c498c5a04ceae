#!/bin/sh
# Creates what the manifests read but never apply, once, from your values:
#
# - the Secret meshauth-issuer in namespace meshauth: the PostgreSQL URL
#   (store), the admin token and the key-encryption key;
# - the ConfigMap meshauth-ca (key ca.crt, the mesh CA's certificate) in
#   namespace meshauth and in each namespace with sidecars, unless
#   trust-manager distributes it (a Bundle whose target is a ConfigMap
#   meshauth-ca, key ca.crt).
#
#   MESHAUTH_STORE='postgres://meshauth:…@db.internal:5432/meshauth?sslmode=verify-full' \
#   MESHAUTH_CA_FILE=mesh-ca.crt MESHAUTH_CA_NAMESPACES="meshauth shop" \
#     sh deploy/kubernetes/prerequisites.sh
#
# MESHAUTH_ADMIN_TOKEN and MESHAUTH_KEY_ENCRYPTION_KEY are generated unless
# set. Keep the key-encryption key (it is in the Secret): it seals the
# signing keys in the store. Values pass through files readable by you
# alone, never through command lines, and are never printed. An existing
# Secret or ConfigMap is left as it is.
set -eu

: "${MESHAUTH_STORE:?set MESHAUTH_STORE to the PostgreSQL URL of the issuers}"
umask 077
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
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

kubectl create namespace meshauth --dry-run=client -o yaml | kubectl apply -f -
if kubectl -n meshauth get secret meshauth-issuer >/dev/null 2>&1; then
	echo "secret meshauth/meshauth-issuer exists: left as it is"
else
	kubectl -n meshauth create secret generic meshauth-issuer \
		--from-file=store="$dir/store" \
		--from-file=admin-token="$dir/admin-token" \
		--from-file=key-encryption-key="$dir/key-encryption-key"
fi

if [ -z "${MESHAUTH_CA_FILE:-}" ]; then
	echo "MESHAUTH_CA_FILE not set: no ConfigMap meshauth-ca created (trust-manager's job, then)"
	exit 0
fi
for ns in ${MESHAUTH_CA_NAMESPACES:-meshauth}; do
	kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
	if kubectl -n "$ns" get configmap meshauth-ca >/dev/null 2>&1; then
		echo "configmap $ns/meshauth-ca exists: left as it is"
	else
		kubectl -n "$ns" create configmap meshauth-ca --from-file=ca.crt="$MESHAUTH_CA_FILE"
	fi
done
