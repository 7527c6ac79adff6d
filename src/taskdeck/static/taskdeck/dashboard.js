/* taskdeck dashboard: relative times, htmx settings, filters that submit themselves, and the
   overview's charts (uPlot), each with a text summary and its numbers as a table. */
(function () {
  "use strict";

  // --- relative times: "3m 05s ago", rewritten from each element's data-since ---------
  function ago(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return seconds + "s";
    var m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return m + "m " + String(s).padStart(2, "0") + "s";
    var h = Math.floor(m / 60); m = m % 60;
    if (h < 48) return h + "h " + String(m).padStart(2, "0") + "m";
    var d = Math.floor(h / 24); h = h % 24;
    return d + "d " + h + "h";
  }
  function refreshTimes(root) {
    var now = Date.now();
    (root || document).querySelectorAll(".ago[data-since]").forEach(function (el) {
      var t = Date.parse(el.getAttribute("data-since"));
      if (isNaN(t)) return;
      var delta = (now - t) / 1000;
      el.textContent = delta >= 0 ? ago(delta) + " ago" : "in " + ago(-delta);
    });
  }
  setInterval(refreshTimes, 5000);

  // --- htmx: swap a 503 (the "database down" banner) instead of dropping it ------------
  document.addEventListener("DOMContentLoaded", function () {
    if (window.htmx) {
      htmx.config.responseHandling = [
        { code: "204", swap: false },
        { code: "[23]..", swap: true },
        { code: "503", swap: true },
        { code: "[45]..", swap: false, error: true },
      ];
    }
  });
  document.addEventListener("htmx:afterSwap", function (e) { refreshTimes(e.target); });

  // --- filters that submit on change ([data-autosubmit]) ----------------------------------
  // A click or Space on a checkbox, or a choice picked with the mouse, submits at once. Arrow
  // keys in a closed <select> change its value one step at a time: those wait for Enter, so a
  // keyboard user is not sent to a new page at every step.
  var keyed = null;
  document.addEventListener("keydown", function (e) {
    var el = e.target;
    if (!el.matches || !el.matches("select[data-autosubmit]")) return;
    if (e.key === "Enter") { e.preventDefault(); keyed = null; el.form.requestSubmit(); }
    else if (e.key.indexOf("Arrow") === 0 || e.key === "Home" || e.key === "End" || e.key.indexOf("Page") === 0 || e.key.length === 1) keyed = el;
  });
  document.addEventListener("change", function (e) {
    var el = e.target;
    if (!el.matches || !el.matches("[data-autosubmit]")) return;
    if (keyed === el) return;  // waits for Enter
    el.form.requestSubmit();
  });
  document.addEventListener("focusout", function (e) { if (keyed === e.target) keyed = null; });

  // --- charts ----------------------------------------------------------------------------
  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  function fmtSeconds(v) {
    if (v == null) return "—";
    if (v === 0) return "0";
    if (v < 0.001) return (v * 1e6).toFixed(0) + " µs";
    if (v < 1) return (v * 1000).toFixed(v < 0.01 ? 1 : 0) + " ms";
    if (v < 60) return v.toFixed(2) + " s";
    return ago(v);
  }
  function fmtCount(v) {
    if (v == null) return "—";
    if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (v >= 1e4) return (v / 1e3).toFixed(1) + "k";
    return String(Math.round(v * 100) / 100);
  }

  function pad(n) { return String(n).padStart(2, "0"); }
  function timeLabels(u, splits) {
    var span = splits.length > 1 ? splits[splits.length - 1] - splits[0] : 0;
    return splits.map(function (ts) {
      var d = new Date(ts * 1000);
      var hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
      return span > 86400 ? (d.getMonth() + 1) + "/" + d.getDate() + (d.getHours() || d.getMinutes() ? " " + hm : "") : hm;
    });
  }

  function axes(yFormat) {
    var grid = { stroke: css("--border"), width: 1 };
    var text = css("--muted");
    return [
      { stroke: text, grid: grid, ticks: { stroke: grid.stroke }, values: timeLabels, space: 60 },
      {
        stroke: text, grid: grid, ticks: { stroke: grid.stroke }, size: 64,
        values: function (u, vals) { return vals.map(yFormat); },
      },
    ];
  }

  function makeChart(el, series, data, yFormat, opts) {
    var width = Math.max(200, el.clientWidth - 8);
    var o = Object.assign({
      width: width,
      height: 170,
      cursor: { points: { size: 6 } },
      legend: { live: true },
      scales: { x: { time: true } },
      axes: axes(yFormat),
      series: [{ value: function (u, ts) { return ts == null ? "" : new Date(ts * 1000).toLocaleString([], { hourCycle: "h23" }); } }].concat(series),
    }, opts || {});
    el.innerHTML = "";
    var u = new uPlot(o, data, el);
    new ResizeObserver(function () {
      u.setSize({ width: Math.max(200, el.clientWidth - 8), height: 170 });
    }).observe(el);
    return u;
  }

  function bars() {
    return uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.7, 24] }) : undefined;
  }

  // --- a chart for those who cannot see it: a sentence, and its numbers as a table ----------
  function timeOf(t) { return new Date(t * 1000).toLocaleString([], { hourCycle: "h23", month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit" }); }

  function describe(root, key, text, xs, columns) {
    var summary = root.querySelector("[data-chart-summary=" + key + "]");
    if (summary) summary.textContent = text;
    var box = root.querySelector("[data-chart-table=" + key + "] .scroll");
    if (!box) return;
    var table = document.createElement("table");
    table.className = "t";
    var caption = table.createCaption();
    caption.className = "sr-only";
    caption.textContent = text;
    var head = table.createTHead().insertRow();
    ["bucket start"].concat(columns.map(function (c) { return c.label; })).forEach(function (label, i) {
      var th = document.createElement("th");
      th.scope = "col";
      th.textContent = label;
      if (i) th.className = "num";
      head.appendChild(th);
    });
    var tbody = table.createTBody();
    xs.forEach(function (t, i) {
      var row = tbody.insertRow();
      var th = document.createElement("th");
      th.scope = "row";
      th.textContent = timeOf(t);
      row.appendChild(th);
      columns.forEach(function (c) {
        var td = row.insertCell();
        td.className = "num";
        td.textContent = c.format(c.values[i]);
      });
    });
    box.replaceChildren(table);
  }

  function busiest(xs, values, bucket) {
    var best = -1;
    values.forEach(function (v, i) { if (v != null && (best < 0 || v > values[best])) best = i; });
    return best < 0 || !values[best] ? "" : "; the busiest " + bucket + ": " + fmtCount(values[best]) + " at " + timeOf(xs[best]);
  }

  function plain(n) { return n == null ? "—" : String(n); }

  function drawOverview(root, body) {
    var pts = body.points;
    var xs = pts.map(function (p) { return Date.parse(p.t) / 1000; });
    var col = function (k) { return pts.map(function (p) { return p[k]; }); };
    var ok = css("--ok"), bad = css("--bad"), run = css("--run"), warn = css("--warn");
    var perStep = body.step >= 3600 ? "h" : body.step >= 60 ? "min" : "s";
    var charts = root._charts || {};
    (charts.all || []).forEach(function (c) { c.destroy(); });

    var el1 = root.querySelector("[data-chart=throughput]");
    var el2 = root.querySelector("[data-chart=failures]");
    var el3 = root.querySelector("[data-chart=latency]");
    var list = [];
    list.push(makeChart(el1, [
      { label: "succeeded", stroke: ok, fill: ok + "55", paths: bars(), value: function (u, v) { return fmtCount(v); } },
      { label: "retried", stroke: warn, width: 1.5, value: function (u, v) { return fmtCount(v); } },
    ], [xs, col("succeeded"), col("retried")], fmtCount));
    list.push(makeChart(el2, [
      { label: "failed", stroke: bad, fill: bad + "66", paths: bars(), value: function (u, v) { return fmtCount(v); } },
      { label: "revoked", stroke: css("--revoked"), width: 1.5, value: function (u, v) { return fmtCount(v); } },
    ], [xs, col("failed"), col("revoked")], fmtCount));
    list.push(makeChart(el3, [
      { label: "runtime p50", stroke: run, width: 1.5, spanGaps: true, points: { show: true, size: 4 }, value: function (u, v) { return fmtSeconds(v); } },
      { label: "runtime p95", stroke: bad, width: 1.5, spanGaps: true, points: { show: true, size: 4 }, value: function (u, v) { return fmtSeconds(v); } },
      { label: "wait p95", stroke: warn, width: 1.5, dash: [4, 3], spanGaps: true, points: { show: true, size: 3 }, value: function (u, v) { return fmtSeconds(v); } },
    ], [xs, col("runtime_p50"), col("runtime_p95"), col("wait_p95")], fmtSeconds));
    root._charts = { all: list };

    var s = body.summary;
    var name = root.getAttribute("data-window-name") || body.window_name;
    var Name = name.charAt(0).toUpperCase() + name.slice(1);
    var bucket = (body.step >= 3600 ? body.step / 3600 + "-hour" : body.step / 60 + "-minute") + " bucket";
    describe(root, "throughput",
      Name + ": " + s.succeeded + " runs succeeded and " + s.retried + " retries" + busiest(xs, col("succeeded"), bucket) + ".",
      xs, [
        { label: "succeeded", values: col("succeeded"), format: plain },
        { label: "retried", values: col("retried"), format: plain },
      ]);
    describe(root, "failures",
      Name + ": " + s.failed + " runs failed and " + s.revoked + " were revoked" + busiest(xs, col("failed"), bucket) + ".",
      xs, [
        { label: "failed", values: col("failed"), format: plain },
        { label: "revoked", values: col("revoked"), format: plain },
      ]);
    describe(root, "latency",
      Name + ": runtime p50 " + fmtSeconds(s.runtime.p50) + ", p95 " + fmtSeconds(s.runtime.p95) + "; wait p95 " + fmtSeconds(s.wait.p95) + " (percentiles per " + bucket + " in the table).",
      xs, [
        { label: "runtime p50", values: col("runtime_p50"), format: fmtSeconds },
        { label: "runtime p95", values: col("runtime_p95"), format: fmtSeconds },
        { label: "wait p95", values: col("wait_p95"), format: fmtSeconds },
      ]);
    var set = function (k, v) { var e = root.querySelector("[data-stat=" + k + "]"); if (e) e.textContent = v; };
    set("finished", fmtCount(s.finished));
    set("throughput", fmtCount(s.throughput * 60) + "/min");
    set("failed", fmtCount(s.failed));
    set("failure_rate", (s.failure_rate * 100).toFixed(1) + "%");
    set("runtime_p50", fmtSeconds(s.runtime.p50));
    set("runtime_p95", fmtSeconds(s.runtime.p95));
    set("wait_p95", fmtSeconds(s.wait.p95));
    set("retried", fmtCount(s.retried));
    set("per", "per " + perStep);
    var rate = root.querySelector("[data-stat=failure_rate]");
    if (rate) rate.classList.toggle("bad", s.failure_rate > 0.05);
  }

  function loadOverview(root) {
    var url = root.getAttribute("data-series") + "?window=" + root.getAttribute("data-window");
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (body) { drawOverview(root, body); root.setAttribute("data-loaded", "1"); })
      .catch(function (err) {
        root.querySelectorAll(".chart .loading, .chart-summary").forEach(function (e) { e.textContent = "charts unavailable: " + err.message; });
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    refreshTimes();
    var root = document.querySelector("[data-overview]");
    if (!root || !window.uPlot) return;
    loadOverview(root);
    setInterval(function () { if (!document.hidden) loadOverview(root); }, 30000);
  });
})();
