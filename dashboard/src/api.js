// The API client: the token (asked once, kept in localStorage), fetch with the
// bearer header, and the session cookie for the log WebSocket (a browser
// WebSocket cannot send an Authorization header; POST api/authenticate turns
// the bearer token into an HttpOnly cookie the head also accepts).
//
// Paths are relative ("api/jobs/"), so the page also works behind a proxy that
// serves it under a path prefix.

const KEY = 'cohort_token';

export class Unauthorized extends Error {
  constructor() {
    super('Unauthorized');
  }
}

export class ApiError extends Error {
  constructor(status, text) {
    super(`${status}: ${text}`);
    this.status = status;
    this.text = text;
  }
}

let token = localStorage.getItem(KEY) || '';
let authMode = 'token';
let onUnauthorized = () => {};

export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export function authRequired() {
  return authMode !== 'disabled';
}

export function forgetToken() {
  token = '';
  localStorage.removeItem(KEY);
  // Best effort: clear the cookie too (needs no token to be harmless).
  fetch('api/authenticate', { method: 'DELETE' }).catch(() => {});
}

// Reads the head's mode ("token" or "disabled"); public route.
export async function loadAuthMode() {
  try {
    const r = await fetch('api/authentication_mode', { cache: 'no-store' });
    if (r.ok) authMode = (await r.json()).authentication_mode || 'token';
  } catch (_) {
    authMode = 'token';
  }
  return authMode;
}

export function hasToken() {
  return token !== '' || !authRequired();
}

// Checks `candidate` with the head and, when it is accepted, keeps it and
// gets the cookie. Returns true/false; throws on network errors.
export async function signIn(candidate) {
  const r = await fetch('api/authenticate', {
    method: 'POST',
    headers: { Authorization: 'Bearer ' + candidate },
    cache: 'no-store',
  });
  if (r.status === 401) return false;
  if (!r.ok) throw new ApiError(r.status, await r.text());
  token = candidate;
  localStorage.setItem(KEY, candidate);
  return true;
}

// Fetches `path` (relative, e.g. "api/jobs/"); JSON bodies are parsed.
export async function api(path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  if (token) headers.Authorization = 'Bearer ' + token;
  const r = await fetch(path, { ...opts, headers, cache: 'no-store' });
  if (r.status === 401) {
    onUnauthorized();
    throw new Unauthorized();
  }
  const text = await r.text();
  if (!r.ok) throw new ApiError(r.status, text.trim());
  const type = r.headers.get('Content-Type') || '';
  return type.includes('json') && text ? JSON.parse(text) : text;
}

export function wsUrl(path) {
  const u = new URL(path, location.href);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.hash = '';
  return u.toString();
}
