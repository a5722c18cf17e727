#!/usr/bin/env bash
# Makes sure the standard tools the test suite checks bundles with are present: GnuPG (gpg, gpgv),
# GNU tar, coreutils sha256sum, curl, openssl, GNU time, and tinyproxy (the CONNECT proxy of test/e2e/proxy.test.ts). Installs missing Debian packages when run as root;
# otherwise fails with the command to run. Never skips: a missing tool is a failure.
set -euo pipefail
declare -A pkg_for=([gpg]=gnupg [gpgv]=gpgv [tar]=tar [sha256sum]=coreutils [curl]=curl [openssl]=openssl [tinyproxy]=tinyproxy)
missing=()
for tool in "${!pkg_for[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${pkg_for[$tool]}")
done
# chromium (headless: the `airlock serve` page test) and nginx (the serve bench's baseline); nginx lives in /usr/sbin
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
# GNU time (peak RSS in the bench and its smoke test): the shell builtin of the same name does not count
[ -x /usr/bin/time ] || missing+=(time)
if [ "${#missing[@]}" -eq 0 ]; then exit 0; fi
echo "ensure-tools: installing ${missing[*]}" >&2
if [ "$(id -u)" != 0 ]; then
  echo "ensure-tools: missing ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq "${missing[@]}" >&2
