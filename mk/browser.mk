# A real browser for the key intake's page (test/e2e/direct-keys.test.ts): Debian's chromium, run
# headless in the laptop namespace and driven over the DevTools protocol (Node's WebSocket).
APT_PACKAGES += chromium
