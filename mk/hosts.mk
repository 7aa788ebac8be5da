# Simulated servers (test/hosts/) and the SSH layer (operator/ssh/) need a real OpenSSH server
# and the namespace tools. The rig runs sshd itself inside network/mount namespaces: the
# Debian package's own service is never started (there is no init system for it here).
APT_PACKAGES += openssh-server openssh-client iproute2 util-linux openssl coreutils procps
# What a Hetzner Docker image has and the operator's scripts use on the server (health checks,
# the bridge firewall): they run inside each simulated server's namespaces.
APT_PACKAGES += curl nftables
# Light servers (the operator's scale benchmark, test/hosts/shims/stand-in-http.sh): socat
# stands in for the long-running services and forwards published ports.
APT_PACKAGES += socat
