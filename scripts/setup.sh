#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Idempotent set-up: Debian packages, then a virtualenv (.venv) with pyvirt and its Python deps.
#   scripts/setup.sh          what pyvirt needs to run guests
#   scripts/setup.sh --test   plus the test tools and the libvirt 9.0 oracle
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

pkgs=(qemu-system-x86 qemu-utils busybox-static cpio)
# Virtual networks: dnsmasq serves DHCP/DNS, nftables holds pyvirt's NAT and forward rules.
pkgs+=(dnsmasq-base nftables)
# Storage pools: lvm2 for logical pools (pvcreate/vgcreate/lvcreate); fs pools use util-linux's
# mount and blkid and e2fsprogs' mkfs.ext4, which Debian always has.
pkgs+=(lvm2)
# Volume wipe with a pattern (nnsa, dod, ...) runs scrub as a separate program, as libvirt does.
pkgs+=(scrub)
if [ "${1:-}" = "--test" ]; then
    # libvirt is the oracle and benchmark peer of the tests; pyvirt itself never uses it.
    pkgs+=(libvirt-clients libvirt-daemon-driver-qemu libvirt-daemon python3-libvirt)
    # apparmor_parser compiles the generated AppArmor profiles (without loading them) in the tests.
    pkgs+=(apparmor)
    # libvirt (the oracle) defines TPM-emulator domains only where swtpm is installed, and its
    # domain capabilities list UEFI firmware from OVMF's descriptors: with both installed, the
    # corpus's TPM documents and the firmware enums are compared with libvirt's on every machine.
    pkgs+=(swtpm swtpm-tools ovmf)
    # Remote transports: a real OpenSSH server (started by the tests on a loopback port), nc for
    # libvirt's ssh tunnel, and Cyrus SASL's mechanisms and saslpasswd2 for the SASL oracle.
    pkgs+=(openssh-server openssh-client netcat-openbsd libsasl2-modules sasl2-bin)
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "${1:-}" = "--test" ]; then
    # libvirt-qemu: libvirt's embedded QEMU driver (the oracle) runs guests as this account.
    # pyvirt-test-qemu: an unprivileged QEMU user for the security tests; made here, once, so that
    # parallel test workers never race to create it.
    getent passwd libvirt-qemu >/dev/null || useradd --system --no-create-home \
        --home-dir /var/lib/libvirt --shell /usr/sbin/nologin --user-group libvirt-qemu
    getent passwd pyvirt-test-qemu >/dev/null || useradd --system --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin --user-group pyvirt-test-qemu
fi

stamp=.venv/.pyvirt-setup
want="$(sha256sum pyproject.toml | cut -c1-16)${1:-}"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    python3 -m venv .venv
    extra=""
    [ "${1:-}" = "--test" ] && extra="[test]"
    .venv/bin/pip install -q --disable-pip-version-check -e ".$extra"
    echo "$want" > "$stamp"
fi

# Byte-compile pyvirt once, so that start-up stays fast even where PYTHONDONTWRITEBYTECODE is set
# (only stale files are compiled again).
.venv/bin/python -m compileall -q src/pyvirt >/dev/null
