/**
 * The command line of `deno task pipeline`: validate and run a pipeline YAML. The program itself is
 * `cli.ts` at the repository root, which registers the stage types (`stages/mod.ts`) and calls
 * {@linkcode main}; the pipeline never imports `stages/`.
 *
 * ```
 * deno task pipeline [file.yaml] [validate|stages] [key.path=value ...] [--only a,b] [--force] [--resume] [--run-dir DIR]
 * ```
 *
 * Exit codes: 0 ok, 1 a stage failed, 2 config or usage error, 130 interrupted.
 *
 * @module
 */
import { isAbsolute, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { listStages } from "./registry.ts";
import { ConfigError, ConfigSyntaxError, loadConfig, resolvedConfigYaml } from "./config.ts";
import { type PlanEntry, PlanError, planPipeline, runPipeline } from "./runner.ts";
import { didYouMean } from "./_suggest.ts";
import { stderrIsTerminal, writeStderr, writeStdout } from "./_io.ts";

/** Config file used when none is given (relative to the repository root). */
export const DEFAULT_CONFIG = "examples/quickstart.yaml";

const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));

const USAGE = `Usage: deno task pipeline [file.yaml] [validate|stages] [key.path=value ...] [options]

Validate and run an LTE pipeline declared in YAML (default: ${DEFAULT_CONFIG}).

Commands:
  (none)            run the pipeline; stages whose config is unchanged are skipped
  validate          print the resolved config and the stage plan; run and write nothing
  stages            list the registered stage types

Overrides (applied before validation, typed by the stage schema):
  seed=3  device=cuda  stages.train.optimizer.lr=3e-4  stages.train.training.steps=100

Options:
  --only a,b        run only these stages (their inputs must already be complete)
  --force           re-run the selected stages even if cached
  --resume          continue stages whose last attempt (same config) did not complete
  --run-dir DIR     run directory (default: run_dir in the YAML, else runs/<name>)

The config file and --run-dir are relative to the directory deno task was started in.
  -h, --help        show this help

Exit codes: 0 ok, 1 stage failure, 2 config or usage error, 130 interrupted.
Set LTE_DEBUG=1 to print stack traces.`;

const FLAGS = ["--only", "--force", "--resume", "--run-dir", "--help"];

/** Bad command line. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Parsed command line of {@linkcode main}. */
export interface CliArgs {
  command: "run" | "validate" | "stages" | "help";
  file?: string;
  overrides: string[];
  only: string[];
  force: boolean;
  resume: boolean;
  runDir?: string;
}

/**
 * Parse the command line.
 *
 * @throws {UsageError} On an unknown flag, a missing flag value, or an unrecognised argument.
 */
export function parseArgs(args: string[]): CliArgs {
  const out: CliArgs = { command: "run", overrides: [], only: [], force: false, resume: false };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const [flag, inline] = arg.startsWith("--") && arg.includes("=")
      ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)]
      : [arg, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      const v = args[++i];
      if (v === undefined || v.startsWith("--")) throw new UsageError(`Missing value for ${flag}`);
      return v;
    };
    if (flag === "-h" || flag === "--help") out.command = "help";
    else if (flag === "--force") out.force = true;
    else if (flag === "--resume") out.resume = true;
    else if (flag === "--only") out.only.push(...splitStageList(value()));
    else if (flag === "--run-dir") out.runDir = value();
    else if (arg.startsWith("-")) throw new UsageError(`Unknown option "${flag}"${didYouMean(flag, FLAGS)}`);
    else if (arg === "validate" || arg === "stages" || arg === "run") {
      if (out.command !== "help") out.command = arg;
    } else if (arg.includes("=")) out.overrides.push(arg);
    else if (/\.ya?ml$/i.test(arg)) {
      if (out.file !== undefined) throw new UsageError(`Two config files given: "${out.file}" and "${arg}"`);
      out.file = arg;
    } else {
      throw new UsageError(
        `Unrecognised argument "${arg}"${
          didYouMean(arg, ["validate", "stages", "run"])
        }: expected a .yaml file, validate, stages, or key.path=value`,
      );
    }
  }
  return out;
}

/**
 * `a,b` -> `["a", "b"]`, keeping sweep variant names whole: in `train@lr=0.1,seed=0` the piece
 * `seed=0` (a `=` without an `@`; stage names have neither) continues the variant name before it.
 */
export function splitStageList(text: string): string[] {
  const out: string[] = [];
  for (const piece of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    if (piece.includes("=") && !piece.includes("@") && out.length > 0 && out.at(-1)!.includes("@")) {
      out[out.length - 1] += `,${piece}`;
    } else out.push(piece);
  }
  return out;
}

/**
 * The folder the user typed the command in: `deno task` runs tasks in the folder of deno.json and
 * passes the original one as `INIT_CWD`.
 */
export function invocationDir(): string {
  return Deno.env.get("INIT_CWD") || Deno.cwd();
}

/** A path argument as the process must open it: relative paths are relative to {@linkcode invocationDir}. */
export function resolveUserPath(path: string): string {
  const base = invocationDir();
  return isAbsolute(path) || resolve(base) === resolve(Deno.cwd()) ? path : resolve(base, path);
}

/**
 * The command that continues an interrupted run: the same arguments plus `--resume`. `--force` is
 * dropped: it would re-run the stages this run already completed, instead of continuing.
 */
