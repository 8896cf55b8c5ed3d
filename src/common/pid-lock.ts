// A lock file holding the owner's process ID, for "one process per folder" (the spool's writer, its shipper).
// Created with O_EXCL; a lock left by a process that no longer exists (a crash, kill -9) is taken over.
import {
  closeSync,
  constants as fsConstants,
  fsyncSync,
  openSync,
  readFileSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { PosternError } from './errors.ts';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: unknown }).code === 'EPERM';
  }
}

/**
 * Takes the lock at `path` for this process; returns the path. Throws ALREADY_EXISTS with `heldBy(pid)` as the
 * message when a live process holds it.
 */
export function acquirePidLock(path: string, heldBy: (pid: number) => string, mode = 0o600): string {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, mode);
      writeSync(fd, `${process.pid}\n`);
      fsyncSync(fd);
      closeSync(fd);
      return path;
    } catch (e) {
      if ((e as { code?: unknown }).code !== 'EEXIST') throw e;
    }
    let pid = NaN;
    try {
      pid = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
    } catch {
      // unreadable: stale
    }
    if (Number.isInteger(pid) && pid > 0 && isAlive(pid)) {
      throw new PosternError('ALREADY_EXISTS', `${heldBy(pid)}; if it is not running, remove ${path}`);
    }
    try {
      unlinkSync(path);
    } catch {
      // another process may have taken it first: the next attempt tells
    }
  }
  throw new PosternError('ALREADY_EXISTS', `cannot take the lock ${path}`);
}
