#!/usr/bin/env bash
# Publishes an image the way fogshell's admission policy wants it: pushed by digest, signed,
# and with a signed SLSA provenance (v0.2 as Tekton Chains writes it, and v1) and a signed
# CycloneDX SBOM attached — cosign's `.sig` / `.att` layout, made with fogshell's own
# cosign-compatible commands (no cosign binary exists for Debian 12).
#
#   images/publish.sh LAYOUT_DIR REGISTRY/REPOSITORY KEY_FILE
#
# LAYOUT_DIR is an images/build.sh output (it holds `digest` and `packages`). COSIGN_PASSWORD
# is the key's password; FOGSHELL_COORDINATOR names the binary (default: on PATH, else
# target/release or target/debug); FOGSHELL_INSECURE_REGISTRY=HOST:PORT speaks plain HTTP to
# that registry (a local one); REGISTRY_AUTH_FILE names the login for a private one (an auth
# file as `skopeo login --authfile` writes: skopeo and `fogshell-coordinator image` both read
# it). Prints the pinned reference.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
layout=${1:?usage: images/publish.sh LAYOUT_DIR REGISTRY/REPOSITORY KEY_FILE}
target=${2:?usage: images/publish.sh LAYOUT_DIR REGISTRY/REPOSITORY KEY_FILE}
key=${3:?usage: images/publish.sh LAYOUT_DIR REGISTRY/REPOSITORY KEY_FILE}

coordinator=${FOGSHELL_COORDINATOR:-}
if [[ -z $coordinator ]]; then
  for candidate in "$(command -v fogshell-coordinator || true)" \
    "$here/../target/release/fogshell-coordinator" "$here/../target/debug/fogshell-coordinator"; do
    [[ -n $candidate && -x $candidate ]] && coordinator=$candidate && break
  done
fi
[[ -x ${coordinator:-} ]] || { echo "no fogshell-coordinator binary: build it or set FOGSHELL_COORDINATOR" >&2; exit 1; }

insecure=()
tls=()
if [[ -n ${FOGSHELL_INSECURE_REGISTRY:-} ]]; then
  insecure=(--insecure-registry "$FOGSHELL_INSECURE_REGISTRY")
  tls=(--dest-tls-verify=false)
fi

digest=$(cat "$layout/digest")
image="$target@$digest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. The image, digests unchanged.
skopeo copy --quiet --preserve-digests "${tls[@]}" "oci:$layout:default" "docker://$target:latest" >/dev/null

# 2. The SBOM and the provenance, from what build.sh recorded.
python3 - "$layout" "$image" "$work" <<'PY'
import json, sys, hashlib, os, datetime
layout, image, work = sys.argv[1:4]
packages = [line.split() for line in open(os.path.join(layout, 'packages')) if line.strip()]
digest = open(os.path.join(layout, 'digest')).read().strip()
built = datetime.datetime.fromtimestamp(os.path.getmtime(os.path.join(layout, 'digest')),
                                        datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
def purl(name, version, arch):
    return f'pkg:deb/debian/{name}@{version}?arch={arch}'
components = [{'type': 'library', 'name': n, 'version': v, 'purl': purl(n, v, a),
               'hashes': [{'alg': 'SHA-256', 'content': h}]} for n, v, a, h in packages]
sbom = {'bomFormat': 'CycloneDX', 'specVersion': '1.5', 'version': 1,
        'metadata': {'component': {'type': 'container', 'name': image.split('@')[0],
                                   'version': digest}},
        'components': components}
materials = [{'uri': purl(n, v, a), 'digest': {'sha256': h}} for n, v, a, h in packages]
steps = [{'entryPoint': 'images/build.sh', 'arguments': [], 'environment': {}}]
v02 = {'builder': {'id': 'https://tekton.dev/chains/v2'},
       'buildType': 'tekton.dev/v1beta1/TaskRun',
       'invocation': {'configSource': {}, 'parameters': {}, 'environment': {}},
       'buildConfig': {'steps': steps},
       'metadata': {'buildStartedOn': built, 'buildFinishedOn': built,
                    'completeness': {'parameters': False, 'environment': False,
                                     'materials': True},
                    'reproducible': True},
       'materials': materials}
v1 = {'buildDefinition': {'buildType': 'https://tekton.dev/chains/v2/slsa',
                          'externalParameters': {'script': 'images/build.sh'},
                          'internalParameters': {},
                          'resolvedDependencies': [{'uri': m['uri'], 'digest': m['digest']}
                                                   for m in materials]},
      'runDetails': {'builder': {'id': 'https://tekton.dev/chains/v2'},
                     'metadata': {'startedOn': built, 'finishedOn': built}}}
for name, doc in [('sbom', sbom), ('provenance-v0.2', v02), ('provenance-v1', v1)]:
    with open(os.path.join(work, name + '.json'), 'w') as f:
        json.dump(doc, f, sort_keys=True)
PY

# 3. Signature and attestations.
"$coordinator" image sign --image "$image" --key "$key" "${insecure[@]}" >/dev/null
"$coordinator" image attest --image "$image" --key "$key" "${insecure[@]}" \
  --type https://slsa.dev/provenance/v0.2 --predicate "$work/provenance-v0.2.json" >/dev/null
"$coordinator" image attest --image "$image" --key "$key" "${insecure[@]}" \
  --type https://slsa.dev/provenance/v1 --predicate "$work/provenance-v1.json" >/dev/null
"$coordinator" image attest --image "$image" --key "$key" "${insecure[@]}" \
  --type https://cyclonedx.org/bom --predicate "$work/sbom.json" >/dev/null
echo "$image"
