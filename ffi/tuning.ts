/**
 * The CUDA decode kernels read tuning variables (`LTE_DEC_*`: kernel variants, PDL) from the
 * environment when they are launched or captured into a graph. Benchmarks and GPU tests compare
 * variants by setting them around a call.
 *
 * @module
 */

/** Sets exactly `env` among the `LTE_DEC_*` variables (the others cleared); returns the restorer. */
function setDecEnv(env: Record<string, string>): () => void {
  const set = () => Object.keys(Deno.env.toObject()).filter((k) => k.startsWith("LTE_DEC_"));
  const keys = [...new Set([...set(), ...Object.keys(env)])];
  const prev = Object.fromEntries(keys.map((k) => [k, Deno.env.get(k)]));
  for (const k of set()) Deno.env.delete(k);
  for (const [k, v] of Object.entries(env)) Deno.env.set(k, v);
  return () => {
    for (const [k, v] of Object.entries(prev)) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  };
}

/** Runs `fn` with exactly `env` among the `LTE_DEC_*` variables (the others cleared), then restores them. */
export function withDecEnv<T>(env: Record<string, string>, fn: () => T): T {
  const restore = setDecEnv(env);
  try {
    return fn();
  } finally {
    restore();
  }
}

/** `withDecEnv` for an async `fn`: the variables stay set until its promise settles. */
export async function withDecEnvAsync<T>(env: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const restore = setDecEnv(env);
  try {
    return await fn();
  } finally {
    restore();
  }
}
