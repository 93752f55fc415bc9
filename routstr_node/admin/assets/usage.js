// The usage page of the admin panel: charts of /admin/api/usage, the latest
// /admin/api/requests. Chart.js is served by the node itself (chart.umd.min.js beside
// this file): the page works offline, and its CSP allows scripts of its own origin only.
"use strict";
(() => {
  const DAY_MS = 86400000;
  const $ = (id) => document.getElementById(id);
  const charts = {};

  function show(view) {
    $("loading").hidden = view !== "loading";
    $("signed-out").hidden = view !== "signed-out";
    $("failure").hidden = view !== "failure";
    $("usage").hidden = view !== "usage";
  }

  async function getJson(url) {
    const response = await fetch(url, { credentials: "same-origin", cache: "no-store",
                                        headers: { Accept: "application/json" } });
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    return { status: response.status, body };
  }

  // amounts stay integers of msat; only their display divides
  const sat = (msat) => (msat / 1000).toLocaleString(undefined, { maximumFractionDigits: 3 });

  function colors() {
    const style = getComputedStyle(document.documentElement);
    return {
      accent: style.getPropertyValue("--accent").trim() || "#2456c7",
      bad: style.getPropertyValue("--bad").trim() || "#b3261e",
      muted: style.getPropertyValue("--muted").trim() || "#5d6570",
      line: style.getPropertyValue("--line").trim() || "#d5d9df",
    };
  }

  function draw(id, labels, datasets) {
    const c = colors();
    if (charts[id]) charts[id].destroy();
    const canvas = $(id);
    charts[id] = new Chart(canvas, {
      type: "bar",
      data: { labels, datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        plugins: { legend: { display: datasets.length > 1, labels: { color: c.muted } } },
        scales: {
          x: { ticks: { color: c.muted }, grid: { color: c.line } },
          y: { beginAtZero: true, ticks: { color: c.muted, precision: 0 },
               grid: { color: c.line } },
        },
      },
    });
    canvas.dataset.drawn = String(labels.length);
  }

  // every day of the period, those without requests at zero
  function days(since, until, groups) {
    const byDay = new Map(groups.map((g) => [g.key, g]));
    const labels = [];
    const values = [];
    for (let t = since; t <= until; t += DAY_MS) {
      const key = new Date(t).toISOString().slice(0, 10);
      if (labels.includes(key)) continue;
      labels.push(key);
      values.push(byDay.has(key) ? byDay.get(key).earnings_msat / 1000 : 0);
    }
    return { labels, values };
  }

  function cell(text, numeric) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "–" : String(text);
    if (numeric) td.className = "num";
    return td;
  }

  function renderLatest(records) {
    const body = $("latest").querySelector("tbody");
    body.replaceChildren(...records.map((r) => {
      const tr = document.createElement("tr");
      if (r.status >= 400) tr.className = "error";
      tr.append(
        cell(new Date(r.created * 1000).toISOString().replace("T", " ").slice(0, 19)),
        cell(r.request_id), cell(r.payment), cell(r.model), cell(r.provider),
        cell(r.status, true), cell(r.latency_ms, true), cell(r.input_tokens, true),
        cell(r.output_tokens, true), cell(r.cost_msats, true));
      return tr;
    }));
    $("latest-empty").hidden = records.length > 0;
  }

  async function load() {
    const periodDays = parseInt($("range").value, 10);
    const until = Date.now();
    const since = until - periodDays * DAY_MS;
    const range = "&since=" + Math.floor(since / 1000);
    const [byDay, byModel, byProvider, latest] = await Promise.all([
      getJson("/admin/api/usage?group_by=day" + range),
      getJson("/admin/api/usage?group_by=model" + range),
      getJson("/admin/api/usage?group_by=provider" + range),
      getJson("/admin/api/requests?limit=25" + range),
    ]);
    const answers = [byDay, byModel, byProvider, latest];
    if (answers.some((a) => a.status === 401)) { show("signed-out"); return; }
    const failed = answers.find((a) => a.status !== 200 || !a.body || !Array.isArray(a.body.data));
    if (failed) {
      $("failure").textContent = "Could not load the usage (HTTP " + failed.status + ").";
      show("failure");
      return;
    }
    show("usage");
    const c = colors();
    const models = byModel.body.data;
    const providers = byProvider.body.data;
    const requests = models.reduce((n, g) => n + g.requests, 0);
    const errors = models.reduce((n, g) => n + g.errors, 0);
    const earned = models.reduce((n, g) => n + g.earnings_msat, 0);
    $("total-requests").textContent = requests.toLocaleString();
    $("total-errors").textContent = errors.toLocaleString();
    $("total-earnings").textContent = sat(earned);
    const medians = byDay.body.data.map((g) => g.latency_ms_p50).filter((v) => v !== null);
    $("total-latency").textContent = medians.length ? String(Math.max(...medians)) : "–";

    const earnings = days(since, until, byDay.body.data);
    draw("chart-earnings", earnings.labels,
         [{ label: "Earnings (sat)", data: earnings.values, backgroundColor: c.accent }]);
    draw("chart-models", models.map((g) => g.key),
         [{ label: "Requests", data: models.map((g) => g.requests), backgroundColor: c.accent }]);
    draw("chart-providers", providers.map((g) => g.key || "(none)"), [
      { label: "Errors", data: providers.map((g) => g.errors), backgroundColor: c.bad },
      { label: "Requests", data: providers.map((g) => g.requests), backgroundColor: c.muted },
    ]);
    renderLatest(latest.body.data);
    document.body.dataset.loaded = String(Date.now());
  }

  $("range").addEventListener("change", load);
  $("refresh").addEventListener("click", load);
  show("loading");
  load().catch((err) => {
    $("failure").textContent = "Could not load the usage: " + err.message;
    show("failure");
  });
})();
