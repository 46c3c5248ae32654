/**
 * Run-directory hygiene: the marker that makes a folder provably ours (so only our folders are ever
 * written into or cleaned), and the removal of stale temporary files our atomic writers left behind.
 *
 * @module
 */
import { join, resolve } from "node:path";
import { parseTempName, writeFileAtomicSync } from "../io/atomic.ts";
import { pidAlive } from "./_fs.ts";
import type { PipelineConfig } from "./config.ts";

/** Marker file every run directory holds; a folder without it is not ours. */
export const RUN_MARKER = ".lte-run.json";

/** Contents of {@linkcode RUN_MARKER}. */
export interface RunMarker {
  format: "lte-pipeline/run@1";
  /** Pipeline name (`name:` in the YAML). */
  name: string;
  /** Absolute path of the config file that made the folder (null for a config parsed from a string). */
  config: string | null;
  created: string;
}

function configIdentity(config: Pick<PipelineConfig, "file">): string | null {
  return config.file === "<string>" ? null : resolve(config.file);
}

/**
 * Why `runDir` must not be used by this pipeline, or undefined when it may: it is missing or empty,
 * holds our marker for the same pipeline name and config file, or is a run directory made before
 * markers existed (`env.json` and `stages/`). Reads only.
 */
export function runDirProblem(runDir: string, config: PipelineConfig): string | undefined {
  let entries: string[];
  try {
    if (!Deno.statSync(runDir).isDirectory) return `run dir ${runDir} exists and is not a folder`;
    // (Our own lock file, taken just before planning, does not make the folder non-empty.)
    entries = [...Deno.readDirSync(runDir)].map((e) => e.name).filter((n) => n !== ".lock");
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    return `run dir ${runDir}: ${(err as Error).message}`;
  }
  if (entries.length === 0) return undefined;
  let marker: Partial<RunMarker> | undefined;
  try {
    marker = JSON.parse(Deno.readTextFileSync(join(runDir, RUN_MARKER)));
  } catch { /* absent or unreadable */ }
  if (marker?.format !== "lte-pipeline/run@1") {
    if (entries.includes("env.json") && entries.includes("stages")) return undefined; // made before markers
    return `run dir ${runDir} already exists, is not empty and is not a pipeline run directory (no ${RUN_MARKER}); ` +
      `refusing to write into it (its files could be overwritten or cleaned up): choose a new or empty folder ` +
      `with --run-dir or run_dir`;
  }
  const file = configIdentity(config);
  if (marker.name !== config.settings.name) {
    return `run dir ${runDir} holds the results of pipeline "${marker.name}", not "${config.settings.name}": ` +
      `give this pipeline its own folder with --run-dir or run_dir`;
  }
  if (file !== null && typeof marker.config === "string" && marker.config !== file) {
    return `run dir ${runDir} holds the results of ${marker.config} (pipeline "${marker.name}"); ${file} has the ` +
      `same name and would replace them: give one of them another run_dir (or --run-dir), or delete ` +
      `${join(runDir, RUN_MARKER)} if the first file was moved here`;
  }
  return undefined;
}

/** Write (or keep) the run directory's marker. */
export function writeRunMarker(runDir: string, config: PipelineConfig): void {
  const path = join(runDir, RUN_MARKER);
  try {
    const m = JSON.parse(Deno.readTextFileSync(path));
    if (m?.format === "lte-pipeline/run@1" && (m.config !== null || configIdentity(config) === null)) return;
  } catch { /* absent: write it */ }
  const marker: RunMarker = {
    format: "lte-pipeline/run@1",
    name: config.settings.name,
    config: configIdentity(config),
    created: new Date().toISOString(),
  };
  writeFileAtomicSync(path, JSON.stringify(marker, null, 2) + "\n");
}

/**
 * Remove temporary files and folders under `dir` that are provably ours and stale: named by our
 * atomic writers (`.<name>.tmp-<pid>[-<8 hex>]`, see io/atomic.ts and models/checkpoint.ts) and
 * made by a process that no longer runs. Called with the run directory locked. Returns the paths
 * removed.
 */
export function removeStaleTemps(dir: string, maxDepth = 4): string[] {
  const removed: string[] = [];
  const walk = (d: string, depth: number) => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(d)];
    } catch {
      return;
    }
    for (const e of entries) {
      const path = join(d, e.name);
      const t = parseTempName(e.name);
      if (t && t.pid !== Deno.pid && !pidAlive(t.pid)) {
        Deno.removeSync(path, { recursive: true });
        removed.push(path);
      } else if (e.isDirectory && !e.isSymlink && depth < maxDepth) walk(path, depth + 1);
    }
  };
  walk(dir, 0);
  return removed;
}
