/** File-system helpers shared by the runner's modules (internal). */
import { dirname, resolve } from "node:path";

/** Whether a process exists: /proc on Linux; elsewhere we cannot tell cheaply, so assume it does. */
export function pidAlive(pid: number): boolean {
  if (pid === Deno.pid) return true;
  if (pid <= 0) return false;
  if (Deno.build.os !== "linux") return true;
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch (err) {
    return !(err instanceof Deno.errors.NotFound);
  }
}

export function hostname(): string | undefined {
  try {
    return Deno.hostname();
  } catch {
    return undefined;
  }
}

/** `mkdir -p`, returning the folders it created, deepest first. */
export async function mkdirTracked(dir: string): Promise<string[]> {
  const missing: string[] = [];
  for (let d = resolve(dir); !(await exists(d)); d = dirname(d)) {
    missing.push(d);
    if (dirname(d) === d) break;
  }
  await Deno.mkdir(dir, { recursive: true });
  return missing;
}

export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

export async function freeName(path: string): Promise<string> {
  let candidate = path;
  for (let i = 1; await exists(candidate); i++) candidate = `${path}-${i}`;
  return candidate;
}

export function timestamp(): string {
  return new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}
