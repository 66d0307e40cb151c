// jetmail web UI: live pages over Server-Sent Events, a throughput chart, confirmations.
// Every value from the server goes into the page with textContent or setAttribute, never
// as HTML, so a campaign subject or an SMTP reply is always text.
(function () {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";

  function $(sel, root) { return (root || document).querySelector(sel); }

  function setField(root, name, value) {
    root.querySelectorAll('[data-field="' + name + '"]').forEach(function (el) {
      el.textContent = value === undefined || value === null ? "" : String(value);
    });
  }

  function fmtRate(r) { return r >= 100 ? r.toFixed(0) : r.toFixed(1); }

  function fmtNum(v) {
    if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k";
    return Number.isInteger(v) || v >= 100 ? v.toFixed(0) : v.toFixed(1);
  }

  function clock(ms) { return new Date(ms).toLocaleTimeString(); }

  function ago(ms) {
    if (ms < 0) ms = 0;
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s ago";
    if (ms < 3600000) return Math.floor(ms / 60000) + " min ago";
    return Math.floor(ms / 3600000) + " h ago";
  }

  // Buttons that destroy something ask first.
  document.addEventListener("click", function (e) {
    var b = e.target.closest ? e.target.closest("[data-confirm]") : null;
    if (b && !window.confirm(b.getAttribute("data-confirm"))) e.preventDefault();
  });

  // One SSE connection per page; the browser reconnects by itself and the server then sends
  // the whole current state again.
  function connect(url, handlers) {
    var badge = $("[data-live-status]");
    var es = new EventSource(url);
    es.onopen = function () {
      if (badge) { badge.textContent = "live"; badge.classList.remove("offline"); }
    };
    es.onerror = function () {
      if (badge) { badge.textContent = "reconnecting…"; badge.classList.add("offline"); }
    };
    Object.keys(handlers).forEach(function (name) {
      es.addEventListener(name, function (ev) {
        var data;
        try { data = JSON.parse(ev.data); } catch (_) { return; }
        handlers[name](data);
      });
    });
    window.addEventListener("beforeunload", function () { es.close(); });
    return es;
  }

  // ---- campaigns -------------------------------------------------------------------------

  function updateBar(root, c) {
    function set(name, x, w) {
      var r = root.querySelector('[data-bar="' + name + '"]');
      if (r) { r.setAttribute("x", x); r.setAttribute("width", w); }
    }
    set("sent", 0, c.pct_sent);
    set("failed", c.pct_sent, c.pct_failed);
    set("other", c.pct_sent + c.pct_failed, c.pct_other);
  }

  function fillCampaign(root, c) {
    ["subject", "id", "from", "created", "sent", "failed", "dead", "pending", "cancelled",
      "expired", "suppressed", "deferred", "published", "settled"].forEach(function (k) { setField(root, k, c[k]); });
    setField(root, "rate", fmtRate(c.rate));
    setField(root, "avg_rate", fmtRate(c.avg_rate));
    root.querySelectorAll('[data-field="status"]').forEach(function (el) {
      el.textContent = c.status;
      el.setAttribute("class", "status status-" + c.status);
    });
    updateBar(root, c);
  }

  var list = $("#campaigns");
  if (list) {
    var body = list.tBodies[0];
    connect(list.getAttribute("data-events"), {
      campaign: function (c) {
        var row = document.getElementById("campaign-" + c.id);
        if (!row) {
          row = $("#campaign-row").content.firstElementChild.cloneNode(true);
          row.id = "campaign-" + c.id;
          row.setAttribute("data-id", c.id);
          row.setAttribute("data-created", c.created_ms);
          row.querySelector('[data-field="link"]')
            .setAttribute("href", "/campaigns/" + encodeURIComponent(c.id));
          var before = null;
          for (var i = 0; i < body.rows.length; i++) {
            if (Number(body.rows[i].getAttribute("data-created")) < c.created_ms) {
              before = body.rows[i];
              break;
            }
          }
          body.insertBefore(row, before);
          $("#no-campaigns").hidden = true;
        }
        fillCampaign(row, c);
      },
      campaign_removed: function (d) {
        var row = document.getElementById("campaign-" + d.id);
        if (row) row.remove();
      }
    });
  }

  function svgEl(svg, name, attrs, text) {
    var e = document.createElementNS(SVG_NS, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  }

  function niceCeil(v) {
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }

  // Messages per second between consecutive samples, sent and failed.
  function drawChart(svg, samples) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var W = 640, H = 220, L = 48, R = 12, T = 10, B = 26;
    var pts = [];
    for (var i = 1; i < samples.length; i++) {
      var a = samples[i - 1], b = samples[i];
      var dt = (b.at_ms - a.at_ms) / 1000;
      if (dt <= 0) continue;
      pts.push({
        t: b.at_ms,
        sent: Math.max(0, b.sent - a.sent) / dt,
        failed: Math.max(0, b.failed - a.failed) / dt
      });
    }
    if (pts.length === 0) {
      svgEl(svg, "text", { x: W / 2, y: H / 2, "text-anchor": "middle", "class": "chart-empty" },
        "waiting for data…");
      return;
    }
    var t0 = samples[0].at_ms, t1 = pts[pts.length - 1].t, span = Math.max(1, t1 - t0);
    var max = 1;
    pts.forEach(function (p) { max = Math.max(max, p.sent, p.failed); });
    max = niceCeil(max);
    function x(t) { return (L + (t - t0) / span * (W - L - R)).toFixed(1); }
    function y(v) { return (T + (1 - v / max) * (H - T - B)).toFixed(1); }
    for (var g = 0; g <= 4; g++) {
      var v = max * g / 4;
      svgEl(svg, "line", { x1: L, x2: W - R, y1: y(v), y2: y(v), "class": "grid-line" });
      svgEl(svg, "text", { x: L - 6, y: Number(y(v)) + 4, "text-anchor": "end", "class": "axis" }, fmtNum(v));
    }
    svgEl(svg, "text", { x: L, y: H - 6, "class": "axis" }, clock(t0));
    svgEl(svg, "text", { x: W - R, y: H - 6, "text-anchor": "end", "class": "axis" }, clock(t1));
    function line(key, cls) {
      var d = x(t0) + "," + y(0) + " " + pts.map(function (p) { return x(p.t) + "," + y(p[key]); }).join(" ");
      svgEl(svg, "polyline", { points: d, "class": cls });
    }
    var area = x(t0) + "," + y(0) + " " + pts.map(function (p) { return x(p.t) + "," + y(p.sent); }).join(" ") +
      " " + x(t1) + "," + y(0);
    svgEl(svg, "polygon", { points: area, "class": "chart-area" });
    line("sent", "chart-sent");
    line("failed", "chart-failed");
  }

  var detail = $("#campaign");
  if (detail) {
    var chart = $("#chart");
    var samples = [];
    try { samples = JSON.parse(detail.getAttribute("data-samples") || "[]"); } catch (_) { samples = []; }
    drawChart(chart, samples);
    var buttons = { pause: $("#pause-button"), resume: $("#resume-button"), cancel: $("#cancel-button") };
    connect(detail.getAttribute("data-events"), {
      campaign: function (c) {
        if (c.id !== detail.getAttribute("data-id")) return;
        fillCampaign(detail, c);
        buttons.pause.disabled = !(c.status === "running" || c.status === "publishing");
        buttons.resume.disabled = c.status !== "paused";
        buttons.cancel.disabled = c.status === "cancelled" || c.status === "done";
        var last = samples.length ? samples[samples.length - 1] : null;
        if (c.sample && (!last || c.sample.at_ms > last.at_ms)) {
          samples.push(c.sample);
          if (samples.length > 1440) samples.splice(0, samples.length - 1440);
          drawChart(chart, samples);
        }
      }
    });
  }

  // ---- senders ---------------------------------------------------------------------------

  function setState(row, state) {
    row.setAttribute("data-state", state);
    var el = row.querySelector('[data-field="state"]');
    el.textContent = state;
    el.setAttribute("class", "state state-" + state);
  }

  var senders = $("#senders");
  if (senders) {
    var sbody = senders.tBodies[0];
    var missed = Number(senders.getAttribute("data-missed-beats") || 3);
    for (var r = 0; r < sbody.rows.length; r++) {
      var age = Number(sbody.rows[r].getAttribute("data-age") || 0);
      sbody.rows[r].setAttribute("data-seen-at", Date.now() - age);
    }
    connect(senders.getAttribute("data-events"), {
      sender: function (s) {
        var row = document.getElementById("sender-" + s.id);
        if (!row) {
          row = $("#sender-row").content.firstElementChild.cloneNode(true);
          row.id = "sender-" + s.id;
          row.setAttribute("data-id", s.id);
          var before = null;
          for (var i = 0; i < sbody.rows.length; i++) {
            if (sbody.rows[i].getAttribute("data-id") > s.id) { before = sbody.rows[i]; break; }
          }
          sbody.insertBefore(row, before);
          $("#no-senders").hidden = true;
        }
        // Ages count on this browser's clock from what the server measured on its own, so
        // neither clock needs to agree with the other.
        row.setAttribute("data-seen-at", Date.now() - s.age_ms);
        row.setAttribute("data-interval", s.interval_ms);
        row.querySelector('[data-field="id"] strong').textContent = s.id;
        ["host", "in_flight", "sent", "failed", "deferred"].forEach(function (k) { setField(row, k, s[k]); });
        setField(row, "rate", fmtRate(s.rate));
        setField(row, "last_seen", ago(s.age_ms));
        setState(row, s.state);
        var cell = row.querySelector('[data-field="relays"]');
        while (cell.firstChild) cell.removeChild(cell.firstChild);
        s.relays.forEach(function (r) {
          var div = document.createElement("div");
          div.className = "relay";
          var url = document.createElement("span");
          url.className = "relay-url";
          url.textContent = r.url;
          var circuit = document.createElement("span");
          circuit.className = "circuit circuit-" + r.circuit;
          circuit.textContent = r.circuit;
          div.appendChild(url);
          div.appendChild(document.createTextNode(" "));
          div.appendChild(circuit);
          if (r.last_error) {
            // textContent: the reply of a relay is text, never markup.
            var err = document.createElement("div");
            err.className = "relay-error";
            err.textContent = r.last_error;
            div.appendChild(err);
          }
          cell.appendChild(div);
        });
      },
      sender_removed: function (d) {
        var row = document.getElementById("sender-" + d.id);
        if (row) row.remove();
      }
    });
    // The server announces a silent sender; this also catches it if the stream itself stalls.
    setInterval(function () {
      var now = Date.now();
      for (var i = 0; i < sbody.rows.length; i++) {
        var row = sbody.rows[i];
        var seenAt = Number(row.getAttribute("data-seen-at"));
        var interval = Math.max(100, Number(row.getAttribute("data-interval")));
        if (!seenAt) continue;
        setField(row, "last_seen", ago(now - seenAt));
        if (row.getAttribute("data-state") !== "down" && now - seenAt > missed * interval) setState(row, "down");
      }
    }, 250);
  }

  // ---- dead letters ----------------------------------------------------------------------

  var selectAll = $("#select-all");
  if (selectAll) {
    selectAll.addEventListener("change", function () {
      document.querySelectorAll('input[name="seq"]').forEach(function (c) { c.checked = selectAll.checked; });
    });
  }
})();
