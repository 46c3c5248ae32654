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
import { getBackend, resolveDevice } from "../ffi/backend.ts";
import { dirname, join, resolve } from "node:path";
import { stringify } from "yaml";
import { hashConfig, writeFileAtomic, writeFileAtomicSync, writeJsonAtomic } from "./atomic.ts";
import { configDirOf, type PipelineConfig, resolvedConfigYaml } from "./config.ts";
import { createProgress } from "./progress.ts";
import { stderrOutput } from "./_io.ts";
import { didYouMean } from "./_suggest.ts";
import type { DeviceSetting, StageContext, StageOutput } from "./stage.ts";

/** Status recorded in a stage's `stage.json`. */
export type StageStatus = "running" | "complete" | "failed" | "interrupted";

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

/** A stage in the plan. */
export interface PlanEntry {
  name: string;
  type: string;
  inputs: string[];
  hash: string;
  /**
   * A complete result with this hash exists in the run directory, made from the current outputs of
   * its inputs (none of which will re-run now).
   */
  cached: boolean;
  /** Status in the existing `stage.json`, if any. */
  previous?: StageStatus;
  /** The existing `stage.json`, if any (read once, while planning). */
  manifest?: StageManifest;
  /** What the runner will do: run it, skip it (cached), or leave it alone (not in `--only`). */
  action: "run" | "skip" | "not-selected";
  /** `started` of the existing complete result, if any (identifies the run consumers used). */
  started?: string;
  /**
   * The existing attempt did not complete, has this hash, and consumed the current outputs of its
   * inputs (none of which will re-run now): `--resume` can continue it.
   */
  resumable: boolean;
  /** The runner will continue the existing attempt (`--resume` and {@linkcode resumable}). */
  resume: boolean;
  /** Under `--resume`, why an existing incomplete attempt is not continued but started over. */
  restart?: string;
  /** What the stage definition's `fingerprint()` returned, if it has one. */
  fingerprint?: string;
}

/** Options of {@linkcode planPipeline}. */
export interface PlanOptions {
  /** Run only these stages; their inputs must already be complete. */
  only?: string[];
  /** Re-run the selected stages even if cached. */
  force?: boolean;
  /** Run directory. @default {config.settings.run_dir} */
  runDir?: string;
  /**
   * Continue stages whose previous attempt of the same config did not complete (same hash, status
   * interrupted, failed or running): keep their folders and pass `resume: true`. Other stages
   * that run start over, as without it.
   */
  resume?: boolean;
}

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
 * The stage selection cannot run: unknown `--only` names, inputs without a complete result, a
 * failed preflight check, or a run directory in use by another run.
 */
export class PlanError extends Error {
  override name = "PlanError";
  /** One line per problem. */
  readonly problems: string[];
  /** @param problems One line per problem. */
  constructor(problems: string[]) {
    super(problems.length === 1 ? problems[0]! : `Cannot plan the run:\n${problems.map((p) => `  ${p}`).join("\n")}`);
    this.problems = problems;
  }
}

/** Name of the lock file a run keeps in its run directory. */
export const LOCK_FILE = ".lock";

/** What goes into a stage's hash besides its inputs' hashes. */
interface StageIdentity {
  hash: string;
  version?: string;
  fingerprint?: string;
}

function stageIdentities(config: PipelineConfig): Map<string, StageIdentity> {
  const ids = new Map<string, StageIdentity>();
  const configDir = configDirOf(config);
  const { seed, device } = config.settings;
  for (const st of config.stages) {
    const inputs = Object.fromEntries(st.inputs.map((n) => [n, ids.get(n)!.hash]));
    const def = st.definition;
    let fingerprint: string | undefined;
    if (def.fingerprint) {
      try {
        fingerprint = String(def.fingerprint(st.config, { configDir }));
      } catch (err) {
        fingerprint = `error: ${err instanceof Error ? err.message : String(err)}`;
      }
    }
    // undefined entries are dropped by the canonical JSON: stages without them keep their hash.
    const hash = hashConfig({
      type: st.type,
      config: st.config,
      inputs,
      seed,
      device,
      version: def.version,
      fingerprint,
    });
    const id: StageIdentity = { hash };
    if (def.version !== undefined) id.version = def.version;
    if (fingerprint !== undefined) id.fingerprint = fingerprint;
    ids.set(st.name, id);
  }
  return ids;
}

