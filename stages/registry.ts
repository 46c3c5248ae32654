/**
 * The stage registry now lives in `pipeline/registry.ts` (the pipeline never imports `stages/`);
 * this module re-exports it so stage modules can keep `import { registerStage } from "./registry.ts"`.
 *
 * @module
 */
export { getStage, listStages, registerStage } from "../pipeline/registry.ts";
