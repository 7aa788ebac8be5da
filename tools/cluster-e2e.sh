#!/usr/bin/env bash
# `make cluster-e2e`: the operator installed as a user installs it, on the rig's real node (docs/rig.md,
# "A real node"): the chart with `helm install --wait`, its pods run by a kubelet and containerd.
#
# Everything runs in a sandbox of its own: new network and mount namespaces (unshare). Inside, the
# test's whole world lives: the API server, Postgres, the Hetzner simulator and its servers' namespaces,
# containerd, the kubelet and the pods' bridge. ip_forward is turned on there only (pods reach the
# simulated servers through it), never in the machine's namespace; the bridge, the pods' network
# namespaces and every mount containerd and the kubelet make die with the sandbox. What can outlive it
# (the pods' processes, containerd's shims, the kubelet's cgroups) is removed here afterwards, by the
# sandbox's own folder and cgroup name.
#
# Usage: tools/cluster-e2e.sh [vitest args...]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

if [ "${1:-}" = "--inside" ]; then
	work="$2"
	shift 2
	ip link set lo up
	sysctl -qw net.ipv4.ip_forward=1 # this namespace's own setting
	ip addr add 10.89.0.1/32 dev lo  # the node's InternalIP (test/rig/node.ts NODE_IP)
	ip addr add 10.0.0.1/32 dev lo   # the `kubernetes` Service's ClusterIP, forwarded by the test
	# Pods leave through the sandbox with its address (servers route the rig's block only).
	nft -f - <<-'EOF'
		table ip cannes-node {
			chain postrouting {
				type nat hook postrouting priority srcnat; policy accept;
				ip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 masquerade
			}
		}
	EOF
	# Named network namespaces (the simulated servers', containerd's pods') in a folder of the sandbox.
	mkdir -p /run/netns /run/containerd
	mount -t tmpfs -o mode=0755 cannes-netns /run/netns
	# containerd 1.6's shims put their sockets in /run/containerd/s whatever its config says.
	mount -t tmpfs -o mode=0700 cannes-containerd /run/containerd
	mkdir -p "$work/tmp"
	export TMPDIR="$work/tmp" CANNES_NODE_SANDBOX="$work"
	exec vitest run --project cluster "$@"
fi

[ "$(id -u)" = 0 ] || { echo "cluster-e2e: needs root (namespaces, containerd, the kubelet)" >&2; exit 2; }
for t in unshare ip nft containerd ctr runc; do
	command -v "$t" >/dev/null || { echo "cluster-e2e: $t is missing; run \`make apt\`" >&2; exit 2; }
done

work="$(mktemp -d /var/tmp/cannes-cluster-XXXXXX)"
chmod 0711 "$work"
rc=0
unshare --net --mount --propagation private -- "$0" --inside "$work" "$@" || rc=$?

# What may outlive the sandbox: shims (daemonised) and the pods' processes keep its mount namespace alive.
pids() {
	# The pattern from a file: a grep with it on its command line would find itself.
	grep -lsaFf <(printf "%s\n" "$work") /proc/[0-9]*/cmdline | cut -d/ -f3
	for f in "$work"/*/cgroup-root; do
		[ -f "$f" ] || continue
		root="$(cat "$f")"
		for h in /sys/fs/cgroup/*; do
			[ -d "$h$root" ] && find "$h$root" -name cgroup.procs -exec cat {} + 2>/dev/null
		done
	done
	return 0
}
# The rig's supervisor stops the control plane and Postgres by itself once vitest is gone: give it time.
deadline=$((SECONDS + 30))
while [ "$SECONDS" -lt "$deadline" ] && [ -n "$(pids)" ]; do sleep 0.5; done
# Then TERM (Postgres shuts down cleanly on it), and KILL what is still there.
for sig in TERM KILL KILL KILL; do
	left="$(pids | sort -u | grep -vx "$$" || true)"
	[ -z "$left" ] && break
	for p in $left; do echo "cluster-e2e: SIG$sig to leftover $p: $(tr '\0' ' ' 2>/dev/null </proc/$p/cmdline | cut -c1-160)" >&2; done
	kill -"$sig" $left 2>/dev/null || true
	deadline=$((SECONDS + 10))
	while [ "$SECONDS" -lt "$deadline" ] && [ -n "$(pids)" ]; do sleep 0.5; done
done
for f in "$work"/*/cgroup-root; do
	[ -f "$f" ] || continue
	root="$(cat "$f")"
	for h in /sys/fs/cgroup/*; do
		[ -d "$h$root" ] && find "$h$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
done
# The sandbox's mount point for its /run/containerd tmpfs, when it made it (empty: no system containerd).
rmdir /run/containerd 2>/dev/null || true
if mount | grep -qF "$work"; then
	echo "cluster-e2e: mounts left under $work:" >&2
	mount | grep -F "$work" >&2
	rc=1
else
	rm -rf "$work"
fi
exit "$rc"
