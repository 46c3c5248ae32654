/**
 * API errors in OpenAI's shape: `{"error": {"message", "type", "code"}}` plus optional extra fields
 * (for a too-long prompt: `prompt_tokens` and `context_size`).
 *
 * @module
 */

/** An error answered to the client with an HTTP status; never fatal to the server. */
export class ApiError extends Error {
  override name = "ApiError";
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly code: string,
    readonly extra: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  /** The JSON body sent to the client. */
  body(): { error: Record<string, unknown> } {
    return { error: { message: this.message, type: this.type, code: this.code, ...this.extra } };
  }

  /** A `Response` carrying this error. */
  response(): Response {
    return new Response(JSON.stringify(this.body()), {
      status: this.status,
      headers: { "content-type": "application/json", ...this.headers },
    });
  }
}

/** 400 invalid_request_error. */
export function badRequest(message: string, code = "invalid_request", extra: Record<string, unknown> = {}): ApiError {
  return new ApiError(400, message, "invalid_request_error", code, extra);
}
