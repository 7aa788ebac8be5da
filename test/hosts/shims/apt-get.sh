#!/bin/bash
# The rig's apt-get on a simulated server. A server has no package repository (nothing leaves this
# machine, /usr is this machine's own), so this installs exactly one package, `tailscale`, the way
# its .deb would: the binaries (here the rig's own build of v1.102.5 from `make tailnet`, bound
# read-only at /run/cannes/cache) and the package's systemd unit. `update` does nothing; anything
# else fails as apt does for a package it cannot find. The `tailscale` command (shims/tailscale.sh)
# exists only once this marked the package installed on the server's disk.
set -euo pipefail
marker_dir=/var/lib/cannes-apt-shim
words=()
for a in "$@"; do
  case "$a" in -*) ;; *) words+=("$a") ;; esac
done
cmd=${words[0]:-}
case "$cmd" in
  update) exit 0 ;;
  install) ;;
  *) echo "E: the rig's apt-get shim supports only update and install tailscale (got: ${cmd:-nothing})" >&2; exit 100 ;;
esac
pkgs=("${words[@]:1}")
[ "${#pkgs[@]}" -gt 0 ] || { echo "E: nothing to install" >&2; exit 100; }
for p in "${pkgs[@]}"; do
  [ "$p" = tailscale ] || { echo "E: Unable to locate package $p (the rig's apt-get installs only tailscale)" >&2; exit 100; }
done
bin=
for d in $(ls -1dt /run/cannes/cache/tailnet-*/bin 2>/dev/null); do
  if [ -x "$d/tailscaled" ] && [ -x "$d/tailscale" ]; then bin=$d; break; fi
done
[ -n "$bin" ] || { echo "E: Unable to locate package tailscale (no tailnet build in the rig's cache: make tailnet)" >&2; exit 100; }
mkdir -p "$marker_dir" /var/lib/tailscale /etc/systemd/system
chmod 700 /var/lib/tailscale
# The package's unit, with the binary where the rig keeps it (the .deb's is /usr/sbin/tailscaled,
# and its unit lives under /lib/systemd, which is this machine's here). --no-logs-no-support: the
# package's default FLAGS would try to upload logs, which cannot leave the rig anyway.
cat >/etc/systemd/system/tailscaled.service <<UNIT
[Unit]
Description=Tailscale node agent
Wants=network-pre.target
After=network-pre.target

[Service]
ExecStart=$bin/tailscaled --state=/var/lib/tailscale/tailscaled.state --socket=/run/tailscale/tailscaled.sock --port=41641 --no-logs-no-support
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
echo "$bin" >"$marker_dir/tailscale"
echo "Setting up tailscale ($("$bin/tailscale" version 2>/dev/null | head -1)) ..."
