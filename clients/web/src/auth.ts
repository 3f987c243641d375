import type { Interceptor } from "@connectrpc/connect";

/** The caller's bearer token (a JWT), or a function returning the current one (called per request). */
export type TokenSource = string | (() => string | Promise<string>);

/** An interceptor that sends `authorization: Bearer <token>` with every call. */
export function bearerAuth(token: TokenSource): Interceptor {
  return (next) => async (req) => {
    const value = typeof token === "function" ? await token() : token;
    req.header.set("authorization", `Bearer ${value}`);
    return next(req);
  };
}

/** The claims of a JWT, read without verifying it (the server verifies; this is for display). */
export function tokenClaims(token: string): Record<string, unknown> | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(payload.length / 4) * 4, "="));
    const claims: unknown = JSON.parse(json);
    return claims && typeof claims === "object" ? (claims as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
