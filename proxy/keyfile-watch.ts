import { type FSWatcher, unwatchFile, watch, watchFile } from 'node:fs';
import { basename, dirname } from 'node:path';
import { CannesError } from '../common/errors.ts';
import { type KeyFileContents, type Route, readKeyFile } from './keys.ts';
import type { Logger } from './log.ts';
import type { ProxyMetrics } from './metrics.ts';

export interface KeyFileWatcherOptions {
  readonly path: string;
  /** The Direct keys file (same folder as the key file), watched too. */
  readonly directPath?: string | undefined;
  readonly uid: number | null;
  readonly logger: Logger;
  readonly metrics: ProxyMetrics;
  /** `keyFileMissing`: the file was deleted; the proxy must refuse requests until it returns. */
  readonly onRoutes: (routes: ReadonlyMap<string, Route>, keyFileMissing: boolean) => void;
  /** Backstop poll of the file's stat, for filesystems where fs.watch misses events. */
  readonly pollIntervalMs?: number;
}

/**
 * Keeps the route table in step with the key file: reloads on change (the directory is
 * watched, because the operator replaces the file by atomic rename) and on SIGHUP. A file
 * that fails any check leaves the last good table in place and logs an error that names
 * the problem, never the content.
 */
export class KeyFileWatcher {
  readonly #o: KeyFileWatcherOptions;
  #digest = '';
  #lastError = '';
  #missing = false;
  #watcher: FSWatcher | null = null;
  #debounce: NodeJS.Timeout | null = null;
  #polling = false;

  constructor(options: KeyFileWatcherOptions) {
    this.#o = options;
  }

  /** The first load: a failure here is fatal for the caller (refuse to start). */
  loadInitial(): number {
    const contents = this.#read();
    this.#apply(contents, 'start');
    return contents.routes.size;
  }

  /** Re-reads the file; returns true when a new table was applied. */
  reload(trigger: string): boolean {
    let contents: KeyFileContents;
    try {
      contents = this.#read();
    } catch (err) {
      const message = err instanceof CannesError ? err.message : 'key file could not be read';
      const reason = err instanceof CannesError ? err.reason : 'KeyFileUnreadable';
      this.#o.metrics.reloaded(false);
      if (reason === 'KeyFileMissing') {
        // Deleted: the operator (or a person) took the keys away, so the proxy stops
        // injecting them at once, rather than keep the last table. Said once.
        if (!this.#missing) {
          this.#missing = true;
          this.#digest = '';
          this.#lastError = message;
          this.#o.onRoutes(new Map(), true);
          this.#o.logger.error('key file is gone; refusing every proxied request (503) until it returns', {
            reason,
            message,
            trigger,
          });
        }
        return false;
      }
      // Repeated polls of the same broken file log once.
      if (message !== this.#lastError) {
        this.#lastError = message;
        const what = this.#missing
          ? 'key file reload failed; still refusing every proxied request (503)'
          : 'key file reload failed; keeping the last good key file';
        this.#o.logger.error(what, {
          reason,
          message,
          trigger,
        });
      }
      return false;
    }
    this.#lastError = '';
    this.#missing = false;
    if (contents.digest === this.#digest) return false;
    this.#apply(contents, trigger);
    return true;
  }

  start(): void {
    const dir = dirname(this.#o.path);
    const names = [this.#o.path, this.#o.directPath].filter((p) => p !== undefined).map((p) => basename(p));
    try {
      this.#watcher = watch(dir, { persistent: false }, (_event, filename) => {
        if (filename !== null && !names.includes(filename.toString())) return;
        this.#schedule('watch');
      });
      this.#watcher.on('error', (err) => this.#o.logger.warn('key file watch failed; polling only', { err }));
    } catch (err) {
      this.#o.logger.warn('key file watch failed; polling only', { err });
    }
    for (const p of this.#paths())
      watchFile(p, { persistent: false, interval: this.#o.pollIntervalMs ?? 5000 }, () =>
        this.#schedule('poll'),
      );
    this.#polling = true;
  }

  stop(): void {
    this.#watcher?.close();
    this.#watcher = null;
    if (this.#polling) for (const p of this.#paths()) unwatchFile(p);
    this.#polling = false;
    if (this.#debounce) clearTimeout(this.#debounce);
  }

  #schedule(trigger: string): void {
    // An editor or the operator's write-then-rename produces bursts of events: settle first.
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => {
      this.#debounce = null;
      this.reload(trigger);
    }, 100);
    this.#debounce.unref();
  }

  #paths(): string[] {
    return this.#o.directPath === undefined ? [this.#o.path] : [this.#o.path, this.#o.directPath];
  }

  #read(): KeyFileContents {
    const direct = this.#o.directPath;
    return readKeyFile(this.#o.path, {
      uid: this.#o.uid,
      ...(direct === undefined ? {} : { directPath: direct }),
    });
  }

  #apply(contents: KeyFileContents, trigger: string): void {
    this.#digest = contents.digest;
    this.#o.onRoutes(contents.routes, false);
    this.#o.metrics.reloaded(true);
    const providers = [...new Set([...contents.routes.values()].map((r) => r.provider))].sort();
    this.#o.logger.info('key file loaded', { routes: contents.routes.size, providers, trigger });
  }
}
