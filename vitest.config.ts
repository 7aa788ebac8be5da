import { defineConfig } from 'vitest/config';

// Three projects: unit (one module, in-memory fakes allowed), integration (real parts from
// the rig: API server, Postgres, sshd, namespaces), e2e (the whole system).
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'], testTimeout: 20_000 } },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          testTimeout: 180_000,
          hookTimeout: 900_000,
          fileParallelism: false,
        },
      },
      // The operator on the rig's real node (test/cluster/): only inside the sandbox that
      // tools/cluster-e2e.sh makes (`make cluster-e2e`, also run by `make test`).
      ...(process.env['CANNES_NODE_SANDBOX']
        ? [
            {
              test: {
                name: 'cluster',
                include: ['test/cluster/**/*.test.ts'],
                testTimeout: 900_000,
                hookTimeout: 1_200_000,
                fileParallelism: false,
              },
            },
          ]
        : []),
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          testTimeout: 900_000,
          hookTimeout: 900_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
