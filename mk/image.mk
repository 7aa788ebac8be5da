# The operator image, built from the Dockerfile as it is with buildah (no Docker engine), into buildah's
# local storage. tools/image.sh caches by the hash of its inputs (a warm `make image` takes ~0.1 s), and
# builds a local stand-in for the node:24-bookworm-slim base with mmdebstrap (tools/image-base.sh)
# because Docker Hub cannot be reached from these machines. runc: crun 1.8 refuses this machine's
# hybrid cgroup v1 hierarchy. podman runs the image in test/integration/build/image.test.ts.
APT_PACKAGES += buildah mmdebstrap runc podman

.PHONY: image

image: apt ## build the operator image with buildah (cached by inputs); prints its name
	@tools/image.sh

TEST_PREREQS += image

# The second image of cluster-e2e's upgrade test (tools/image-template-change.sh): the same Dockerfile over a
# copy of the sources whose proxy unit template renders one more comment line, tagged
# <image>-template-change; cached by its inputs as the first (buildah reuses the npm ci layers).
.PHONY: image-template-change

image-template-change: image ## the upgrade test's second image: one host template changed (cached by inputs)
	@tools/image-template-change.sh

TEST_PREREQS += image-template-change
