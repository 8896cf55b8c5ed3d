// Durable file writes: write to a temporary file in the same folder, fsync, rename, so a crash leaves either
// the old file or the new one, never half of one. Private keys are written 0600.
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync, chmodSync, rmSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';

export const PRIVATE_FILE_MODE = 0o600;
export const PUBLIC_FILE_MODE = 0o644;

export function writeFileAtomic(path: string, data: string | Uint8Array, mode = PUBLIC_FILE_MODE): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', mode);
  try {
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  chmodSync(tmp, mode); // the umask may have narrowed or widened it
  renameSync(tmp, path);
  try {
    const dfd = openSync(dir, 'r');
    fsyncSync(dfd);
    closeSync(dfd);
  } catch {
    // Some filesystems refuse fsync on a directory; the rename is still atomic.
  }
}

export function writeJsonAtomic(path: string, value: unknown, mode = PUBLIC_FILE_MODE): void {
  writeFileAtomic(path, JSON.stringify(value, null, 2) + '\n', mode);
}