export function resumeCommand(args: string[]): string {
  const kept = args.filter((a) => a !== "--force");
  if (!kept.includes("--resume")) kept.push("--resume");
  return ["deno task pipeline", ...kept.map(shellQuote)].join(" ");
}

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

/** Where {@linkcode main} prints; tests capture it. */
export interface CliIO {
  /** Results (validate's config and plan, stages list). */
  stdout(text: string): void;
  /** Logs, progress and errors. */
  stderr(text: string): void;
  /** Whether stderr is a terminal (progress is redrawn in place). */
  isTerminal: boolean;
}

/**
 * Run the CLI and return the exit code (it does not exit itself).
 *
 * @example
 * ```ts
 * Deno.exit(await main(["examples/quickstart.yaml", "validate"]));
 * ```
 */
export async function main(args: string[], io: CliIO = defaultIO()): Promise<number> {
  try {
    const cli = parseArgs(args);
    if (cli.command === "help") {
      io.stdout(USAGE + "\n");
      return 0;
    }
    if (cli.command === "stages") {
      const stages = listStages();
      if (stages.length === 0) io.stdout("No stage types are registered (stage modules register in stages/mod.ts)\n");
      const w = Math.max(0, ...stages.map((s) => s.type.length));
      for (const s of stages) io.stdout(`${s.type.padEnd(w)}  ${s.description}\n`);
      return 0;
    }
    const file = cli.file !== undefined ? resolveUserPath(cli.file) : defaultConfig();
    if (!(await isFile(file))) {
      throw new UsageError(
        cli.file === undefined
          ? `No config file given and the default ${DEFAULT_CONFIG} does not exist: pass a pipeline YAML, e.g. deno task pipeline examples/<name>.yaml`
          : `Config file not found: ${file}`,
      );
    }
    const config = await loadConfig(file, { overrides: cli.overrides });
    const runDir = cli.runDir !== undefined ? resolveUserPath(cli.runDir) : config.settings.run_dir;
    const planOpts = { only: cli.only, force: cli.force, resume: cli.resume, runDir };
    if (cli.command === "validate") {
      const plan = await planPipeline(config, planOpts);
      io.stdout(
        `# ${file}: valid\n${resolvedConfigYaml({ ...config, settings: { ...config.settings, run_dir: runDir } })}\n`,
      );
      io.stdout(formatPlan(plan, runDir));
      return 0;
    }
    const result = await runPipeline(config, {
      ...planOpts,
      resumeCommand: resumeCommand(args),
      output: { write: io.stderr, isTerminal: io.isTerminal },
    });
    return result.status === "complete" ? 0 : result.status === "interrupted" ? 130 : 1;
  } catch (err) {
    if (Deno.env.get("LTE_DEBUG") === "1" && err instanceof Error) io.stderr(`${err.stack}\n`);
    if (err instanceof UsageError) {
      io.stderr(`error: ${err.message}\nRun with --help for usage.\n`);
      return 2;
    }
    if (err instanceof ConfigError || err instanceof ConfigSyntaxError || err instanceof PlanError) {
      io.stderr(`error: ${err.message}\n`);
      return 2;
    }
    io.stderr(`error: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

/** The plan as a table: order, name, type, inputs, and whether the stage is cached or will run. */
export function formatPlan(plan: PlanEntry[], runDir: string): string {
  const rows = plan.map((p, i) => [
    `${i + 1}.`,
    p.name,
    p.type,
    p.inputs.length ? p.inputs.join(",") : "-",
    planStatus(p),
  ]);
  const header = ["#", "stage", "type", "inputs", "status"];
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  const line = (r: string[]) => r.map((x, c) => (c === r.length - 1 ? x : x.padEnd(widths[c]!))).join("  ");
  return `Plan (run dir ${runDir}):\n${[header, ...rows].map((r) => `  ${line(r)}`).join("\n")}\n`;
}

function planStatus(p: PlanEntry): string {
  if (p.action === "skip") return `cached (hash ${p.hash.slice(0, 12)})`;
  if (p.action === "not-selected") return `not selected${p.cached ? " (cached)" : ""}`;
  if (p.resume) return `will resume (was ${p.previous})`;
  if (p.cached) return "will run (forced)";
  if (p.previous === undefined) return "will run";
  if (p.previous === "complete") return "will run (was complete, config changed)";
  if (p.needsResume) return `needs --resume (continue the ${p.previous} attempt) or --force (discard it)`;
  if (p.resumable) return `will run (was ${p.previous}; started over: --force)`;
  const why = p.manifest?.hash === p.hash ? "inputs re-ran" : "config changed";
  return `will run (was ${p.previous}, ${why}; starts over)`;
}

/** The default config: the repository's (relative when the working directory is the repository). */
function defaultConfig(): string {
  return resolve(Deno.cwd()) === resolve(REPO_ROOT) ? DEFAULT_CONFIG : resolve(REPO_ROOT, DEFAULT_CONFIG);
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

function defaultIO(): CliIO {
  return { stdout: writeStdout, stderr: writeStderr, isTerminal: stderrIsTerminal() };
}

if (import.meta.main) {
  writeStderr("pipeline/cli.ts registers no stage types: run `deno task pipeline` (or `deno run -A cli.ts`)\n");
  Deno.exit(2);
}
