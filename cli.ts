/**
 * `deno task pipeline`: the program. Registers every stage type (`stages/mod.ts`), then runs the
 * pipeline command line ({@linkcode main} of `pipeline/cli.ts`). Layers point one way: this entry
 * point imports both `pipeline/` and `stages/`; `pipeline/` never imports `stages/`.
 *
 * ```
 * deno run -A cli.ts [file.yaml] [validate|stages] [key.path=value ...] [--only a,b] [--force] [--resume] [--run-dir DIR]
 * ```
 *
 * @module
 */
import "./stages/mod.ts";
import { main } from "./pipeline/cli.ts";

export { main };

if (import.meta.main) Deno.exit(await main(Deno.args));
