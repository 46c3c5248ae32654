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
 * metrics.jsonl    appended: one JSON object per ctx.metric() call, with stage and time
 * stages/<name>/   a stage's artifacts + stage.json (type, hash, status, times, summary)
 * ```
 *
 * @module
 */
import { getBackend, resolveDevice } from "../ffi/backend.ts";
import { dirname, join, resolve } from "node:path";
import { stringify } from "yaml";
import { hashConfig, writeFileAtomic, writeJsonAtomic } from "./atomic.ts";
import { type PipelineConfig, resolvedConfigYaml } from "./config.ts";
import { createProgress } from "./progress.ts";
import { didYouMean } from "./_suggest.ts";
import type { DeviceSetting, StageContext, StageOutput } from "./stage.ts";

/** Status recorded in a stage's `stage.json`. */
export type StageStatus = "running" | "complete" | "failed" | "interrupted";

/** Contents of `stages/<name>/stage.json`. */
export interface StageManifest {
  type: string;
  /** Cache hash: sha256 of type, resolved stage config, upstream hashes, pipeline seed and device. */
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
  /** Whether the attempt ran with `--resume`. */
  resumed: boolean;
  /** The resolved stage config that was run. */
  config: unknown;
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
  /** What the runner will do: run it, skip it (cached), or leave it alone (not in `--only`). */
  action: "run" | "skip" | "not-selected";
  /** `started` of the existing complete result, if any (identifies the run consumers used). */
  started?: string;
}

/** Options of {@linkcode planPipeline}. */
export interface PlanOptions {
  /** Run only these stages; their inputs must already be complete. */
  only?: string[];
  /** Re-run the selected stages even if cached. */
  force?: boolean;
  /** Run directory. @default {config.settings.run_dir} */
  runDir?: string;
}

/** Options of {@linkcode runPipeline}. */
export interface RunOptions extends PlanOptions {
  /** Pass `resume: true` to stages and keep their folders so they continue from a checkpoint. */
  resume?: boolean;
  /** Override arguments to record in `overrides.yaml`. @default {config.overrides} */
  overrides?: string[];
  /** Config file to record in `env.json`. @default {config.file} */
  configPath?: string;
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

/** The stage selection cannot run: unknown `--only` names, or inputs without a complete result. */
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

/**
 * Cache hash of every stage, in order: sha256 of the canonical JSON of type, resolved stage config,
 * upstream stage hashes, and the pipeline's seed and device.
 */
export function stageHashes(config: PipelineConfig): Map<string, string> {
  const hashes = new Map<string, string>();
  for (const st of config.stages) {
    const inputs = Object.fromEntries(st.inputs.map((n) => [n, hashes.get(n)!]));
    const { seed, device } = config.settings;
    hashes.set(st.name, hashConfig({ type: st.type, config: st.config, inputs, seed, device }));
  }
  return hashes;
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
  const hashes = stageHashes(config);
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
    const hash = hashes.get(st.name)!;
    const m = await readManifest(runDir, st.name);
    const inputsFresh = st.inputs.every((n) => {
      const up = plan.find((p) => p.name === n)!;
      return up.action !== "run" && up.started !== undefined && m?.input_runs?.[n] === up.started;
    });
    const cached = m?.status === "complete" && m.hash === hash && inputsFresh;
    const selected = !only || only.has(st.name);
    const action = !selected ? "not-selected" : cached && !opts.force ? "skip" : "run";
    const entry: PlanEntry = { name: st.name, type: st.type, inputs: st.inputs, hash, cached, action };
    if (m?.status) entry.previous = m.status;
    if (m?.status === "complete") entry.started = m.started;
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
  const configDir = config.file === "<string>" ? Deno.cwd() : dirname(resolve(config.file));
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
 * Run a validated pipeline: plan it, record the run (config.yaml, overrides.yaml, env.json), then run
 * each selected stage that is not cached, in file order, stopping at the first failure or interrupt.
 *
 * @throws {PlanError} Before anything is written, if the selection cannot run.
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

  const controller = new AbortController();
  const onExternalAbort = () => controller.abort(opts.signal?.reason);
  if (opts.signal?.aborted) onExternalAbort();
  opts.signal?.addEventListener("abort", onExternalAbort, { once: true });
  let current = "";
  const removeSignals = opts.handleSignals === false ? () => {} : installSignals((sig) => {
    if (controller.signal.aborted) {
      say(`received ${sig} again: exiting now`);
      Deno.exit(130);
    }
    say(
      `received ${sig}: asking stage ${current || "(none)"} to stop at the next step boundary (${sig} again exits now)`,
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
        const m = await readManifest(runDir, entry.name);
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
      current = entry.name;
      const inputs = Object.fromEntries(st.inputs.map((n) => [n, outputs.get(n)!]));
      const r = await runStage({
        st,
        hash: entry.hash,
        inputHashes: Object.fromEntries(st.inputs.map((n) => [n, hashes.get(n)!])),
        inputRuns: Object.fromEntries(st.inputs.map((n) => [n, runIds.get(n)!])),
        configDir: config.file === "<string>" ? Deno.cwd() : dirname(resolve(config.file)),
        inputs,
        stageDir,
        stagesDir,
        runDir,
        settings,
        resume: opts.resume ?? false,
        signal: controller.signal,
        say,
        appendLog,
        metricsPath,
        out,
      });
      current = "";
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

interface RunStageArgs {
  st: PipelineConfig["stages"][number];
  hash: string;
  inputHashes: Record<string, string>;
  inputRuns: Record<string, string>;
  configDir: string;
  inputs: Record<string, StageOutput>;
  stageDir: string;
  stagesDir: string;
  runDir: string;
  settings: PipelineConfig["settings"];
  resume: boolean;
  signal: AbortSignal;
  say: (line: string) => void;
  appendLog: (line: string) => void;
  metricsPath: string;
  out: { write(text: string): void; isTerminal: boolean };
}

async function runStage(a: RunStageArgs): Promise<StageResult> {
  const { st, stageDir } = a;
  const base = { name: st.name, type: st.type, hash: a.hash, action: "ran" as const };
  // Never lose earlier results: the old folder is moved aside and removed only after success.
  let oldDir: string | undefined;
  if (!a.resume && (await exists(stageDir))) {
    oldDir = await freeName(join(a.stagesDir, `.${st.name}.old-${timestamp()}`));
    await Deno.rename(stageDir, oldDir);
  }
  await Deno.mkdir(stageDir, { recursive: true });
  const started = new Date();
  const manifestPath = join(stageDir, "stage.json");
  const manifest: StageManifest = {
    type: st.type,
    hash: a.hash,
    status: "running",
    started: started.toISOString(),
    resumed: a.resume,
    config: st.config,
    inputs: a.inputHashes,
    input_runs: a.inputRuns,
  };
  await writeJsonAtomic(manifestPath, manifest);
  a.say(`stage ${st.name}: running ${st.type} (hash ${a.hash.slice(0, 12)}${a.resume ? ", resume" : ""})`);

  const ctx: StageContext = {
    name: st.name,
    type: st.type,
    runDir: a.runDir,
    dir: stageDir,
    configDir: a.configDir,
    hash: a.hash,
    inputs: a.inputs,
    pipeline: a.settings,
    resume: a.resume,
    signal: a.signal,
    log: (msg) => a.say(`[${st.name}] ${msg}`),
    metric: (record) => {
      const line = JSON.stringify({ stage: st.name, time: new Date().toISOString(), ...record });
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
  manifest.status = a.signal.aborted ? "interrupted" : error === undefined ? "complete" : "failed";
  if (error !== undefined) {
    manifest.error = error instanceof Error ? error.message : String(error);
    if (error instanceof Error && error.stack) manifest.error_stack = error.stack;
  }
  await writeJsonAtomic(manifestPath, manifest);

  const took = `${manifest.duration_s.toFixed(1)}s`;
  if (manifest.status === "complete") {
    if (oldDir) await Deno.remove(oldDir, { recursive: true });
    a.say(`stage ${st.name}: complete in ${took}`);
  } else {
    if (manifest.status === "interrupted") {
      a.say(`stage ${st.name}: interrupted after ${took}; continue with --resume --only ${st.name}`);
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

/** Write config.yaml, overrides.yaml and env.json for this invocation. */
async function writeRunRecord(config: PipelineConfig, runDir: string, opts: RunOptions): Promise<void> {
  const overrides = opts.overrides ?? config.overrides;
  const configPath = opts.configPath ?? config.file;
  await writeFileAtomic(
    join(runDir, "config.yaml"),
    `# Resolved config of the latest run (defaults and overrides applied), from ${configPath}\n` +
      resolvedConfigYaml(config),
  );
  await writeFileAtomic(join(runDir, "overrides.yaml"), stringify({ config: configPath, overrides }));
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

function stderrOutput(): { write(text: string): void; isTerminal: boolean } {
  const enc = new TextEncoder();
  let tty = false;
  try {
    tty = Deno.stderr.isTerminal();
  } catch { /* no stderr */ }
  return { write: (t) => writeAll(Deno.stderr, enc.encode(t)), isTerminal: tty };
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

/** Write every byte (writeSync may write only part of a large buffer). */
function writeAll(w: { writeSync(p: Uint8Array): number }, bytes: Uint8Array): void {
  for (let off = 0; off < bytes.length;) off += w.writeSync(bytes.subarray(off));
}
