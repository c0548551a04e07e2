// Cashier screen (docs/cashier-screen.md). No card data is held here: the API and the
// feed give a masked PAN at most. Actions go to the ECR API with its bearer token.
"use strict";
(function () {
  const token = document.querySelector('meta[name="cashier-token"]').content;
  const exponents = {};
  for (const pair of document.querySelector('meta[name="cashier-currencies"]').content.split(",")) {
    const [code, exp] = pair.split(":");
    exponents[code] = Number(exp);
  }
  const $ = (id) => document.getElementById(id);
  const HEADLINES = {
    idle: "READY", present_card: "INSERT CARD", choose_application: "CHOOSE APPLICATION",
    confirm_application: "CONFIRM APPLICATION", enter_pin: "ENTER PIN ON THE PIN PAD",
    processing: "PROCESSING", approved: "APPROVED", declined: "DECLINED",
    remove_card: "REMOVE CARD", not_completed: "NOT COMPLETED", signature: "SIGNATURE",
    message: "",
  };
  const FINAL = new Set(["approved", "declined", "not_completed"]);
  const NEXT_STEP = "Nothing was taken unless stated. Ask for the card again, or take another payment method.";
  let digits = "";
  let current = null;   // the running payment's id
  let lastKind = "idle";
  let lastPurchase = null;
  let busy = false;

  function amountMinor() { return digits === "" ? 0 : Number(digits); }
  function formatted() {
    const exp = exponents[$("currency").value] ?? 2;
    const text = (digits || "0").padStart(exp + 1, "0");
    return exp === 0 ? text : text.slice(0, -exp) + "." + text.slice(-exp);
  }
  function render() {
    $("amount").textContent = formatted();
    $("pay").disabled = busy || amountMinor() === 0;
    $("refund").disabled = busy || amountMinor() === 0;
    $("void").disabled = busy || lastPurchase === null;
    for (const key of document.querySelectorAll(".key")) key.disabled = busy;
    $("currency").disabled = busy;
  }
  function status(kind, headline, detail, extra) {
    $("status").className = kind;
    $("headline").textContent = headline;
    $("detail").textContent = detail || "";
    $("extra").textContent = extra || "";
  }
  function setCancellable(on) { $("cancel").hidden = !on; }

  function showPrompt(p) {
    if (p.kind === "remove_card" && FINAL.has(lastKind)) {
      const extra = $("extra").textContent;   // keep the result on screen
      if (!extra.includes("Remove card")) $("extra").textContent = (extra ? extra + " \u2014 " : "") + "Remove card";
      return;
    }
    lastKind = p.kind;
    let detail = p.text;
    const headline = HEADLINES[p.kind] ?? "";
    if (headline && detail.toUpperCase().startsWith(headline)) {
      detail = detail.slice(headline.length).replace(/^[:\s]+/, "");
    }
    if (p.kind === "not_completed" && !/again|another|revers/i.test(detail)) {
      detail = (detail ? detail + ". " : "") + NEXT_STEP;
    }
    status(p.kind, headline || p.text, headline ? detail : "", (p.lines || []).join("  "));
  }

  async function api(method, path, body) {
    const init = { method, headers: { Authorization: "Bearer " + token }, cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    return { ok: response.ok, status: response.status, data };
  }
  function problem(r) {
    status("error", "NOT POSSIBLE", (r.data && r.data.message) || "The terminal did not answer (" + r.status + ")");
  }
  function newKey() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return "cashier-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function follow(id) {
    // The feed shows the steps; the API says when it is over and whether Cancel applies.
    for (;;) {
      const r = await api("GET", "/v1/payments/" + id);
      if (!r.ok) { problem(r); return null; }
      if (r.data.status !== "pending") return r.data;
      setCancellable(r.data.cancellable);
      await new Promise((resolve) => setTimeout(resolve, 400));
    }
  }

  async function start(type) {
    if (busy || amountMinor() === 0) return;
    busy = true; render();
    try {
      const r = await api("POST", "/v1/payments", {
        amount: amountMinor(), currency: $("currency").value, type,
        reference: "cashier", idempotency_key: newKey(),
      });
      if (!r.ok) { problem(r); return; }
      current = r.data.id;
      setCancellable(r.data.cancellable);
      const done = await follow(current);
      if (done) {
        if (!FINAL.has(lastKind)) showPrompt({ kind: done.status, text: done.message, lines: [] });
        if (done.status === "approved") {
          digits = "";
          if (done.type === "purchase") lastPurchase = done.id;
        }
      }
    } finally {
      current = null; busy = false; setCancellable(false); render();
    }
  }

  async function cancel() {
    if (current === null) return;
    $("cancel").disabled = true;
    const r = await api("POST", "/v1/payments/" + current + "/cancel");
    $("cancel").disabled = false;
    if (!r.ok) problem(r);
  }

  async function voidLast() {
    if (busy || lastPurchase === null) return;
    busy = true; render();
    status("processing", "PROCESSING", "Voiding the last purchase");
    try {
      const r = await api("POST", "/v1/payments/" + lastPurchase + "/void");
      if (!r.ok) { problem(r); return; }
      lastKind = r.data.status;
      status(r.data.status, r.data.status === "approved" ? "VOIDED" : HEADLINES[r.data.status],
             r.data.message, formatted());
      if (r.data.status === "approved") lastPurchase = null;
    } finally {
      busy = false; render();
    }
  }

  function showBanners(list) {
    const box = $("banners");
    box.replaceChildren();
    for (const b of list) {
      const div = document.createElement("div");
      div.className = "banner";
      div.id = "banner-" + b.id;
      const strong = document.createElement("strong");
      strong.textContent = b.text;
      div.append(strong, document.createTextNode(b.action));
      box.append(div);
    }
  }

  function connect() {
    const events = new EventSource("/cashier/events");
    events.addEventListener("prompt", (e) => showPrompt(JSON.parse(e.data)));
    events.addEventListener("health", (e) => showBanners(JSON.parse(e.data).banners));
    events.onopen = () => { document.body.dataset.feed = "open"; };
    events.onerror = () => { document.body.dataset.feed = "lost"; };  // EventSource retries
  }

  document.querySelector("#keypad").addEventListener("click", (e) => {
    const key = e.target.closest(".key");
    if (!key || busy) return;
    const k = key.dataset.key;
    if (k === "clear") digits = "";
    else if (k === "back") digits = digits.slice(0, -1);
    else if (digits.length < 12 && !(digits === "" && k === "0")) digits += k;
    render();
  });
  $("currency").addEventListener("change", render);
  $("pay").addEventListener("click", () => start("purchase"));
  $("refund").addEventListener("click", () => start("refund"));
  $("cancel").addEventListener("click", cancel);
  $("void").addEventListener("click", voidLast);
  render();
  connect();
  api("GET", "/v1/cashier/last-purchase").then((r) => {
    if (r.ok && r.data && r.data.id !== null) { lastPurchase = r.data.id; render(); }
  });
})();
