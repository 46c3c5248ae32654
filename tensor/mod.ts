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
