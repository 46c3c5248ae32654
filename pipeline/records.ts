/**
 * Run records: the stage manifests (`stages/<name>/stage.json`), the files describing an invocation
 * (config.yaml, overrides.yaml, env.json), whole-line `metrics.jsonl` appends, and the clean-up of
 * folders a stage moved aside.
 *
 * @module
 */
import { join } from "node:path";
import { stringify } from "yaml";
import { writeFileAtomic, writeFileAtomicSync, writeJsonAtomic } from "../io/atomic.ts";
import { configDirOf, type PipelineConfig, resolvedConfigYaml } from "./config.ts";

/**
 * Status recorded in a stage's `stage.json`. `ended`: a stage type with `cache: false` (a server)
 * returned; it is never `complete`, so never skipped as cached.
 */
export type StageStatus = "running" | "complete" | "failed" | "interrupted" | "ended";

/** Contents of `stages/<name>/stage.json`. */
export interface StageManifest {
  type: string;
  /**
   * Cache hash: sha256 of type, resolved stage config, upstream hashes, pipeline seed and device,
   * and the stage definition's `version` and `fingerprint()` when it has them.
   */
  hash: string;
  status: StageStatus;
  /** ISO time the latest attempt started. */
  started: string;
  /** ISO time it ended (absent while running). */
  finished?: string;
  duration_s?: number;
  /** What `run()` returned. */
  summary?: Record<string, unknown>;
  /** Error message, for failed and (sometimes) interrupted stages. */
  error?: string;
  /** Error stack, for debugging a failure without re-running. */
  error_stack?: string;
  /** Whether the attempt continued the previous one (`--resume` with the same hash). */
  resumed: boolean;
  /** The resolved stage config that was run. */
  config: unknown;
  /** The stage definition's `version`, if it has one. */
  version?: string;
  /** What the stage definition's `fingerprint()` returned, if it has one. */
  fingerprint?: string;
  /** Upstream stage hashes, by name. */
  inputs: Record<string, string>;
  /** `started` of the upstream runs whose outputs this run consumed, by name. */
  input_runs: Record<string, string>;
}

/** Read `<runDir>/stages/<name>/stage.json`, or undefined if absent or unreadable. */
export async function readManifest(runDir: string, name: string): Promise<StageManifest | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(join(runDir, "stages", name, "stage.json")));
  } catch {
    return undefined;
  }
}

/** The stage being run, for the second-signal handler. */
export interface ActiveStage {
  name: string;
  manifestPath: string;
  manifest: StageManifest;
  started: Date;
}

/** Rewrite the active stage's stage.json as interrupted, synchronously (the process exits next). */
export function markExited(a: ActiveStage, error: string): void {
  const finished = new Date();
  const m: StageManifest = {
    ...a.manifest,
    status: "interrupted",
    finished: finished.toISOString(),
    duration_s: (finished.getTime() - a.started.getTime()) / 1000,
    error,
  };
  writeFileAtomicSync(a.manifestPath, JSON.stringify(m, null, 2) + "\n");
}

/** Delete every `.<name>.old-*` folder (earlier results moved aside) once `<name>` has completed. */
export async function removeOldFolders(stagesDir: string, name: string): Promise<void> {
  const prefix = `.${name}.old-`; // stage names have no dots: no other stage's folders match
  for await (const e of Deno.readDir(stagesDir)) {
    if (e.name.startsWith(prefix)) await Deno.remove(join(stagesDir, e.name), { recursive: true });
  }
}

/** What {@linkcode writeRunRecord} records about the invocation. */
export interface RunRecordOptions {
  overrides?: string[];
  configPath?: string;
  only?: string[];
  force?: boolean;
  resume?: boolean;
}

