/**
 * Source inventory of the native library, shared by the build script (cuda/build.ts) and the
 * loader (ffi/library.ts): the build id baked into each library is a hash of exactly these files,
 * so the loader can tell a stale build from a current one.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** Which native library: the CPU reference or the CUDA backend. */
export type BackendKind = "cpu" | "cuda";

/** Absolute path of the `cuda/` folder. */
export const CUDA_DIR: string = new URL(".", import.meta.url).pathname.replace(/\/$/, "");
/** Absolute path of the repository root. */
export const REPO_ROOT: string = join(CUDA_DIR, "..");
/** Default folder for built libraries. */
export const BUILD_DIR: string = join(REPO_ROOT, "build");

/** File name of a backend's shared library. */
export function libraryFileName(kind: BackendKind): string {
  return `liblte_${kind}.so`;
}

function listFiles(dir: string, exts: string[]): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((n) => exts.some((e) => n.endsWith(e))).sort().map((n) => join(dir, n));
}

/** Translation units compiled into a backend's library. */
export function compiledSources(kind: BackendKind): string[] {
  return kind === "cpu" ? listFiles(join(CUDA_DIR, "cpu"), [".c"]) : listFiles(join(CUDA_DIR, "cuda"), [".cu"]);
}

/** Every file whose content affects a backend's library (sources, private and public headers). */
export function allInputs(kind: BackendKind): string[] {
  const sub = kind === "cpu" ? "cpu" : "cuda";
  return [
    ...listFiles(join(CUDA_DIR, "include"), [".h"]),
    ...listFiles(join(CUDA_DIR, sub), [".c", ".h", ".cu", ".cuh"]),
    join(CUDA_DIR, "build.ts"),
  ];
}

/** Hash (16 hex chars) of the inputs of a backend's library: its build id. */
export function sourceHash(kind: BackendKind): string {
  const h = createHash("sha256");
  for (const file of allInputs(kind)) {
    h.update(file.slice(CUDA_DIR.length));
    h.update("\0");
    h.update(readFileSync(file));
    h.update("\0");
  }
  return h.digest("hex").slice(0, 16);
}
