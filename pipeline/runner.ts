/**
 * The runner: plans a validated pipeline against its run directory (what is cached, what runs),
 * then runs stages in file order with caching, crash-safe manifests, and clean interruption.
 *
 * Run directory layout (`runs/<name>/` unless `run_dir` or `--run-dir` says otherwise):
 *
 * ```
 * config.yaml      resolved config (defaults + overrides) of the latest invocation
 * overrides.yaml   the override arguments of the latest invocation
 * env.json         Deno version, OS, CPUs, git revision + dirty flag, time, requested device
 * log.txt          appended by every invocation
 * metrics.jsonl    appended: one JSON object per ctx.metric() call, with stage, time, attempt, hash
 * stages/<name>/   a stage's artifacts + stage.json (type, hash, status, times, summary)
 * .lock            while a run is using the directory: {pid, started, hostname}
 * ```
 *
 * @module
 */
import { join } from "node:path";
import { writeJsonAtomic } from "../io/atomic.ts";
import { configDirOf, type PipelineConfig } from "./config.ts";
import { createProgress } from "./progress.ts";
import { stderrOutput } from "./_io.ts";
import { exists, freeName, mkdirTracked, timestamp } from "./_fs.ts";
import { acquireLock, type RunLock } from "./lock.ts";
import { type PlanEntry, PlanError, type PlanOptions, planPipeline } from "./plan.ts";
import {
  type ActiveStage,
  appendJsonLine,
  markExited,
  removeOldFolders,
  repairJsonl,
  type StageManifest,
  type StageStatus,
  writeRunRecord,
} from "./records.ts";
import { removeStaleTemps, runDirProblem, writeRunMarker } from "./rundir.ts";
import { installSignals } from "./signals.ts";
import type { StageContext, StageOutput } from "./stage.ts";

export { LOCK_FILE } from "./lock.ts";
export { type PlanEntry, PlanError, type PlanOptions, planPipeline, stageHashes } from "./plan.ts";
export { readManifest, type StageManifest, type StageStatus } from "./records.ts";
export { RUN_MARKER } from "./rundir.ts";

/** Options of {@linkcode runPipeline}. */
export interface RunOptions extends PlanOptions {
  /** Override arguments to record in `overrides.yaml`. @default {config.overrides} */
  overrides?: string[];
  /** Config file to record in `env.json`. @default {config.file} */
  configPath?: string;
  /**
   * The command that continues this run after an interrupt, shown in the hint (the CLI passes
   * its own arguments plus `--resume`). @default {"the same command with --resume"}
   */
  resumeCommand?: string;
  /** Extra abort signal (embedding, tests); SIGINT/SIGTERM abort stages too. */
  signal?: AbortSignal;
  /** Listen for SIGINT/SIGTERM while running. @default {true} */
  handleSignals?: boolean;
  /** Console output. @default {stderr, redrawn progress when it is a terminal} */
  output?: { write(text: string): void; isTerminal: boolean };
}

/** What happened to one stage in {@linkcode runPipeline}. */
export interface StageResult {
  name: string;
  type: string;
  hash: string;
  /** `skipped`: cached; `not-selected`: outside `--only`; `not-run`: an earlier stage failed. */
  action: "ran" | "skipped" | "not-selected" | "not-run";
  /** Final status, for stages that ran or were skipped. */
  status?: StageStatus;
  summary?: Record<string, unknown>;
  error?: string;
  duration_s?: number;
  /** ISO start time of the attempt, for stages that ran. */
  started?: string;
}

/** Result of {@linkcode runPipeline}. */
export interface RunResult {
  /** `complete` when every selected stage is complete. */
  status: "complete" | "failed" | "interrupted";
  runDir: string;
  stages: StageResult[];
}

/**
 * Run a validated pipeline: lock the run directory, plan, record the run (config.yaml,
 * overrides.yaml, env.json), then run each selected stage that is not cached, in file order,
 * stopping at the first failure or interrupt.
 *
 * @throws {PlanError} Before anything is written, if the selection cannot run or another live run
 * holds the run directory's lock.
 *
 * @example
 * ```ts
 * const config = await loadConfig("examples/quickstart.yaml", { overrides: ["seed=1"] });
 * const result = await runPipeline(config, { only: ["eval"] });
 * if (result.status !== "complete") Deno.exit(1);
 * ```
 */
