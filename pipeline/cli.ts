/**
 * `deno task pipeline`: validate and run a pipeline YAML.
 *
 * ```
 * deno task pipeline [file.yaml] [validate|stages] [key.path=value ...] [--only a,b] [--force] [--resume] [--run-dir DIR]
 * ```
 *
 * Exit codes: 0 ok, 1 a stage failed, 2 config or usage error, 130 interrupted.
 *
 * @module
 */
import "../stages/mod.ts";
import { listStages } from "../stages/registry.ts";
import { ConfigError, ConfigSyntaxError, loadConfig, resolvedConfigYaml } from "./config.ts";
import { type PlanEntry, PlanError, planPipeline, runPipeline } from "./runner.ts";
import { didYouMean } from "./_suggest.ts";

/** Config file used when none is given. */
export const DEFAULT_CONFIG = "examples/quickstart.yaml";

const USAGE = `Usage: deno task pipeline [file.yaml] [validate|stages] [key.path=value ...] [options]

Validate and run an LTE pipeline declared in YAML (default: ${DEFAULT_CONFIG}).

Commands:
  (none)            run the pipeline; stages whose config is unchanged are skipped
  validate          print the resolved config and the stage plan; run and write nothing
  stages            list the registered stage types

Overrides (applied before validation, typed by the stage schema):
  seed=3  device=cuda  stages.train.optimizer.lr=3e-4  stages[0].steps=100

Options:
  --only a,b        run only these stages (their inputs must already be complete)
  --force           re-run the selected stages even if cached
  --resume          let re-run stages continue from their own checkpoint
  --run-dir DIR     run directory (default: run_dir in the YAML, else runs/<name>)
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
    else if (flag === "--only") out.only.push(...value().split(",").map((s) => s.trim()).filter(Boolean));
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
    const file = cli.file ?? DEFAULT_CONFIG;
    if (!(await isFile(file))) {
      throw new UsageError(
        cli.file === undefined
          ? `No config file given and the default ${DEFAULT_CONFIG} does not exist: pass a pipeline YAML, e.g. deno task pipeline examples/<name>.yaml`
          : `Config file not found: ${file}`,
      );
    }
    const config = await loadConfig(file, { overrides: cli.overrides });
    const runDir = cli.runDir ?? config.settings.run_dir;
    const planOpts = { only: cli.only, force: cli.force, runDir };
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
      resume: cli.resume,
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
    p.action === "skip"
      ? `cached (hash ${p.hash.slice(0, 12)})`
      : p.action === "not-selected"
      ? `not selected${p.cached ? " (cached)" : ""}`
      : p.cached
      ? "will run (forced)"
      : `will run${p.previous ? ` (was ${p.previous === "complete" ? "complete, config changed" : p.previous})` : ""}`,
  ]);
  const header = ["#", "stage", "type", "inputs", "status"];
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  const line = (r: string[]) => r.map((x, c) => (c === r.length - 1 ? x : x.padEnd(widths[c]!))).join("  ");
  return `Plan (run dir ${runDir}):\n${[header, ...rows].map((r) => `  ${line(r)}`).join("\n")}\n`;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

function defaultIO(): CliIO {
  const enc = new TextEncoder();
  let tty = false;
  try {
    tty = Deno.stderr.isTerminal();
  } catch { /* no stderr */ }
  return {
    stdout: (t) => writeAll(Deno.stdout, enc.encode(t)),
    stderr: (t) => writeAll(Deno.stderr, enc.encode(t)),
    isTerminal: tty,
  };
}

/** Write every byte (writeSync may write only part of a large buffer). */
function writeAll(w: { writeSync(p: Uint8Array): number }, bytes: Uint8Array): void {
  for (let off = 0; off < bytes.length;) off += w.writeSync(bytes.subarray(off));
}

if (import.meta.main) Deno.exit(await main(Deno.args));
