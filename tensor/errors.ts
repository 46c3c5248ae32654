/**
 * Errors of the tensor layer: raised by tensor code before any native call. The native errors
 * (`LteNativeError` and its subclasses, `LibraryLoadError`) belong to ffi/ and are re-exported
 * here, so code above the tensor layer imports every compute-core error from one module and never
 * from ffi/.
 *
 * @module
 */
export { LibraryLoadError, LteCudaError, LteNativeError, LteOutOfMemoryError } from "../ffi/errors.ts";

/** Tensor shapes, dtypes or devices do not fit an op; raised before any native call. */
export class ShapeError extends TypeError {
  /** The op, e.g. `matmul`. */
  readonly op: string;
  constructor(op: string, message: string) {
    super(`${op}: ${message}`);
    this.name = "ShapeError";
    this.op = op;
  }
}

/** A tensor was used after `dispose()`. */
export class DisposedTensorError extends Error {
  constructor(what: string) {
    super(`use of a disposed tensor: ${what}`);
    this.name = "DisposedTensorError";
  }
}

/**
 * The autograd graph was used wrongly (not a shape problem): backward twice through a released
 * graph, backward from a non-scalar without a seed gradient, a parameter that does not require
 * gradients, and similar.
 */
export class GraphError extends Error {
  /** The operation that refused, e.g. `backward`. */
  readonly op: string;
  constructor(op: string, message: string) {
    super(`${op}: ${message}`);
    this.name = "GraphError";
    this.op = op;
  }
}
