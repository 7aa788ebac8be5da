# Simulated servers (test/hosts/) and the SSH layer (operator/ssh/) need a real OpenSSH server
# and the namespace tools. The rig runs sshd itself inside network/mount namespaces: the
# Debian package's own service is never started (there is no init system for it here).
APT_PACKAGES += openssh-server openssh-client iproute2 util-linux openssl coreutils procps