/** Write config.yaml, overrides.yaml and env.json for this invocation. */
export async function writeRunRecord(config: PipelineConfig, runDir: string, opts: RunRecordOptions): Promise<void> {
  const overrides = opts.overrides ?? config.overrides;
  const configPath = opts.configPath ?? config.file;
  // Stages resolve relative paths against the config's folder: record it, so the run can be redone.
  const configDir = configDirOf(config);
  await writeFileAtomic(
    join(runDir, "config.yaml"),
    `# Resolved config of the latest run (defaults and overrides applied), from ${configPath}\n` +
      resolvedConfigYaml(config),
  );
  await writeFileAtomic(
    join(runDir, "overrides.yaml"),
    stringify({ config: configPath, config_dir: configDir, overrides }),
  );
  await writeJsonAtomic(join(runDir, "env.json"), {
    time: new Date().toISOString(),
    deno: Deno.version,
    os: Deno.build.os,
    arch: Deno.build.arch,
    cpus: navigator.hardwareConcurrency,
    git: await gitInfo(),
    // The backend actually used (library, device) is the stage's to record: fine-tune puts it in
    // its summary (stage.json), so the pipeline never loads the compute library itself.
    device_requested: config.settings.device,
    config: configPath,
    config_dir: configDir,
    cwd: Deno.cwd(),
    overrides,
    args: Deno.args,
    options: { only: opts.only ?? null, force: opts.force ?? false, resume: opts.resume ?? false },
  });
}

async function gitInfo(): Promise<{ revision: string; dirty: boolean } | null> {
  const git = async (...args: string[]) => {
    const r = await new Deno.Command("git", { args, stdout: "piped", stderr: "null" }).output();
    if (!r.success) throw new Error("git failed");
    return new TextDecoder().decode(r.stdout).trim();
  };
  try {
    const revision = await git("rev-parse", "HEAD");
    const dirty = (await git("status", "--porcelain", "--untracked-files=no")) !== "";
    return { revision, dirty };
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// metrics.jsonl: whole lines only.

/**
 * Cut a torn last line (a crash or a full disk in the middle of an append) off `path`, so the next
 * record does not glue onto it. Returns a log line when it cut something.
 */
export function repairJsonl(path: string): string | undefined {
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true, write: true });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`cannot open ${path}: ${(err as Error).message}`);
  }
  try {
    const size = file.statSync().size;
    if (size === 0) return undefined;
    // Scan back from the end for the last newline, in chunks.
    const chunk = new Uint8Array(64 * 1024);
    let end = size;
    let keep = 0;
    while (end > 0) {
      const start = Math.max(0, end - chunk.length);
      const buf = chunk.subarray(0, end - start);
      file.seekSync(start, Deno.SeekMode.Start);
      for (let off = 0; off < buf.length;) {
        const n = file.readSync(buf.subarray(off));
        if (n === null) break;
        off += n;
      }
      if (end === size && buf[buf.length - 1] === 0x0a) return undefined; // ends with a whole line
      const nl = buf.lastIndexOf(0x0a);
      if (nl >= 0) {
        keep = start + nl + 1;
        break;
      }
      end = start;
    }
    file.truncateSync(keep);
    return `${path}: removed a torn last line (${size - keep} bytes) left by an earlier crash or write error`;
  } finally {
    file.close();
  }
}

/**
 * Append one line to a JSONL file as a whole: on a write error (a full disk) the file is cut back to
 * its previous size, so no torn line is left, and the error names the file.
 */
export function appendJsonLine(path: string, line: string): void {
  const bytes = new TextEncoder().encode(line + "\n");
  let file: Deno.FsFile | undefined;
  let size = 0;
  try {
    file = Deno.openSync(path, { append: true, create: true });
    size = file.statSync().size;
    for (let off = 0; off < bytes.length;) off += file.writeSync(bytes.subarray(off));
  } catch (err) {
    try {
      file?.truncateSync(size);
    } catch { /* best effort (e.g. not a regular file) */ }
    throw new Error(`cannot append to ${path}: ${(err as Error).message}`, { cause: err });
  } finally {
    file?.close();
  }
}
