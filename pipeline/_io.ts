/** Console output shared by the CLI, the runner and progress bars (internal). */

const encoder = new TextEncoder();

/** Write every byte of `text` (one `writeSync` may write only part of a large buffer). */
export function writeAllSync(w: { writeSync(p: Uint8Array): number }, text: string): void {
  const bytes = encoder.encode(text);
  for (let off = 0; off < bytes.length;) off += w.writeSync(bytes.subarray(off));
}

/** Whether stderr is a terminal (false when there is no stderr). */
export function stderrIsTerminal(): boolean {
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

/** Write text to stderr, completely. */
export function writeStderr(text: string): void {
  writeAllSync(Deno.stderr, text);
}

/** Write text to stdout, completely. */
export function writeStdout(text: string): void {
  writeAllSync(Deno.stdout, text);
}

/** The runner's default console: stderr, redrawn progress when it is a terminal. */
export function stderrOutput(): { write(text: string): void; isTerminal: boolean } {
  return { write: writeStderr, isTerminal: stderrIsTerminal() };
}
