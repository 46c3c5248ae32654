/**
 * `deno task serve <model dir | pipeline.yaml> [--host H] [--port N] ...` (flags: serve/args.ts).
 * A model folder is served directly (SIGINT/SIGTERM: in-flight requests finish within --grace,
 * exit 0; a second signal exits 130 at once). A pipeline YAML is run like `deno task pipeline`
 * (upstream stages cached) up to and including its last serve stage, the flags given becoming
 * overrides of that stage.
 *
 * @module
 */
import "./mod.ts"; // every stage type, for a YAML's upstream stages
import { resolveDevice } from "../tensor/mod.ts";
import { main, resolveUserPath } from "../pipeline/cli.ts";
import { loadConfig } from "../pipeline/config.ts";
import { startServing } from "../serve/app.ts";
import { parseServeArgs, SERVE_USAGE, ServeUsageError } from "../serve/args.ts";

/** `deno task serve`: returns the exit code. */
export async function serveMain(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseServeArgs(argv);
  } catch (e) {
    if (!(e instanceof ServeUsageError)) throw e;
    console.error(`error: ${e.message}\n\n${SERVE_USAGE}`);
    return 2;
  }
  if (args.help) {
    console.log(SERVE_USAGE);
    return 0;
  }
  if (args.target === null) {
    console.error(`error: give a model folder or a pipeline YAML\n\n${SERVE_USAGE}`);
    return 2;
  }
  const target = resolveUserPath(args.target);
  if (/\.ya?ml$/i.test(target)) return await servePipeline(target, args);
  const serving = (() => {
    try {
      return startServing({ ...args, modelDir: target, device: resolveDevice(args.device) });
    } catch (e) {
      console.error(`error: ${(e as Error).message}`);
      return null;
    }
  })();
  if (!serving) return 2;
  let signals = 0;
  const onSignal = () => {
    if (++signals > 1) Deno.exit(130); // a second Ctrl-C: leave at once
    void serving.stop();
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, onSignal);
  try {
    await serving.ready;
  } catch (e) {
    console.error(`error: cannot load ${target}: ${(e as Error).message}`);
    await serving.stop();
    return 1;
  }
  await serving.finished;
  return 0;
}

/** Runs a pipeline YAML up to and including its serve stage, with the flags as overrides of that stage. */
async function servePipeline(
  file: string,
  args: ReturnType<typeof parseServeArgs>,
): Promise<number> {
  let stageName: string | undefined;
  try {
    stageName = (await loadConfig(file)).stages.filter((s) => s.type === "serve").at(-1)?.name;
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 2;
  }
  if (!stageName) {
    console.error(
      `error: ${file} has no stage of type serve; add one (type: serve, from: <stage>) or pass a model folder`,
    );
    return 2;
  }
  const keys: Record<string, [string, unknown]> = {
    "--host": ["host", args.host],
    "--port": ["port", args.port],
    "--device": ["device", args.device],
    "--dtype": ["dtype", args.dtype],
    "--kv-dtype": ["kv_dtype", args.kvDtype],
    "--sparse": ["sparse", args.sparse],
    "--dense": ["sparse", args.sparse],
    "--max-batch": ["max_batch", args.maxBatch],
    "--max-context": ["max_context", args.maxContext],
    "--max-queue": ["max_queue", args.maxQueue],
    "--max-tokens": ["default_max_tokens", args.defaultMaxTokens],
    "--max-body": ["max_body_bytes", args.maxBodyBytes],
    "--grace": ["shutdown_grace_s", args.shutdownGraceS],
    "--lookahead": ["lookahead", args.lookahead],
    "--no-lookahead": ["lookahead", args.lookahead],
  };
  const overrides = [...args.given].filter((f) => f in keys).map((f) => {
    const [k, v] = keys[f]!;
    return `stages.${stageName}.${k}=${typeof v === "string" ? JSON.stringify(v) : v}`;
  });
  return await main([file, ...overrides]);
}

if (import.meta.main) Deno.exit(await serveMain(Deno.args));
