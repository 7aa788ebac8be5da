#!/bin/sh
# The `tailscale` command of a simulated server: present only once the apt-get shim installed the
# package (else "command not found", as on a server without it). The socket is the package's.
bin=$(cat /var/lib/cannes-apt-shim/tailscale 2>/dev/null) || true
if [ -z "$bin" ] || [ ! -x "$bin/tailscale" ]; then
  echo "tailscale: command not found" >&2
  exit 127
fi
exec "$bin/tailscale" --socket=/run/tailscale/tailscaled.sock "$@"
