#!/usr/bin/env bash
# Set up a Debian/Ubuntu host for banger: system packages, npm dependencies,
# the build, and a `banger` command on PATH. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PACKAGES=(
  # VMM and disks
  qemu-system-x86 e2fsprogs
  # default kernel and image builds
  mmdebstrap uidmap busybox-static cpio kmod dpkg-dev lz4 zstd xz-utils binutils file
  # guest agent (static binary)
  musl-tools
  # networking; dig for the DNS tests
  iproute2 iptables nftables dnsutils
  # ssh into guests; git for workspace mode (vm run PATH)
  openssh-client git
  # OCI pull tests: a real local registry and image tools
  docker-registry skopeo umoci
  # completion tests and the TUI tests
  zsh fish tmux socat
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The registry package starts a system service on port 5000; banger's tests run their own.
if systemctl is-active --quiet docker-registry 2>/dev/null; then $SUDO systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi

# A root bangerd runs each VMM as this unprivileged user (config vmm_user).
if ! getent passwd banger-vmm >/dev/null; then
  echo "==> creating the system user banger-vmm (VMMs run as it)"
  $SUDO useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin banger-vmm
fi

echo "==> npm ci"
npm ci --no-audit --no-fund --loglevel=error
echo "==> build"
npm run --silent build

if ! command -v banger >/dev/null 2>&1 || [ "$(readlink -f "$(command -v banger)")" != "$(readlink -f bin/banger)" ]; then
  echo "==> linking banger and bangerd into /usr/local/bin"
  $SUDO ln -sf "$PWD/bin/banger" /usr/local/bin/banger
  $SUDO ln -sf "$PWD/bin/bangerd" /usr/local/bin/bangerd
fi
echo "==> ready: $(banger --version)"
