/**
 * The operator console: a customer-success manager pushes roles, uploads CSV batches, watches
 * the company's runs live over one WatchStatus stream, opens a run's steps, retries or cancels,
 * pages through history and sees usage against the budget. Served by etter-server at /console/.
 */
import { render } from "preact";
import { useEffect, useMemo, useState } from "preact/hooks";

import { EtterClient, tokenClaims } from "../src/index.js";
import { LiveRuns } from "./live.js";
import { Login, type PageConfig, type Session } from "./login.js";
import { CompareView } from "./outputs.js";
import { BatchView, PushView } from "./push.js";
import { RunView } from "./run.js";
import { HistoryView, LiveView, UsageView } from "./views.js";

const SESSION_KEY = "etter.console.session";

function loadSession(): Session | undefined {
  try {
    const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null") as Session | null;
    if (!saved?.token || !saved.company) return undefined;
    const exp = tokenClaims(saved.token)?.exp;
    if (typeof exp === "number" && exp * 1000 < Date.now()) return undefined;
    return saved;
  } catch {
    return undefined;
  }
}

function useHash(): string {
  const [hash, setHash] = useState(location.hash || "#/live");
  useEffect(() => {
    const changed = () => setHash(location.hash || "#/live");
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  return hash;
}

function App() {
  const [session, setSession] = useState<Session | undefined>(loadSession);
  const [config, setConfig] = useState<PageConfig>();
  const hash = useHash();

  useEffect(() => {
    fetch("config.json")
      .then((r) => r.json() as Promise<PageConfig>)
      .then(setConfig)
      .catch(() => setConfig({ dev_login: false, temporal_ui_url: "", temporal_namespace: "", models: [] }));
  }, []);

  const signIn = (next: Session) => {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(next));
    setSession(next);
    location.hash = "#/live";
  };
  const signOut = () => {
    sessionStorage.removeItem(SESSION_KEY);
    setSession(undefined);
  };

  if (!session) return <Login config={config} onSignIn={signIn} />;
  return <Console session={session} config={config} hash={hash} onSignOut={signOut} />;
}

function Console(props: { session: Session; config: PageConfig | undefined; hash: string; onSignOut: () => void }) {
  const { session, hash } = props;
  const client = useMemo(() => new EtterClient(location.origin, session.token), [session.token]);
  const live = useMemo(() => new LiveRuns(client, session.company), [client, session.company]);
  useEffect(() => () => live.stop(), [live]);
  const [, setTick] = useState(0);
  useEffect(() => live.subscribe(() => setTick((t) => t + 1)), [live]);

  const connection = live.state.connection;
  const [route = "live", arg = "", second = ""] = hash.replace(/^#\//, "").split("/");
  const nav = [
    ["live", "Live"],
    ["push", "Push a role"],
    ["batch", "Upload CSV"],
    ["history", "History"],
    ["usage", "Usage"],
  ] as const;

  return (
    <div class="app">
      <header class="top">
        <div class="brand">Etter pipeline</div>
        <nav>
          {nav.map(([key, label]) => (
            <a key={key} href={`#/${key}`} class={route === key || ((route === "run" || route === "compare") && key === "live") ? "active" : ""}>
              {label}
            </a>
          ))}
        </nav>
        <div class="who">
          <span class={`conn ${connection.state}`} data-testid="connection" title="The live stream of this company's runs">
            {connection.state === "live"
              ? "Live"
              : connection.state === "connecting"
                ? "Connecting…"
                : connection.state === "reconnecting"
                  ? `Reconnecting… (attempt ${connection.attempt})`
                  : "Disconnected"}
          </span>
          <span class="company" data-testid="company">{session.company}</span>
          <span class="user">{session.user} · {session.role}</span>
          <button class="link" onClick={props.onSignOut}>Sign out</button>
        </div>
      </header>
      {connection.state === "reconnecting" && (
        <div class="banner warn" role="status" data-testid="reconnecting">
          Lost the connection to the server ({connection.error.message || connection.error.codeName}). Reconnecting in{" "}
          {Math.ceil(connection.retryInMs / 1000)} s; updates missed meanwhile will be caught up.
        </div>
      )}
      {connection.state === "failed" && (
        <div class="banner bad" role="alert">
          The live view stopped: {connection.error.message}. {connection.error.codeName === "UNAUTHENTICATED" ? "Sign in again." : "Reload the page to try again."}
        </div>
      )}
      <main>
        {route === "live" && <LiveView live={live} />}
        {route === "run" && <RunView client={client} live={live} workflowId={decodeURIComponent(arg)} config={props.config} />}
        {route === "compare" && (
          <CompareView client={client} base={decodeURIComponent(arg)} workflowId={decodeURIComponent(second)} />
        )}
        {route === "push" && <PushView client={client} live={live} company={session.company} />}
        {route === "batch" && <BatchView client={client} company={session.company} />}
        {route === "history" && (
          <HistoryView key={arg} client={client} company={session.company} {...(arg ? { batchId: decodeURIComponent(arg) } : {})} />
        )}
        {route === "usage" && <UsageView client={client} company={session.company} />}
      </main>
    </div>
  );
}

const root = document.getElementById("app");
if (root) render(<App />, root);
