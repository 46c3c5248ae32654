/**
 * Tensors, autograd, ops and optimizers of the compute core.
 * @module
 */
export * from "./tensor.ts";
export * from "./autograd.ts";
export * from "./ops.ts";
export * from "./optim.ts";
export * from "./random.ts";
export * from "./errors.ts";
// The backend queries the layers above need (which devices exist, what "auto" resolves to, a
// backend's handle for its device info), so that stages/ never imports ffi/ (tests/layers_test.ts).
export { backendAvailable, getBackend, resolveDevice } from "../ffi/backend.ts";
