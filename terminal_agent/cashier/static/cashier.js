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
    if (FINAL.has(p.kind)) setCancellable(false);  // over: nothing left to cancel
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

  // -- History, receipts, totals and end of day ------------------------------------------
  let receiptId = null;
  let receiptCopy = "customer";
  function money(minor, currency) {
    const exp = exponents[currency] ?? 2;
    const sign = minor < 0 ? "-" : "";
    const text = String(Math.abs(minor)).padStart(exp + 1, "0");
    return sign + (exp === 0 ? text : text.slice(0, -exp) + "." + text.slice(-exp)) + " " + currency;
  }
  function openView(id) {
    for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== id;
  }
  function closeViews() { for (const v of document.querySelectorAll(".view")) v.hidden = true; }
  function cell(row, text) { const td = document.createElement("td"); td.textContent = text; row.append(td); }

  async function showHistory() {
    openView("history");
    const list = $("history-list");
    list.replaceChildren();
    const r = await api("GET", "/v1/payments/recent?limit=20");
    if (!r.ok) { list.textContent = (r.data && r.data.message) || "Not available"; return; }
    for (const p of r.data.payments) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.className = "history-item " + p.status;
      button.dataset.id = String(p.id);
      const when = new Date(p.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      button.textContent = [when, p.type, money(p.amount, p.currency), p.status.replace("_", " "),
                            p.masked_pan || ""].join("  ");
      button.addEventListener("click", () => showReceipt(p.id, "customer"));
      li.append(button);
      list.append(li);
    }
    if (!r.data.payments.length) list.textContent = "No payments yet";
  }

  async function showReceipt(id, copy) {
    receiptId = id; receiptCopy = copy;
    openView("receipt");
    $("receipt-message").textContent = "";
    const response = await fetch("/v1/payments/" + id + "/receipt?copy=" + copy,
      { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
    if (!response.ok) {
      let message = "No receipt (" + response.status + ")";
      try { message = (await response.json()).message; } catch (e) { /* keep */ }
      $("receipt-body").replaceChildren();
      $("receipt-message").textContent = message;
      return;
    }
    // The server escapes every value (render_html); parse it inert, without its <style>.
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const s of doc.querySelectorAll("style, script")) s.remove();
    $("receipt-body").replaceChildren(...doc.body.childNodes);
  }

  async function printReceipt() {
    if (receiptId === null) return;
    $("receipt-message").textContent = "Printing…";
    const r = await api("POST", "/v1/payments/" + receiptId + "/receipt/print");
    $("receipt-message").textContent = r.ok ? "Printed: customer and merchant copies"
      : ((r.data && r.data.message) || "Not printed (" + r.status + ")");
  }

  function fillTotals(table, lines) {
    table.replaceChildren();
    if (!lines.length) { const row = table.insertRow(); cell(row, "No payments"); return; }
    for (const l of lines) {
      const row = table.insertRow();
      row.className = "line " + l.status;
      cell(row, l.type); cell(row, l.status.replace("_", " ")); cell(row, String(l.count));
      cell(row, money(l.amount, l.currency));
    }
  }
  // The host's verdict on the batch (issue 6): IN BALANCE with the host's batch id, OUT OF
  // BALANCE with every difference line, or why it is not settled with the host (yet).
  let settleKey = null;   // the Idempotency-Key of the last close, for "Settle again"
  function showSettlement(b) {
    const box = $("batch-settlement");
    const s = b ? b.settlement : null;
    const list = $("settlement-differences");
    list.replaceChildren();
    $("settle-again").hidden = true;
    if (!s) { box.hidden = true; return; }
    box.hidden = false;
    box.className = s.status;
    const verdict = $("settlement-verdict");
    if (s.status === "in_balance") {
      verdict.textContent = "IN BALANCE \u2014 host batch " + s.host_batch_id;
    } else if (s.status === "out_of_balance" || s.status === "unreconciled") {
      verdict.textContent = (s.status === "out_of_balance" ? "OUT OF BALANCE" : "NOT RECONCILED")
        + " \u2014 host batch " + s.host_batch_id;
    } else {
      verdict.textContent = "Not settled with the host: " + (s.reason || "not sent yet");
      $("settle-again").hidden = settleKey === null || settleKey.batch !== b.id;
    }
    for (const d of s.differences) {
      const li = document.createElement("li");
      li.className = "difference";
      li.textContent = d;
      list.append(li);
    }
  }
  function showBatch(b) {
    $("batch-info").textContent = b ? "Batch " + b.id + " closed " + new Date(b.closed_at).toLocaleString() : "No batch closed yet";
    fillTotals($("totals-batch"), b ? b.lines : []);
    showSettlement(b);
  }
  async function showTotals() {
    openView("totals");
    const [today, batches] = await Promise.all([api("GET", "/v1/totals"), api("GET", "/v1/batches?limit=1")]);
    if (today.ok) fillTotals($("totals-today"), today.data.lines);
    if (batches.ok) showBatch(batches.data.batches[0] || null);
  }
  async function closeBatch(again) {
    // A repeat with the same key returns the same batch and retries only the host part.
    const key = again && settleKey !== null ? settleKey.key : newKey();
    $("close-batch").disabled = true;
    $("settle-again").disabled = true;
    $("batch-info").textContent = again ? "Settling with the host\u2026" : "Closing the batch\u2026";
    try {
      const r = await fetch("/v1/batches/close", {
        method: "POST", cache: "no-store",
        headers: { Authorization: "Bearer " + token, "Idempotency-Key": key },
      });
      let data = null;
      try { data = await r.json(); } catch (e) { data = null; }
      if (r.ok && data) {
        settleKey = { key, batch: data.id };
        showBatch(data);
      } else {
        $("batch-info").textContent = (data && data.message) || "Not closed (" + r.status + ")";
      }
    } finally { $("close-batch").disabled = false; $("settle-again").disabled = false; }
  }

  $("show-history").addEventListener("click", showHistory);
  $("show-totals").addEventListener("click", showTotals);
  $("receipt-customer").addEventListener("click", () => receiptId !== null && showReceipt(receiptId, "customer"));
  $("receipt-merchant").addEventListener("click", () => receiptId !== null && showReceipt(receiptId, "merchant"));
  $("receipt-print").addEventListener("click", printReceipt);
  $("close-batch").addEventListener("click", () => closeBatch(false));
  $("settle-again").addEventListener("click", () => closeBatch(true));
  for (const b of document.querySelectorAll(".close-view")) b.addEventListener("click", closeViews);

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
