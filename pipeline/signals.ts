/**
 * SIGINT/SIGTERM listeners for a run (internal).
 *
 * @module
 */

/**
 * Call `handler` on SIGINT and SIGTERM until the returned function removes the listeners. Deno runs
 * signal listeners on the event loop: work that never awaits delays them, so long setup code in a
 * stage should await between phases (see {@linkcode yieldToSignals}).
 */
export function installSignals(handler: (sig: Deno.Signal) => void): () => void {
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

/**
 * Let pending signal listeners (and other events) run, then throw the signal's reason if it was
 * aborted. Stages call it between long synchronous setup phases (reading a corpus, building a
 * model) so that Ctrl-C or SIGTERM is honoured during setup, not only between training steps.
 */
export async function yieldToSignals(signal: AbortSignal): Promise<void> {
  await new Promise((r) => setTimeout(r, 0));
  signal.throwIfAborted();
}
