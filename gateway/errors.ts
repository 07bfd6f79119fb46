// The one catalog of error codes: every error the API answers is one of these, as
// {"error":{"code":"…","message":"…"}}. The code is the contract (clients branch on it), the
// message is for people. ERRORS.md is checked against this list by gateway/errors.test.ts.

export const errorCatalog = {
  // Request shape
  invalid_json: { status: 400, message: 'The request body is not valid JSON.' },
  validation_failed: { status: 400, message: 'The request does not match the expected shape.' },
  payload_too_large: { status: 413, message: 'The request body is larger than this route accepts.' },
  unsupported_media_type: { status: 415, message: 'The request body must be application/json.' },
  route_not_found: { status: 404, message: 'No route matches this path.' },
  method_not_allowed: { status: 405, message: 'This path does not accept this method.' },
  invalid_path: { status: 400, message: 'The request path has a malformed percent-escape.' },
  duplicate_content_length: { status: 400, message: 'The request has more than one Content-Length header.' },

  // Authentication and authorisation
  unauthenticated: { status: 401, message: 'A bearer access token is required.' },
  invalid_token: { status: 401, message: 'The access token is malformed or its signature is wrong.' },
  token_expired: { status: 401, message: 'The access token has expired; refresh it.' },
  unsupported_token_algorithm: { status: 401, message: 'The access token must be signed with HS256.' },
  session_revoked: { status: 401, message: 'This session was logged out.' },
  invalid_credentials: { status: 401, message: 'Email or password is wrong.' },
  invalid_refresh_token: { status: 401, message: 'The refresh token is unknown, expired or revoked.' },
  refresh_token_reused: {
    status: 401,
    message: 'This refresh token was already used; the whole session has been revoked.',
  },
  forbidden: { status: 403, message: 'Your role does not allow this.' },
  user_mismatch: { status: 403, message: 'userId must be the authenticated user.' },
  account_erased: { status: 403, message: 'This account has been erased.' },

  // Accounts
  email_taken: { status: 409, message: 'An account with this email already exists.' },
  user_not_found: { status: 404, message: 'No such user.' },
  last_admin: { status: 409, message: 'This is the last admin; make another user admin first.' },
  auth_overloaded: { status: 503, message: 'Too many sign-ins are being processed; retry shortly.' },

  // Privacy
  reauthentication_failed: { status: 403, message: 'The password is wrong; nothing was changed.' },
  erasure_deferred: {
    status: 409,
    message: 'This account has a counted vote in an election that is still open; it can be erased once that election closes.',
  },

  // Elections
  election_not_found: { status: 404, message: 'No such election.' },
  candidate_not_found: { status: 422, message: 'No such candidate in this election.' },
  election_not_open: { status: 409, message: 'This election is not open for voting.' },
  invalid_election_transition: { status: 409, message: 'The election cannot move to that status from its current one.' },

  // Votes
  already_voted: { status: 409, message: 'This user has already voted in this election.' },
  overloaded: { status: 503, message: 'Too many votes are waiting on this shard; retry shortly.' },
  vote_not_stored: { status: 503, message: 'The vote could not be stored; it was not counted. Retry.' },
  shard_unavailable: { status: 503, message: "This vote's shard is moving between nodes or its node cannot be reached; it was not counted. Retry." },

  // Cluster operations (move, drain, balance)
  node_not_found: { status: 404, message: 'No such node in the cluster.' },
  node_not_alive: { status: 409, message: 'That node is not alive; shards can only move to a live node.' },
  node_not_draining: { status: 409, message: 'That node is not draining; there is nothing to undrain.' },
  shard_not_found: { status: 404, message: 'No such shard in the shard map.' },
  shard_already_there: { status: 409, message: 'The shard is already owned by that node.' },
  operation_not_found: { status: 404, message: 'No such cluster operation.' },

  // Abuse controls
  rate_limited: { status: 429, message: 'Too many requests; slow down.' },
  captcha_required: { status: 400, message: 'A CAPTCHA solution is required for this request.' },
  captcha_invalid: { status: 403, message: 'The CAPTCHA solution is invalid, expired or already used.' },
  captcha_unavailable: { status: 503, message: 'The CAPTCHA provider could not be reached.' },
  fraud_rejected: { status: 403, message: 'This request was refused by an anti-fraud rule.' },

  // Service state
  not_ready: { status: 503, message: 'The service is starting or stopping.' },
  internal_error: { status: 500, message: 'Something went wrong on our side.' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof errorCatalog;

/** Thrown inside a handler to answer with a catalogued error; anything else is a 500. */
export class ApiError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message?: string,
    readonly details?: unknown,
    readonly headers?: Readonly<Record<string, string>>,
  ) {
    super(message ?? errorCatalog[code].message);
    this.name = 'ApiError';
    this.status = errorCatalog[code].status;
  }
}

export function errorBody(code: ErrorCode, message?: string, details?: unknown): string {
  const error: { code: ErrorCode; message: string; details?: unknown } = {
    code,
    message: message ?? errorCatalog[code].message,
  };
  if (details !== undefined) error.details = details;
  return JSON.stringify({ error });
}
