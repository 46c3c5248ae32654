/**
 * The run-directory lock: `<runDir>/.lock` holds `{pid, started, hostname}` of the run using the
 * directory. It is created exclusively; a live holder fails the run, a dead one's lock is taken over.
 *
 * @module
 */
import { join } from "node:path";
import { hostname, pidAlive } from "./_fs.ts";
import { PlanError } from "./plan.ts";

/** Name of the lock file a run keeps in its run directory. */
export const LOCK_FILE = ".lock";

/** A held run-directory lock. */
export interface RunLock {
  /** A log line when a stale lock was taken over. */
  tookOver?: string;
  /** Remove the lock (if it is still ours); idempotent and synchronous (signal handlers call it). */
  release(): void;
}

interface LockInfo {
  pid?: number;
  started?: string;
  hostname?: string;
}

/**
 * Create `<runDir>/.lock` (exclusively) holding this process's pid and start time. An existing lock
 * of a live process fails the run with a {@linkcode PlanError}; the lock of a process that is gone
 * (or one left half-written long ago) is taken over.
 */
export function acquireLock(runDir: string): RunLock {
  const path = join(runDir, LOCK_FILE);
  const me: LockInfo = { pid: Deno.pid, started: new Date().toISOString(), hostname: hostname() };
  const text = JSON.stringify(me) + "\n";
  let tookOver: string | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const file = Deno.openSync(path, { write: true, createNew: true });
      try {
        const bytes = new TextEncoder().encode(text);
        for (let off = 0; off < bytes.length;) off += file.writeSync(bytes.subarray(off));
      } finally {
        file.close();
      }
      let released = false;
      const lock: RunLock = {
        release() {
          if (released) return;
          released = true;
          try {
            if (Deno.readTextFileSync(path) === text) Deno.removeSync(path);
          } catch { /* already gone */ }
        },
      };
      if (tookOver !== undefined) lock.tookOver = tookOver;
      return lock;
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    }
    const holder = readLock(path);
    if (holder === "gone") continue;
    const who = holder.pid !== undefined ? `process ${holder.pid}` : "another process";
    const since = holder.started ? `, started ${holder.started}` : "";
    const host = holder.hostname && holder.hostname !== me.hostname ? ` on ${holder.hostname}` : "";
    if (holder.alive) {
      throw new PlanError([
        `run dir ${runDir} is in use by ${who}${host}${since} (lock file ${path}); wait for that run to end, ` +
        `use another --run-dir, or delete the lock file if no pipeline run is using the directory`,
      ]);
    }
    tookOver = `run dir lock: took over the stale lock of ${who}${since}, which is no longer running (${path})`;
    try {
      Deno.removeSync(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  throw new PlanError([`run dir ${runDir}: could not create the lock file ${path} (another run keeps taking it)`]);
}

function readLock(path: string): (LockInfo & { alive: boolean }) | "gone" {
  let text: string;
  let mtime: number;
  try {
    text = Deno.readTextFileSync(path);
    mtime = Deno.statSync(path).mtime?.getTime() ?? 0;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return "gone";
    throw err;
  }
  let info: LockInfo | undefined;
  try {
    const v = JSON.parse(text);
    if (v && typeof v === "object" && Number.isInteger(v.pid)) info = v;
  } catch { /* half-written, or not ours */ }
  // A lock without a readable pid is being written right now, or was abandoned mid-write.
  if (!info) return { alive: Date.now() - mtime < 10_000 };
  const remote = info.hostname !== undefined && info.hostname !== hostname();
  return { ...info, alive: remote || pidAlive(info.pid!) };
}