/**
 * Cache hash of every stage, in order: sha256 of the canonical JSON of type, resolved stage config,
 * upstream stage hashes, the pipeline's seed and device, and (when the stage definition has them)
 * its `version` and what its `fingerprint()` returns for the config.
 */
export function stageHashes(config: PipelineConfig): Map<string, string> {
  return new Map([...stageIdentities(config)].map(([name, id]) => [name, id.hash]));
}

/** Read `<runDir>/stages/<name>/stage.json`, or undefined if absent or unreadable. */
export async function readManifest(runDir: string, name: string): Promise<StageManifest | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(join(runDir, "stages", name, "stage.json")));
  } catch {
    return undefined;
  }
}

/**
 * Decide what a run would do, reading (never writing) the run directory.
 *
 * @throws {PlanError} If `only` names an unknown stage, or a selected stage's input is outside the
 * selection and has no complete result with the current hash.
 */
export async function planPipeline(config: PipelineConfig, opts: PlanOptions = {}): Promise<PlanEntry[]> {
  const runDir = opts.runDir ?? config.settings.run_dir;
  const ids = stageIdentities(config);
  const names = config.stages.map((s) => s.name);
  const only = opts.only && opts.only.length > 0 ? new Set(opts.only) : undefined;
  const problems: string[] = [];
  for (const n of only ?? []) {
    if (!names.includes(n)) {
      problems.push(`--only: no stage named "${n}"${didYouMean(n, names)}; stages: ${names.join(", ")}`);
    }
  }
  const plan: PlanEntry[] = [];
  for (const st of config.stages) {
    const { hash, fingerprint } = ids.get(st.name)!;
    const m = await readManifest(runDir, st.name);
    const inputsFresh = st.inputs.every((n) => {
      const up = plan.find((p) => p.name === n)!;
      return up.action !== "run" && up.started !== undefined && m?.input_runs?.[n] === up.started;
    });
    const cached = m?.status === "complete" && m.hash === hash && inputsFresh;
    const selected = !only || only.has(st.name);
    const action = !selected ? "not-selected" : cached && !opts.force ? "skip" : "run";
    const incomplete = m !== undefined && m.status !== "complete";
    const resumable = incomplete && m.hash === hash && inputsFresh;
    const entry: PlanEntry = {
      name: st.name,
      type: st.type,
      inputs: st.inputs,
      hash,
      cached,
      action,
      resumable,
      resume: resumable && action === "run" && opts.resume === true,
    };
    if (m) entry.manifest = m;
    if (m?.status) entry.previous = m.status;
    if (m?.status === "complete") entry.started = m.started;
    if (fingerprint !== undefined) entry.fingerprint = fingerprint;
    if (opts.resume && action === "run" && incomplete && !resumable) {
      const attempt = `the ${m.status ?? "previous"} attempt`;
      entry.restart = m.hash !== hash
        ? `config changed since ${attempt} (hash ${String(m.hash).slice(0, 12)} -> ${hash.slice(0, 12)}); starting over`
        : `its input stages have re-run since ${attempt}; starting over`;
    }
    plan.push(entry);
  }
  if (only) {
    for (const e of plan.filter((p) => p.action !== "not-selected")) {
      for (const input of e.inputs) {
        const up = plan.find((p) => p.name === input)!;
        if (up.action !== "not-selected" || up.cached) continue;
        const why = up.previous === undefined
          ? "has not run"
          : up.previous === "complete"
          ? "is stale (its config or inputs changed since it ran)"
          : `is ${up.previous}`;
        problems.push(
          `--only ${e.name}: input stage "${input}" ${why}; run it too: --only ${[input, ...only].join(",")}`,
        );
      }
    }
  }
  const configDir = configDirOf(config);
  for (const st of config.stages) {
    if (plan.find((p) => p.name === st.name)?.action !== "run" || !st.definition.preflight) continue;
    for (const msg of st.definition.preflight(st.config, { configDir })) {
      problems.push(`stages[${st.index}] (stage ${st.name}) ${msg}`);
    }
  }
  if (problems.length > 0) throw new PlanError(problems);
  return plan;
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
          outputs.set(entry.name, { dir: stageDir, summary: m.summary ?? {}, hash: m.hash });
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
        settings,
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
      if (r.status === "complete") {
        outputs.set(entry.name, { dir: stageDir, summary: r.summary ?? {}, hash: entry.hash });
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

/** The stage being run, for the second-signal handler. */
interface ActiveStage {
  name: string;
  manifestPath: string;
  manifest: StageManifest;
  started: Date;
}

/** Rewrite the active stage's stage.json as interrupted, synchronously (the process exits next). */
function markExited(a: ActiveStage, error: string): void {
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
      Deno.writeTextFileSync(a.metricsPath, line + "\n", { append: true });
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
    if (ret === null || typeof ret !== "object" || Array.isArray(ret)) {
      throw new TypeError(
        `Stage type "${st.type}" returned ${ret === null ? "null" : typeof ret}: expected a summary object`,
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
    ? summary?.interrupted === true ? "interrupted" : "complete"
    : a.signal.aborted
    ? "interrupted"
    : "failed";
  if (error !== undefined) {
    manifest.error = error instanceof Error ? error.message : String(error);
    if (error instanceof Error && error.stack) manifest.error_stack = error.stack;
  }
  await writeJsonAtomic(manifestPath, manifest);
  a.setActive(undefined);

  const took = `${manifest.duration_s.toFixed(1)}s`;
  if (manifest.status === "complete") {
    await removeOldFolders(a.stagesDir, st.name);
    a.say(`stage ${st.name}: complete in ${took}`);
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

/** Delete every `.<name>.old-*` folder (earlier results moved aside) once `<name>` has completed. */
async function removeOldFolders(stagesDir: string, name: string): Promise<void> {
  const prefix = `.${name}.old-`; // stage names have no dots: no other stage's folders match
  for await (const e of Deno.readDir(stagesDir)) {
    if (e.name.startsWith(prefix)) await Deno.remove(join(stagesDir, e.name), { recursive: true });
  }
}

/** Write config.yaml, overrides.yaml and env.json for this invocation. */
async function writeRunRecord(config: PipelineConfig, runDir: string, opts: RunOptions): Promise<void> {
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
    device_requested: config.settings.device,
    backend: backendInfo(config.settings.device),
    config: configPath,
    config_dir: configDir,
    cwd: Deno.cwd(),
    overrides,
    args: Deno.args,
    options: { only: opts.only ?? null, force: opts.force ?? false, resume: opts.resume ?? false },
  });
}

/** The compute backend a run will use (library, build id, device name/memory), or why none loads. */
function backendInfo(device: DeviceSetting): Record<string, unknown> {
  try {
    const kind = resolveDevice(device);
    const b = getBackend(kind);
    return { kind, library: b.path, build_id: b.buildId, ...b.deviceInfo() };
  } catch (e) {
    return { error: (e as Error).message };
  }
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

function installSignals(handler: (sig: Deno.Signal) => void): () => void {
  const removers: (() => void)[] = [];
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    const h = () => handler(sig);
    try {
      Deno.addSignalListener(sig, h);
      removers.push(() => Deno.removeSignalListener(sig, h));
    } catch { /* SIGTERM is not available on Windows */ }
  }
  return () => removers.forEach((r) => r());
}

// ---------------------------------------------------------------------------------------------
// Run directory lock

interface RunLock {
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
function acquireLock(runDir: string): RunLock {
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

/** Whether a process exists: /proc on Linux; elsewhere we cannot tell cheaply, so assume it does. */
function pidAlive(pid: number): boolean {
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

function hostname(): string | undefined {
  try {
    return Deno.hostname();
  } catch {
    return undefined;
  }
}

/** `mkdir -p`, returning the folders it created, deepest first. */
async function mkdirTracked(dir: string): Promise<string[]> {
  const missing: string[] = [];
  for (let d = resolve(dir); !(await exists(d)); d = dirname(d)) {
    missing.push(d);
    if (dirname(d) === d) break;
  }
  await Deno.mkdir(dir, { recursive: true });
  return missing;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

async function freeName(path: string): Promise<string> {
  let candidate = path;
  for (let i = 1; await exists(candidate); i++) candidate = `${path}-${i}`;
  return candidate;
}

function timestamp(): string {
  return new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}
