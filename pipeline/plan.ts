/**
 * Planning: each stage's cache hash, and what a run would do with it (skip, run, resume), read from
 * the run directory without writing to it.
 *
 * @module
 */
import { configDirOf, type PipelineConfig } from "./config.ts";
import { hashConfig } from "./hash.ts";
import { readManifest, type StageManifest, type StageStatus } from "./records.ts";
import { runDirProblem } from "./rundir.ts";
import { didYouMean } from "./_suggest.ts";

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
  /**
   * The stage would run, its last attempt is {@linkcode resumable} and was cut short (interrupted,
   * or left running by a crash), and neither `--resume` nor `--force` was given: the runner refuses
   * rather than discard the attempt silently.
   */
  needsResume: boolean;
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

/** What goes into a stage's hash besides its inputs' hashes. */
interface StageIdentity {
  hash: string;
  version?: string;
  fingerprint?: string;
}

function stageIdentities(config: PipelineConfig): Map<string, StageIdentity> {
  const ids = new Map<string, StageIdentity>();
  const configDir = configDirOf(config);
  const { device } = config.settings;
  for (const st of config.stages) {
    const seed = st.seed ?? config.settings.seed; // a sweep may set a stage's seed
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
  const problems: string[] = [];
  const dirProblem = runDirProblem(runDir, config);
  if (dirProblem !== undefined) problems.push(dirProblem);
  let only: Set<string> | undefined;
  if (opts.only && opts.only.length > 0) {
    only = new Set();
    for (const n of opts.only) {
      // A swept stage's unexpanded name selects all its variants.
      const variants = config.stages.filter((s) => s.base === n).map((s) => s.name);
      if (names.includes(n)) only.add(n);
      else if (variants.length > 0) variants.forEach((v) => only!.add(v));
      else problems.push(`--only: no stage named "${n}"${didYouMean(n, names)}; stages: ${names.join(", ")}`);
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
    // A stage type with `cache: false` (a server) is never skipped, resumed, or asked to resume.
    const cacheable = st.definition.cache !== false;
    const cached = cacheable && m?.status === "complete" && m.hash === hash && inputsFresh;
    const selected = !only || only.has(st.name);
    const action = !selected ? "not-selected" : cached && !opts.force ? "skip" : "run";
    const incomplete = cacheable && m !== undefined && m.status !== "complete";
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
      // (A failed attempt is started over: it usually fails again where it stopped.)
      needsResume: resumable && action === "run" && !opts.resume && !opts.force && m?.status !== "failed",
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
    let messages: string[];
    try {
      messages = st.definition.preflight(st.config, { configDir, device: config.settings.device });
    } catch (err) {
      messages = [`preflight check failed: ${err instanceof Error ? err.message : String(err)}`];
    }
    for (const msg of messages) {
      problems.push(`stages[${st.index}] (stage ${st.name}) ${msg}`);
    }
  }
  if (problems.length > 0) throw new PlanError(problems);
  return plan;
}
