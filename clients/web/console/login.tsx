import { useState } from "preact/hooks";

import { tokenClaims } from "../src/index.js";

export interface PageConfig {
  dev_login: boolean;
  temporal_ui_url: string;
  temporal_namespace: string;
  /** The models a Retry may choose (`models.allowed`); absent from an older server. */
  models?: string[];
}

export interface Session {
  token: string;
  company: string;
  user: string;
  role: string;
}

/** The companies and role a token names (configurable claim names are read loosely: display only). */
function describe(token: string): { user: string; role: string; companies: string[] } | undefined {
  const claims = tokenClaims(token);
  if (!claims) return undefined;
  const pick = (...names: string[]) => names.map((n) => claims[n]).find((v) => v !== undefined);
  const companies = pick("companies", "company_ids", "company");
  const role = pick("role", "roles");
  return {
    user: String(pick("sub", "email", "preferred_username") ?? "unknown"),
    role: String(Array.isArray(role) ? role.join(", ") : (role ?? "")),
    companies: Array.isArray(companies) ? companies.map(String) : typeof companies === "string" ? companies.split(/[ ,]+/).filter(Boolean) : [],
  };
}

export function Login(props: { config: PageConfig | undefined; onSignIn: (session: Session) => void }) {
  const [token, setToken] = useState("");
  const [company, setCompany] = useState("");
  const [devCompany, setDevCompany] = useState("demo");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const about = token.trim() ? describe(token.trim()) : undefined;

  const useToken = (e: Event) => {
    e.preventDefault();
    const value = token.trim();
    const info = describe(value);
    if (!info) return setError("That is not a token: paste the whole JWT (three parts separated by dots).");
    const chosen = company.trim() || (info.companies.length === 1 ? info.companies[0] : "");
    if (!chosen) return setError("Which company? Your token names several (or none, for an admin): type one.");
    props.onSignIn({ token: value, company: chosen, user: info.user, role: info.role });
  };

  const devLogin = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      const response = await fetch("dev-login", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ company: devCompany.trim() }),
      });
      const answer = (await response.json()) as { token?: string; company?: string; role?: string; error?: string };
      if (!response.ok || !answer.token || !answer.company) throw new Error(answer.error ?? `the server answered ${response.status}`);
      props.onSignIn({ token: answer.token, company: answer.company, user: "console-dev", role: answer.role ?? "operator" });
    } catch (err) {
      setError(`Dev login failed: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="login">
      <h1>Etter pipeline</h1>
      <p class="muted">Onboard a company's job roles, watch them go through the pipeline, retry what failed.</p>
      {error && <div class="banner bad" role="alert">{error}</div>}
      {props.config?.dev_login && (
        <form class="card" onSubmit={devLogin}>
          <h2>Development sign-in</h2>
          <p class="muted">This server runs on your machine: sign in as an operator of any company.</p>
          <label>
            Company
            <input name="dev-company" value={devCompany} onInput={(e) => setDevCompany(e.currentTarget.value)} />
          </label>
          <button type="submit" disabled={busy}>{busy ? "Signing in…" : "Sign in"}</button>
        </form>
      )}
      <form class="card" onSubmit={useToken}>
        <h2>Sign in with a token</h2>
        <label>
          Token
          <textarea name="token" rows={4} placeholder="eyJhbGciOi…" value={token} onInput={(e) => setToken(e.currentTarget.value)} />
        </label>
        {about && (
          <p class="muted">
            {about.user} · {about.role || "no role"} · {about.companies.length ? about.companies.join(", ") : "all companies"}
          </p>
        )}
        <label>
          Company <span class="muted">(when the token names several)</span>
          <input name="company" value={company} onInput={(e) => setCompany(e.currentTarget.value)} />
        </label>
        <button type="submit">Continue</button>
      </form>
    </div>
  );
}
