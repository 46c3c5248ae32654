/**
 * Error classes of the native binding. Every native status other than OK becomes one of these, in
 * one place (`Backend#check`), so the status code, the op and the native message are never lost.
 * Errors raised by tensor code before a native call (`ShapeError`, `DisposedTensorError`,
 * `GraphError`) live in tensor/errors.ts, which also re-exports these.
 *
 * @module
 */
import { Status } from "./symbols.ts";

/** Names of the native status codes, for messages. */
export const STATUS_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(Status).map(([k, v]) => [v, k]),
);

/** A native call returned a non-OK status. */
export class LteNativeError extends Error {
  /** The `lte_status` code. */
  readonly code: number;
  /** The C function that failed, e.g. `lte_matmul`. */
  readonly op: string;
  /** The backend that ran it: `cpu` or `cuda`. */
  readonly backend: string;
  constructor(code: number, op: string, backend: string, message: string, options?: ErrorOptions) {
    super(`${op} (${backend}): ${STATUS_NAMES[code] ?? `status ${code}`}: ${message}`, options);
    this.name = "LteNativeError";
    this.code = code;
    this.op = op;
    this.backend = backend;
  }
}

/** A device or host allocation failed (`LTE_STATUS_OUT_OF_MEMORY`). */
export class LteOutOfMemoryError extends LteNativeError {
  constructor(code: number, op: string, backend: string, message: string) {
    super(code, op, backend, message);
    this.name = "LteOutOfMemoryError";
  }
}

/** A CUDA runtime or cuBLAS call failed. */
export class LteCudaError extends LteNativeError {
  constructor(code: number, op: string, backend: string, message: string) {
    super(code, op, backend, message);
    this.name = "LteCudaError";
  }
}

/** The native library could not be found, loaded, or is stale. */
export class LibraryLoadError extends Error {
  /** Every path that was tried, in order. */
  readonly tried: string[];
  constructor(message: string, tried: string[], options?: ErrorOptions) {
    super(message, options);
    this.name = "LibraryLoadError";
    this.tried = tried;
  }
}

/** Builds the typed error for a native status. */
export function nativeError(code: number, op: string, backend: string, message: string): LteNativeError {
  if (code === Status.OUT_OF_MEMORY) return new LteOutOfMemoryError(code, op, backend, message);
  if (code === Status.CUDA_ERROR || code === Status.BLAS_ERROR) return new LteCudaError(code, op, backend, message);
  return new LteNativeError(code, op, backend, message);
}
