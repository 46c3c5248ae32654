/**
 * Finds and loads a native backend library, predictably:
 *   1. `LTE_CPU_LIB` / `LTE_CUDA_LIB`: an explicit path to that backend's library;
 *   2. `LTE_LIB_DIR`: a folder holding `liblte_<backend>.so`;
 *   3. the repository's `build/` folder (what `deno task build` writes).
 * Nothing else is searched. On failure the error lists every path tried and the build command.
 * At load the ABI version is checked, and a library from `build/` whose build id differs from the
 * hash of the current sources is refused as stale (set `LTE_ALLOW_STALE=1` to load it anyway).
 *
 * @module
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type BackendKind, BUILD_DIR, libraryFileName, sourceHash } from "../cuda/sources.ts";
import { LibraryLoadError } from "./errors.ts";
import { LTE_ABI_VERSION, type LteSymbols, SYMBOLS } from "./symbols.ts";

/** A loaded library. */
export interface LoadedLibrary {
  kind: BackendKind;
  path: string;
  buildId: string;
  lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  symbols: LteSymbols;
}

const BUILD_HINT = "build it with `deno task build` (the CUDA backend needs nvcc)";

/** Reads a NUL-terminated C string returned by the library. */
export function cString(ptr: Deno.PointerValue): string {
  return ptr === null ? "" : Deno.UnsafePointerView.getCString(ptr);
}

function candidates(kind: BackendKind): { path: string; fromBuildDir: boolean; source: string }[] {
  // An explicit override is the only candidate: silently falling back to another build would
  // run code the user did not ask for.
  const envName = kind === "cpu" ? "LTE_CPU_LIB" : "LTE_CUDA_LIB";
  const explicit = Deno.env.get(envName);
  if (explicit) return [{ path: explicit, fromBuildDir: false, source: envName }];
  const dir = Deno.env.get("LTE_LIB_DIR");
  if (dir) return [{ path: join(dir, libraryFileName(kind)), fromBuildDir: false, source: "LTE_LIB_DIR" }];
  const out: { path: string; fromBuildDir: boolean; source: string }[] = [];
  out.push({ path: join(BUILD_DIR, libraryFileName(kind)), fromBuildDir: true, source: "build folder" });
  return out;
}

/** Loads a backend library or throws a `LibraryLoadError` saying what was tried and how to fix it. */
export function loadLibrary(kind: BackendKind): LoadedLibrary {
  const tried: string[] = [];
  const problems: string[] = [];
  for (const c of candidates(kind)) {
    tried.push(c.path);
    if (!existsSync(c.path)) {
      problems.push(`${c.path} (${c.source}): not found`);
      continue;
    }
    let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
    try {
      lib = Deno.dlopen(c.path, SYMBOLS);
    } catch (e) {
      if (e instanceof Deno.errors.PermissionDenied) throw e;
      throw new LibraryLoadError(
        `cannot load the ${kind} library ${c.path} (${c.source}): ${(e as Error).message}; ${BUILD_HINT}`,
        tried,
        { cause: e },
      );
    }
    const abi = lib.symbols.lte_abi_version();
    if (abi !== LTE_ABI_VERSION) {
      lib.close();
      throw new LibraryLoadError(
        `stale ${kind} library ${c.path}: ABI version ${abi}, this code needs ${LTE_ABI_VERSION}; ${BUILD_HINT}`,
        tried,
      );
    }
    const buildId = cString(lib.symbols.lte_build_id());
    if (c.fromBuildDir && Deno.env.get("LTE_ALLOW_STALE") !== "1") {
      try {
        checkFresh(kind, c.path, buildId);
      } catch (e) {
        lib.close();
        throw e;
      }
    }
    // Numbers are accepted at run time for 64-bit parameters (see LteSymbols).
    return { kind, path: c.path, buildId, lib, symbols: lib.symbols as unknown as LteSymbols };
  }
  throw new LibraryLoadError(
    `the ${kind} native library was not found; tried:\n  ${problems.join("\n  ")}\n${BUILD_HINT}, ` +
      `or point ${kind === "cpu" ? "LTE_CPU_LIB" : "LTE_CUDA_LIB"} at a built library`,
    tried,
  );
}

/** Whether a library file for this backend exists where `loadLibrary` would look. */
export function libraryExists(kind: BackendKind): boolean {
  return candidates(kind).some((c) => existsSync(c.path));
}

/** Throws a `LibraryLoadError` when `buildId` is not the hash of the current sources. */
export function checkFresh(kind: BackendKind, path: string, buildId: string): void {
  const want = sourceHash(kind);
  if (want === buildId) return;
  throw new LibraryLoadError(
    `stale ${kind} library ${path}: built from sources ${buildId}, but cuda/ now hashes to ${want}; ` +
      `rebuild with \`deno task build\` (or set LTE_ALLOW_STALE=1 to load it anyway)`,
    [path],
  );
}
