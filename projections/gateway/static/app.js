// The dashboard shell: sign-in, the As-of control, and the router over the fragment (#/page?query).
import { api, fill, h, setSession, session } from "/ui/static/dom.js";
import { pages } from "/ui/static/pages.js";

const main = document.getElementById("main");
let current = null; // the page shown: {stop()} ends its timers and streams

function route() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const params = new URLSearchParams(query || "");
  const [name, ...rest] = (path || "overview").split("/");
  return { name, arg: rest.map(decodeURIComponent).join("/"), params };
}

async function show() {
  if (current && current.stop) current.stop();
  current = null;
  const { name, arg, params } = route();
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === name || (name === "task" && link.dataset.page === "tasks"));
  }
  const cut = params.get("as_of") || "";
  document.getElementById("asof-input").value = cut;
  const banner = document.getElementById("asof-banner");
  banner.hidden = !cut;
  banner.textContent = cut ? `As of ${cut}: every page shows the read models folded up to that cut. Live updates are off.` : "";
  const page = pages[name] || pages.overview;
  main.replaceChildren(h("p", { class: "loading" }, "loading…"));
  try {
    current = await page({ main, arg, params, asOf: cut });
  } catch (err) {
    main.replaceChildren(h("p", { class: "error", id: "page-error" }, String(err.message || err)));
  }
}

// the As-of control keeps the page and its filters, and adds or drops as_of
function goAsOf(value) {
  const { name, arg, params } = route();
  if (value) params.set("as_of", value); else params.delete("as_of");
  const path = arg ? `${name}/${encodeURIComponent(arg)}` : name;
  const query = params.toString();
  location.hash = `#/${path}${query ? "?" + query : ""}`;
}

document.getElementById("asof").addEventListener("submit", (e) => {
  e.preventDefault();
  goAsOf(document.getElementById("asof-input").value.trim());
});
document.getElementById("asof-now").addEventListener("click", () => goAsOf(""));

async function signIn(e) {
  e.preventDefault();
  const input = document.getElementById("token");
  try {
    setSession(await api("/ui/session", { method: "POST", body: { token: input.value } }));
    input.value = "";
    await start();
  } catch (err) {
    document.getElementById("signin-error").textContent = err.message;
  }
}
document.getElementById("signin-form").addEventListener("submit", signIn);

function showWho() {
  const who = document.getElementById("who");
  const s = session();
  const out = s.auth ? h("button", { type: "button", id: "signout" }, "Sign out") : null;
  if (out) {
    out.addEventListener("click", async () => {
      await api("/ui/session", { method: "DELETE" });
      setSession({ auth: true, signed_in: false });
      await start();
    });
  }
  fill(who, h("span", { id: "who-name", title: s.roles.join(", ") }, `${s.name} (${s.roles.join("+")})`), out);
}

async function start() {
  setSession(await api("/ui/session"));
  const s = session();
  document.getElementById("signin").hidden = s.signed_in;
  main.hidden = !s.signed_in;
  if (!s.signed_in) {
    if (current && current.stop) current.stop();
    current = null;
    main.replaceChildren(); // nothing of the last session stays on screen
    document.getElementById("who").replaceChildren();
    return;
  }
  showWho();
  await show();
}

window.addEventListener("hashchange", show);
start();
