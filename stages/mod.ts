/**
 * Stage types. Each stage module (fine-tune, group, router-train, adapt, eval, serve, ...) calls
 * `registerStage()` from `./registry.ts` at import time; import it here so that the CLI, which
 * imports this file, knows every stage type:
 *
 * ```ts
 * import "./fine_tune.ts";
 * ```
 *
 * @module
 */
export { getStage, listStages, registerStage } from "./registry.ts";

// Stage modules register themselves; add one import per stage module below.
// In pipeline order: fine-tune -> group -> router-train -> adapt -> eval -> serve.
import "./fine_tune.ts";
import "./group.ts";
import "./router_train.ts";
import "./adapt.ts";
import "./eval.ts";
import "./serve.ts";
