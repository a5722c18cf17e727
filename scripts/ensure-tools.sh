#!/usr/bin/env bash
# Makes sure the standard tools the test suite checks bundles with are present: GnuPG (gpg, gpgv),
# GNU tar, coreutils sha256sum, curl, openssl, GNU time, tinyproxy (the CONNECT proxy of test/e2e/proxy.test.ts),
# util-linux `script` (a real pseudo-terminal for the CLI's progress tests), docker-registry + skopeo + htpasswd
# (the OCI registry tests). Installs missing Debian packages when run as root;
# otherwise fails with the command to run. Never skips: a missing tool is a failure.
set -euo pipefail
declare -A pkg_for=([gpg]=gnupg [gpgv]=gpgv [tar]=tar [sha256sum]=coreutils [curl]=curl [openssl]=openssl [tinyproxy]=tinyproxy [script]=bsdutils [mkfifo]=coreutils [docker-registry]=docker-registry [skopeo]=skopeo [htpasswd]=apache2-utils)
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
# On a fresh machine unattended-upgrades (or another installer) often holds the apt/dpkg lock: wait for
# it (up to AIRLOCK_APT_LOCK_TIMEOUT seconds, default 600) instead of failing at once.
lock_wait=(-o "DPkg::Lock::Timeout=${AIRLOCK_APT_LOCK_TIMEOUT:-600}")
apt-get "${lock_wait[@]}" update -qq >&2
apt-get "${lock_wait[@]}" install -y -qq "${missing[@]}" >&2