export async function runPipeline(config: PipelineConfig, opts: RunOptions = {}): Promise<RunResult> {
  const runDir = opts.runDir ?? config.settings.run_dir;
  const settings = { ...config.settings, run_dir: runDir };
  const resolved = { ...config, settings };
  // Never write into (or clean) a folder that is not ours, nor another pipeline file's results.
  const problem = runDirProblem(runDir, resolved);
  if (problem !== undefined) throw new PlanError([problem]);
  const created = await mkdirTracked(runDir);
  let lock: RunLock | undefined;
  try {
    lock = acquireLock(runDir);
    return await runLocked(resolved, runDir, opts, lock);
  } finally {
    lock?.release();
    // A run refused before writing anything leaves no trace (non-recursive: fails when not empty).
    for (const d of created) {
      try {
        Deno.removeSync(d);
      } catch {
        break;
      }
    }
  }
}

async function runLocked(
  resolved: PipelineConfig,
  runDir: string,
  opts: RunOptions,
  lock: RunLock,
): Promise<RunResult> {
  const settings = resolved.settings;
  const plan = await planPipeline(resolved, opts);
  // A crashed or interrupted attempt of the same config is never discarded silently.
  const unresumed = plan.filter((p) => p.needsResume);
  if (unresumed.length > 0) {
    throw new PlanError(
      unresumed.map((p) =>
        `stage ${p.name}: its previous attempt (${p.previous}, started ${p.manifest?.started}) has the same config ` +
        `and can be continued: add --resume to continue it, or --force to discard it and start over`
      ),
    );
  }
  writeRunMarker(runDir, resolved);
  const out = opts.output ?? stderrOutput();
  const stagesDir = join(runDir, "stages");
  await Deno.mkdir(stagesDir, { recursive: true });
  await writeRunRecord(resolved, runDir, opts);

  const logPath = join(runDir, "log.txt");
  const metricsPath = join(runDir, "metrics.jsonl");
  const appendLog = (line: string) =>
    Deno.writeTextFileSync(logPath, `${new Date().toISOString()} ${line}\n`, { append: true });
  const say = (line: string) => {
    out.write(`${out.isTerminal ? "\r\x1b[K" : ""}${line}\n`);
    appendLog(line);
  };
  if (lock.tookOver) say(lock.tookOver);
  const repaired = repairJsonl(metricsPath);
  if (repaired) say(repaired);
  for (const p of removeStaleTemps(runDir)) say(`removed ${p}: a temporary file of a process that no longer runs`);

  const controller = new AbortController();
  const onExternalAbort = () => controller.abort(opts.signal?.reason);
  if (opts.signal?.aborted) onExternalAbort();
  opts.signal?.addEventListener("abort", onExternalAbort, { once: true });
  let active: ActiveStage | undefined;
  const removeSignals = opts.handleSignals === false ? () => {} : installSignals((sig) => {
    if (controller.signal.aborted) {
      // Exiting without waiting: record the stage as interrupted first, so no "running" is left behind.
      try {
        say(`received ${sig} again: exiting now`);
        if (active) {
          markExited(active, `Interrupted by ${sig} twice: the process exited before the stage returned`);
          say(`stage ${active.name}: marked interrupted; continue with ${opts.resumeCommand ?? "--resume"}`);
        }
      } finally {
        lock.release();
        Deno.exit(130);
      }
    }
    say(
      `received ${sig}: asking stage ${
        active?.name ?? "(none)"
      } to stop at the next step boundary (${sig} again exits now)`,
    );
    controller.abort(new Error(`Interrupted by ${sig}`));
  });

  const hashes = new Map(plan.map((p) => [p.name, p.hash]));
  const runIds = new Map<string, string>(); // name → started of the complete result consumers see
  const outputs = new Map<string, StageOutput>();
  const results: StageResult[] = [];
  let status: RunResult["status"] = "complete";
  const selected = plan.filter((p) => p.action !== "not-selected").map((p) => p.name);
  say(`pipeline ${settings.name}: ${selected.length} of ${plan.length} stages selected, run dir ${runDir}`);
  try {
    for (const entry of plan) {
      const st = resolved.stages.find((s) => s.name === entry.name)!;
      const base = { name: entry.name, type: entry.type, hash: entry.hash };
      const stageDir = join(stagesDir, entry.name);
      if (status !== "complete") {
        results.push({ ...base, action: "not-run" });
        continue;
      }
      if (entry.action !== "run") {
        const m = entry.manifest;
        if (m?.status === "complete") {
          outputs.set(entry.name, { dir: stageDir, summary: m.summary ?? {}, hash: m.hash, ...variantOf(st) });
          runIds.set(entry.name, m.started);
        }
        if (entry.action === "skip") say(`stage ${entry.name}: unchanged (hash ${entry.hash.slice(0, 12)}), skipped`);
        const r: StageResult = { ...base, action: entry.action === "skip" ? "skipped" : "not-selected" };
        if (m) Object.assign(r, { status: m.status, summary: m.summary });
        results.push(r);
        continue;
      }
      if (controller.signal.aborted) {
        status = "interrupted";
        results.push({ ...base, action: "not-run" });
        continue;
      }
      if (entry.restart) say(`stage ${entry.name}: ${entry.restart}`);
      if (entry.resumable && !entry.resume && entry.previous === "failed") {
        say(`stage ${entry.name}: starting its failed attempt over (--resume would continue it instead)`);
      }
      const inputs = Object.fromEntries(st.inputs.map((n) => [n, outputs.get(n)!]));
      const r = await runStage({
        st,
        entry,
        inputHashes: Object.fromEntries(st.inputs.map((n) => [n, hashes.get(n)!])),
        inputRuns: Object.fromEntries(st.inputs.map((n) => [n, runIds.get(n)!])),
        configDir: configDirOf(resolved),
        inputs,
        stageDir,
        stagesDir,
        runDir,
        settings: st.seed !== undefined ? { ...settings, seed: st.seed } : settings,
        signal: controller.signal,
        say,
        appendLog,
        metricsPath,
        out,
        resumeCommand: opts.resumeCommand,
        setActive: (a) => void (active = a),
      });
      active = undefined;
      results.push(r);
      if (r.status === "complete" || r.status === "ended") {
        outputs.set(entry.name, { dir: stageDir, summary: r.summary ?? {}, hash: entry.hash, ...variantOf(st) });
        runIds.set(entry.name, r.started!);
      } else status = r.status === "interrupted" ? "interrupted" : "failed";
    }
  } finally {
    removeSignals();
    opts.signal?.removeEventListener("abort", onExternalAbort);
  }
  say(`pipeline ${settings.name}: ${status}`);
  return { status, runDir, stages: results };
}

