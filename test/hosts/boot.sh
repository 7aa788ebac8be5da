#!/bin/bash
# One boot of a simulated server. Runs as pid 1 of a fresh pid + mount + UTS namespace, inside
# the server's network namespace (see real-host-provider.ts). Killing it kills everything the
# server runs, and its mounts vanish with the mount namespace: a power-off leaves nothing.
#
# Inputs (environment): CS_MODE rescue|os, CS_HOSTNAME, CS_IPV4, CS_DISK (the server's "OS disk"
# folder on this machine), CS_NODE_PREFIX (Node install to expose read-only), CS_SHIMS (bundled
# shims), CS_ROOT_HASH (rescue: sha512-crypt of the one-time root password), CS_RESCUE_KEYS
# (rescue: authorized keys, one a line).
set -euo pipefail

ro_bind() { mount --bind "$1" "$2"; mount -o remount,bind,ro "$2"; }

# 1. Everything taken from this machine is bound under a private /run first, before the
#    overlays below hide the paths it came from (the repo or the cache may live under /root or /tmp).
mount -t tmpfs -o mode=755,size=64m tmpfs /run
mkdir -p /run/cannes/disk /run/cannes/node /run/cannes/shims /run/sshd /run/netns /run/lock
chmod 755 /run/sshd
mount --bind "$CS_DISK" /run/cannes/disk
ro_bind "$CS_NODE_PREFIX" /run/cannes/node
ro_bind "$CS_SHIMS" /run/cannes/shims
# The rig's tool cache (read-only): npm packages an image stands for (make openclaw) live there.
if [ -n "${CS_CACHE:-}" ] && [ -d "$CS_CACHE" ]; then
  mkdir -p /run/cannes/cache
  ro_bind "$CS_CACHE" /run/cannes/cache
fi
echo "$CS_MODE" >/run/cannes/mode
head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >/run/cannes/boot-id

# 2. A per-boot /etc (a copy of this machine's, minus its sshd host keys), /tmp and /var/tmp.
mkdir -p /run/cannes/etc
# tar exits 1 when a file changes while it reads (another process on this machine may be
# installing packages): that copy is still good enough for a test server.
{ tar -C /etc --exclude=./ssh --exclude=./shadow --exclude=./gshadow --warning=no-file-changed \
  --ignore-failed-read -cf - . || [ $? -eq 1 ]; } | tar -C /run/cannes/etc -xf -
mount --bind /run/cannes/etc /etc
mkdir -p /etc/ssh /etc/systemd/system
# CA certificates of the rig's own TLS services (RealHostProvider trustedCaPems/trustCa), trusted
# like the public CAs already in the bundle.
if [ -n "${CS_EXTRA_CA_PEMS:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  printf '%s\n' "$CS_EXTRA_CA_PEMS" >>/etc/ssl/certs/ca-certificates.crt
fi
mount -t tmpfs -o mode=1777,size=256m tmpfs /tmp
mount -t tmpfs -o mode=1777,size=64m tmpfs /var/tmp
# Shims first in root's PATH (/usr/local/sbin): docker, systemctl, mount (rescue disk).
ro_bind /run/cannes/shims/bin /usr/local/sbin
# Hetzner's docker-ce image has no Node (docs/hosts.md), and neither does this server: this
# machine's /usr/bin is seen through an overlay with its Node commands deleted (whiteouts in a
# per-boot upper layer), so only what the deploy installs can run the proxy. The rig's own
# shims use its Node by absolute path (/run/cannes/node), outside every PATH.
mkdir -p /run/cannes/usr-bin/upper /run/cannes/usr-bin/work
mount -t overlay overlay \
  -o lowerdir=/usr/bin,upperdir=/run/cannes/usr-bin/upper,workdir=/run/cannes/usr-bin/work /usr/bin
rm -f /usr/bin/node /usr/bin/nodejs /usr/bin/npm /usr/bin/npx /usr/bin/corepack

hostname "$CS_HOSTNAME"
echo "$CS_HOSTNAME" >/etc/hostname
printf '127.0.0.1 localhost\n%s %s\n' "$CS_IPV4" "$CS_HOSTNAME" >/etc/hosts
# No resolver: a server has no network beyond this machine, so lookups fail at once.
rm -f /etc/resolv.conf && : >/etc/resolv.conf

# Accounts: no password anywhere except rescue's root.
awk -F: '{print $1 ":*:20000:0:99999:7:::"}' /etc/passwd >/etc/shadow
chmod 640 /etc/shadow
ip link set lo up
ip link del docker0 2>/dev/null || true

if [ "$CS_MODE" = rescue ]; then
  # Rescue is a RAM system: fresh host key, empty /root, the OS disk only through `mount`.
  sed -i "s|^root:[^:]*:|root:${CS_ROOT_HASH}:|" /etc/shadow
  mkdir -p /run/cannes/rescue-root/.ssh
  chmod 700 /run/cannes/rescue-root /run/cannes/rescue-root/.ssh
  mount --bind /run/cannes/rescue-root /root
  printf '%s\n' "${CS_RESCUE_KEYS:-}" | grep -v '^$' >/root/.ssh/authorized_keys || true
  chmod 600 /root/.ssh/authorized_keys
  mkdir -p /run/cannes/rescue-mnt
  mount --bind /run/cannes/rescue-mnt /mnt
  ssh-keygen -q -t ed25519 -N '' -C root@rescue -f /etc/ssh/ssh_host_ed25519_key
  cat >/etc/ssh/sshd_config <<CONF
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
UsePAM no
StrictModes yes
PidFile /run/sshd.pid
LogLevel VERBOSE
Subsystem sftp /usr/lib/openssh/sftp-server
CONF
else
  # The installed OS: its own /root, /etc/ssh (host keys, sshd_config), units, /opt, /mnt, /var/lib.
  for d in root etc/ssh etc/systemd/system opt mnt var/lib; do
    mkdir -p "/run/cannes/disk/$d"
    mount --bind "/run/cannes/disk/$d" "/$d"
  done
  mkdir -p /var/lib/docker-shim
  # Docker's bridge exists from boot on a Docker host (the proxy binds it before any container runs).
  ip link add docker0 type bridge
  ip addr add 172.17.0.1/16 dev docker0
  ip link set docker0 up
fi

/usr/sbin/sshd -D -e -f /etc/ssh/sshd_config &
SSHD=$!

if [ "$CS_MODE" = os ]; then
  # Enabled units start at boot, like systemd's multi-user.target.
  for w in /etc/systemd/system/multi-user.target.wants/*.service; do
    [ -e "$w" ] || continue
    /usr/local/sbin/systemctl start "$(basename "$w")" || echo "boot: unit $(basename "$w") failed" >&2
  done
  # Containers with restart: always / unless-stopped come back, as dockerd does.
  /usr/local/sbin/docker __boot || echo "boot: docker shim could not restart containers" >&2
fi

echo "boot: $CS_MODE up" >&2
# pid 1: reap orphans until killed. A server whose sshd died is broken: stop, so the provider
# reports it (with this log) instead of waiting for a banner that never comes.
while :; do
  if ! kill -0 "$SSHD" 2>/dev/null; then
    echo "boot: sshd exited" >&2
    exit 1
  fi
  wait -n || true
done
