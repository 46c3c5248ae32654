/**
 * Native library binding: loading, backends and errors.
 * @module
 */
export * from "./backend.ts";
export * from "./errors.ts";
export { libraryExists, loadLibrary } from "./library.ts";
export { DTypeCode, LTE_ABI_VERSION, Option, Status } from "./symbols.ts";