interface RunStageArgs {
  st: PipelineConfig["stages"][number];
  entry: PlanEntry;
  inputHashes: Record<string, string>;
  inputRuns: Record<string, string>;
  configDir: string;
  inputs: Record<string, StageOutput>;
  stageDir: string;
  stagesDir: string;
  runDir: string;
  settings: PipelineConfig["settings"];
  signal: AbortSignal;
  say: (line: string) => void;
  appendLog: (line: string) => void;
  metricsPath: string;
  out: { write(text: string): void; isTerminal: boolean };
  resumeCommand: string | undefined;
  setActive: (a: ActiveStage | undefined) => void;
}

async function runStage(a: RunStageArgs): Promise<StageResult> {
  const { st, stageDir, entry } = a;
  const hash = entry.hash;
  const resume = entry.resume;
  const base = { name: st.name, type: st.type, hash, action: "ran" as const };
  // Never lose earlier results: the old folder is moved aside and removed only after success.
  let oldDir: string | undefined;
  if (!resume && (await exists(stageDir))) {
    oldDir = await freeName(join(a.stagesDir, `.${st.name}.old-${timestamp()}`));
    await Deno.rename(stageDir, oldDir);
  }
  await Deno.mkdir(stageDir, { recursive: true });
  const started = new Date();
  const manifestPath = join(stageDir, "stage.json");
  const manifest: StageManifest = {
    type: st.type,
    hash,
    status: "running",
    started: started.toISOString(),
    resumed: resume,
    config: st.config,
    inputs: a.inputHashes,
    input_runs: a.inputRuns,
  };
  if (st.definition.version !== undefined) manifest.version = st.definition.version;
  if (entry.fingerprint !== undefined) manifest.fingerprint = entry.fingerprint;
  await writeJsonAtomic(manifestPath, manifest);
  a.setActive({ name: st.name, manifestPath, manifest, started });
  a.say(`stage ${st.name}: running ${st.type} (hash ${hash.slice(0, 12)}${resume ? ", resume" : ""})`);

  let metricError: Error | undefined;
  const ctx: StageContext = {
    name: st.name,
    type: st.type,
    runDir: a.runDir,
    dir: stageDir,
    configDir: a.configDir,
    hash,
    inputs: a.inputs,
    pipeline: a.settings,
    resume,
    signal: a.signal,
    log: (msg) => a.say(`[${st.name}] ${msg}`),
    metric: (record) => {
      // The runner's fields last: a record cannot overwrite them.
      const line = JSON.stringify({
        ...record,
        stage: st.name,
        time: new Date().toISOString(),
        attempt: manifest.started,
        hash: hash.slice(0, 12),
      });
      try {
        appendJsonLine(a.metricsPath, line); // whole lines only, even on a full disk
      } catch (err) {
        metricError ??= err as Error; // the stage fails even if it swallows the error
        throw err;
      }
    },
    progress: (opts) =>
      createProgress(opts, {
        write: (t) => a.out.write(t),
        isTerminal: a.out.isTerminal,
        onLine: (line) => a.appendLog(`[${st.name}] ${line}`),
      }),
  };

  let summary: Record<string, unknown> | undefined;
  let error: unknown;
  try {
    const ret = await st.definition.run(st.config, ctx);
    if (metricError) throw metricError;
    if (ret === null || typeof ret !== "object" || Array.isArray(ret)) {
      throw new TypeError(
        `Stage type "${st.type}" returned ${ret === null ? "null" : typeof ret}: expected a summary object`,
      );
    }
    // JSON would turn NaN/inf into null and the stage would be "complete": a non-finite result fails.
    const bad = nonFinite(ret, "summary");
    if (bad !== undefined) {
      throw new RangeError(
        `stage returned a non-finite number at ${bad.path} (${bad.value}): a NaN or infinite result is a failure`,
      );
    }
    summary = JSON.parse(JSON.stringify(ret));
  } catch (err) {
    error = err;
  }
  const finished = new Date();
  manifest.finished = finished.toISOString();
  manifest.duration_s = (finished.getTime() - started.getTime()) / 1000;
  if (summary !== undefined) manifest.summary = summary;
  // The stage decides: a summary means it finished unless it says it stopped early; an exception
  // while the signal is aborted is an interruption, any other exception a failure.
  manifest.status = error === undefined
    ? summary?.interrupted === true ? "interrupted" : st.definition.cache === false ? "ended" : "complete"
    : a.signal.aborted
    ? "interrupted"
    : "failed";
  if (error !== undefined) {
    manifest.error = error instanceof Error ? error.message : String(error);
    if (error instanceof Error && error.stack) manifest.error_stack = error.stack;
  }
  try {
    await writeJsonAtomic(manifestPath, manifest);
  } catch (err) {
    // A full disk refuses the temporary file; overwriting in place usually still fits. Never leave
    // "running" behind, and never record "complete" for an attempt whose record could not be saved.
    const why = `cannot write ${manifestPath}: ${(err as Error).message}`;
    const status = manifest.status === "complete" || manifest.status === "ended" ? "failed" : manifest.status;
    try {
      Deno.writeTextFileSync(
        manifestPath,
        JSON.stringify({ ...manifest, status, error: manifest.error ?? why }) + "\n",
      );
    } catch { /* nothing more to do: the error below names the file */ }
    a.setActive(undefined);
    throw new Error(why, { cause: err });
  }
  a.setActive(undefined);

  const took = `${manifest.duration_s.toFixed(1)}s`;
  if (manifest.status === "complete" || manifest.status === "ended") {
    await removeOldFolders(a.stagesDir, st.name);
    a.say(`stage ${st.name}: ${manifest.status} in ${took}`);
  } else {
    if (manifest.status === "interrupted") {
      const how = a.resumeCommand !== undefined
        ? `continue with: ${a.resumeCommand}`
        : "continue by running the same command with --resume";
      a.say(`stage ${st.name}: interrupted after ${took}; ${how}`);
    } else {
      const detail = Deno.env.get("LTE_DEBUG") === "1" && manifest.error_stack ? manifest.error_stack : manifest.error;
      a.say(`stage ${st.name}: failed after ${took}: ${detail}`);
    }
    if (oldDir) a.say(`stage ${st.name}: previous results kept in ${oldDir}`);
  }
  const r: StageResult = {
    ...base,
    status: manifest.status,
    duration_s: manifest.duration_s,
    started: manifest.started,
  };
  if (summary !== undefined) r.summary = summary;
  if (manifest.error !== undefined) r.error = manifest.error;
  return r;
}

/** `variant` and `base` of a swept stage's output (nothing for a stage that is not a variant). */
function variantOf(st: PipelineConfig["stages"][number]): Pick<StageOutput, "variant" | "base"> {
  return st.base !== undefined ? { variant: { ...st.variant }, base: st.base } : {};
}

/** The first NaN/±Infinity in a JSON-like value, with its path. */
function nonFinite(v: unknown, path: string, depth = 0): { path: string; value: number } | undefined {
  if (typeof v === "number") return Number.isFinite(v) ? undefined : { path, value: v };
  if (v === null || typeof v !== "object" || depth > 20) return undefined;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const r = nonFinite(v[i], `${path}[${i}]`, depth + 1);
      if (r) return r;
    }
    return undefined;
  }
  for (const [k, x] of Object.entries(v)) {
    const r = nonFinite(x, `${path}.${k}`, depth + 1);
    if (r) return r;
  }
  return undefined;
}
