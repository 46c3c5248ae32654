/**
 * The command line shared by the plot scripts (bench/plot_decode.ts, bench/plot_ffn.ts): `--out X`
 * plus result files, each read as JSON with errors that name the script and the file.
 *
 * @module
 */

/** `--out` and the remaining arguments (the result files). @throws {Error} without `--out X`. */
export function plotArgs(who: string, args: string[], outHelp: string): { out: string; files: string[] } {
  const rest = [...args];
  const oi = rest.indexOf("--out");
  if (oi < 0 || !rest[oi + 1]) throw new Error(`${who}: --out ${outHelp} is required`);
  const out = rest[oi + 1]!;
  rest.splice(oi, 2);
  return { out, files: rest };
}

/** A result file's JSON. @throws {Error} naming the script and the file when it cannot be read. */
export function readResult(who: string, file: string): Record<string, unknown> {
  try {
    return JSON.parse(Deno.readTextFileSync(file));
  } catch (e) {
    throw new Error(`${who}: ${file}: not a readable JSON file (${(e as Error).message})`);
  }
}
