/** What runs on the VPS besides the proxy: pure templates (no I/O). docs/gateway.md explains them. */
export * from './compose.ts';
export * from './gateway-config.ts';
export * from './intake-unit.ts';
export * from './key-file.ts';
export * from './layout.ts';
export * from './nftables.ts';
export * from './proxy-unit.ts';
export * from './runtime.ts';
export * from './sshd.ts';
