#!/usr/bin/env bash
# Installs what building and testing fogshell needs on Debian 12, idempotently: Debian packages
# that are missing, and cargo tools that are missing. Safe to run again; does nothing when all
# is there. Run as root (CI is root); otherwise it says what to install and fails.
#
#   scripts/install-deps.sh          everything the tests need
#   scripts/install-deps.sh --run    only what building and running the stack needs (scripts/up.sh)
set -euo pipefail
run_only=false
[[ ${1:-} == --run ]] && run_only=true

# Debian packages the build and the tests need, one line each with why.
apt_packages=(
  pkg-config   # -sys crates find their C libraries through it
  g++          # libfuzzer-sys compiles libFuzzer's C++ for the fuzz targets
  libseccomp-dev # libcontainer's seccomp support links libseccomp
  busybox-static # the default shell image (images/build.sh)
  docker-registry # a real OCI registry on loopback for the image pull tests
  skopeo       # pushes the default image into that registry
  openssl      # the API tests' OIDC issuer makes its RSA key with it
  curl         # the API tests poll the coordinator with it
  procps       # pkill: the end-to-end tests stop the shims they started
  iproute2     # ip netns + veth: the link tests cut a node's network
  chromium     # the console test drives it headless through Playwright
  libtss2-dev  # the agent talks to its TPM through tpm2-tss (tss-esapi links it)
  swtpm        # software TPMs for the attestation tests
  swtpm-tools  # swtpm_setup manufactures them, with EK certificates from a test CA
  tpm2-tools   # tpm2_pcrextend: the attestation tests change a PCR as a new boot chain would
  websocketd   # the edge latency bench's floor: a bare terminal server on the fog node
  libnss3-tools # certutil: the console test's browser trusts the coordinator's CA (its NSS database)
  systemd      # systemd-analyze verifies the units in systemd/
)

if $run_only; then
  apt_packages=(pkg-config libseccomp-dev libtss2-dev busybox-static)
fi

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Node.js and npm build the console and run its test; any install of them will do (the
# machine's own npm may be newer than Debian's), so only missing commands are installed.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

$run_only && exit 0

# Cargo tools, pinned so a new release cannot change CI under us.
cargo_tool() {
  local bin=$1 crate=$2 version=$3
  if ! command -v "$bin" >/dev/null 2>&1; then
    echo "installing $crate $version"
    cargo install "$crate" --version "$version" --locked --quiet
  fi
}
cargo_tool cargo-nextest cargo-nextest 0.9.143
cargo_tool cargo-fuzz cargo-fuzz 0.13.2
