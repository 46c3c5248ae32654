/**
 * Crash-safe file writes shared by every layer that writes artifacts (checkpoints, safetensors,
 * token caches, pipeline records): data goes to a temporary file in the same folder, is fsynced,
 * renamed over the destination, and the folder is fsynced so the rename itself is durable.
 * Readers see the old file or the complete new one, never a torn write.
 *
 * @module
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";

/** Best-effort fsync of a folder (makes renames in it durable; unsupported on some filesystems). */
export function fsyncDir(dir: string): void {
  try {
    const d = openSync(dir, "r");
    try {
      fsyncSync(d);
    } finally {
      closeSync(d);
    }
  } catch { /* not supported on every platform or filesystem */ }
}

/** Writes every byte of `buf` at the current position of `fd`. */
export function writeAll(fd: number, buf: Uint8Array): void {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, Math.min(buf.length - done, 1 << 30));
}

/** A temporary name beside `path` that no other writer uses. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`);
}

/**
 * Writes `data` (text, bytes, or a list of byte chunks written in order) to `path` atomically.
 * The folder must exist. On failure the temporary file is removed and the error rethrown.
 */
export function writeFileAtomicSync(path: string, data: string | Uint8Array | Uint8Array[]): void {
  const chunks = typeof data === "string"
    ? [new TextEncoder().encode(data)]
    : data instanceof Uint8Array
    ? [data]
    : data;
  const tmp = tempPathFor(path);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, "wx");
    for (const c of chunks) writeAll(fd, c);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch { /* already failing */ }
    }
    rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDir(dirname(path));
}

/**
 * Asynchronous {@linkcode writeFileAtomicSync} for text or bytes: readers see either the old file
 * or the complete new one, never a torn write. The temporary file is removed if anything fails.
 *
 * @param path Destination file; its folder must exist.
 * @param data Text (written as UTF-8) or bytes.
 *
 * @example
 * ```ts
 * await writeFileAtomic(`${ctx.dir}/experts.json`, JSON.stringify(groups));
 * ```
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const tmp = tempPathFor(path);
  try {
    const file = await Deno.open(tmp, { write: true, createNew: true });
    try {
      let off = 0;
      while (off < bytes.length) off += await file.write(bytes.subarray(off));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  fsyncDir(dirname(path)); // make the rename itself durable
}

/**
 * {@linkcode writeFileAtomic} for a JSON value: pretty-printed with two spaces and a final newline.
 *
 * @param path Destination file; its folder must exist.
 * @param value Any JSON-serialisable value.
 */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(value, null, 2) + "\n");
}

/**
 * Whether `name` is a temporary name made by {@linkcode tempPathFor} (`.<name>.tmp-<pid>-<8 hex>`)
 * or by a folder swap (`.<name>.tmp-<pid>`, models/checkpoint.ts), and the pid that made it.
 */
export function parseTempName(name: string): { pid: number } | undefined {
  const m = /^\..+\.tmp-(\d+)(?:-[0-9a-f]{8})?$/.exec(name);
  return m ? { pid: Number(m[1]) } : undefined;
}
