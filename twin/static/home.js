// A home's page: schematic with live values coloured by health (polled every 2 s),
// per-minute charts of the recent hours with anomalies marked, register data, and
// the what-if form (built from the API's own OpenAPI schema) with its result chart.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const homeId = decodeURIComponent(location.pathname.split("/").pop());
  const METRICS = [["power_w", "power", "W"], ["indoor_temp_c", "indoor temperature", "°C"],
    ["outdoor_temp_c", "outdoor temperature", "°C"], ["voltage_v", "voltage", "V"], ["vibration_mm_s", "vibration", "mm/s"],
    ["water_flow_lpm", "water flow", "l/min"], ["water_temp_c", "hot water", "°C"], ["uv_intensity_mw_cm2", "UV intensity", "mW/cm²"],
    ["pump_pressure_bar", "pump pressure", "bar"]];
  // which metrics tell the health of each system on the schematic
  const SYSTEMS = {
    heat_pump: ["power_w", "indoor_temp_c"], envelope: ["indoor_temp_c"], thermostat: ["indoor_temp_c"],
    inverter: ["voltage_v"], meter: ["power_w", "seq"], structure: ["vibration_mm_s"],
    circulation_pump: ["pump_pressure_bar", "vibration_mm_s", "water_flow_lpm"], uv_lamp: ["uv_intensity_mw_cm2"],
    water_heater: ["water_temp_c"], water_filter: ["water_flow_lpm", "pump_pressure_bar"],
  };
  $("title").textContent = homeId;
  if (!Eco.token()) Eco.askToken("Paste the read token.");

  function health(doc, system) {
    if (doc.status === "silent") return "off";
    const ms = SYSTEMS[system];
    if (doc.alerts.some((a) => ms.includes(a.metric))) return "bad";
    const recent = doc.recent_anomalies.filter((a) => doc.last_ts - a.ts < 10 * 60000);
    if (recent.some((a) => ms.includes(a.metric))) return "warn";
    const wo = doc.work_orders.some((o) => o.asset_type === system);
    return wo ? "warn" : "ok";
  }
  const val = (doc, m, d = 1, unit = "") => doc.metrics[m] ? Eco.fmt(doc.metrics[m].value, d) + unit : "–";

  function schematic(doc) {
    const N = Charts.node, svg = $("schematic");
    svg.replaceChildren();
    svg.appendChild(N("path", { d: "M40 120 L200 30 L360 120 L360 300 L40 300 Z", class: "house" }));
    svg.appendChild(N("path", { d: "M360 250 L420 250", class: "pipe" }));
    svg.appendChild(N("path", { d: "M200 300 L200 318 L520 318", class: "wire" }));
    const water = doc.attributes.building.water_system;
    const box = (system, x, y, w, label, lines) => {
      const g = N("g", { "data-system": system, "data-health": health(doc, system) });
      g.appendChild(N("rect", { x, y, width: w, height: 20 + 16 * lines.length, class: "box " + health(doc, system) }));
      g.appendChild(N("text", { x: x + 8, y: y + 15 }, label));
      lines.forEach((l, i) => g.appendChild(N("text", { x: x + 8, y: y + 32 + 16 * i, class: "val" }, l)));
      svg.appendChild(g);
    };
    box("envelope", 150, 70, 100, "Envelope", [`U ${doc.attributes.building.u_value_w_m2k} W/m²K`]);
    box("thermostat", 60, 130, 130, "Thermostat", [`in ${val(doc, "indoor_temp_c", 1, " °C")}`]);
    box("heat_pump", 420, 215, 130, "Heat pump", [`${val(doc, "power_w", 0, " W")} total`, `out ${val(doc, "outdoor_temp_c", 1, " °C")}`]);
    box("inverter", 60, 230, 130, "Panel / inverter", [`${val(doc, "voltage_v", 1, " V")}`]);
    box("meter", 420, 290, 130, "Meter", [`${val(doc, "energy_kwh", 1, " kWh")}`].slice(0, 1));
    box("structure", 210, 130, 130, "Structure", [`${val(doc, "vibration_mm_s", 2, " mm/s")}`]);
    if (water) {
      box("water_heater", 210, 190, 130, "Water heater", [`${val(doc, "water_temp_c", 1, " °C")}`]);
      box("circulation_pump", 210, 245, 130, "Circulation pump", [`${val(doc, "pump_pressure_bar", 2, " bar")} · ${val(doc, "water_flow_lpm", 1, " l/m")}`]);
      box("uv_lamp", 420, 60, 130, "UV steriliser", [`${val(doc, "uv_intensity_mw_cm2", 1, " mW/cm²")}`]);
      box("water_filter", 420, 130, 130, "Water filter", [doc.work_orders.some((o) => o.asset_type === "water_filter") ? "work order open" : "ok"]);
    }
  }

  function registerData(doc) {
    const b = doc.attributes.building;
    Eco.table($("building"), [["", (r) => r[0]], ["", (r) => r[1]]], [
      ["built", `${b.year_built}, ${b.type.replace("_", " ")}`], ["floor area", `${b.floor_area_m2} m²`],
      ["insulation", `${b.insulation}, U ${b.u_value_w_m2k} W/m²K`], ["energy rating", b.energy_rating],
      ["location", `${doc.location.lat.toFixed(4)}, ${doc.location.lon.toFixed(4)} (${doc.region})`]]);
    Eco.table($("compliance"), [["item", (c) => c.item.replaceAll("_", " ")], ["last done", (c) => Eco.date(c.last_done_ms)],
      ["due", (c) => Eco.date(c.due_ms)], ["status", (c) => Eco.pill(c.status)]], doc.compliance);
    Eco.table($("bom"), [["asset", (a) => a.asset_id], ["type", (a) => a.asset_type.replaceAll("_", " ")], ["model", (a) => a.model],
      ["installed", (a) => Eco.date(a.install_ms)], ["rated life", (a) => Math.round(a.rated_life_days / 365.25) + " y"]], doc.bill_of_materials);
    Eco.table($("orders"), [["order", (o) => o.order_id], ["asset", (o) => o.asset_type.replaceAll("_", " ")], ["kind", (o) => o.kind],
      ["opened", (o) => Eco.date(o.opened_ms)], ["status", (o) => Eco.pill(o.status)]], doc.work_orders);
    if (!doc.work_orders.length) $("orders").textContent = "none";
    Eco.table($("alerts"), [["metric", (a) => a.metric], ["since", (a) => Eco.time(a.started_at)], ["severity", (a) => Eco.pill(a.severity)],
      ["anomalies", (a) => a.anomalies]], doc.alerts);
    if (!doc.alerts.length) $("alerts").textContent = "none";
    Eco.table($("predictions"), [["asset", (p) => p.asset_id], ["P(fail)", (p) => Eco.fmt(p.p_fail, 2)],
      ["within", (p) => Eco.fmt(p.horizon_hours, 0) + " h"], ["RUL", (p) => Eco.fmt(p.rul_hours, 0) + " h"],
      ["signals", (p) => (p.top_signals || []).slice(0, 2).join(", ")], ["model", (p) => p.model]], doc.predictions);
    if (!doc.predictions.length) $("predictions").textContent = "none yet";
  }

  async function refresh() {
    try {
      const doc = await Eco.api("/twins/" + encodeURIComponent(homeId));
      $("address").textContent = doc.address;
      $("status").replaceChildren(Eco.pill(doc.status));
      $("seen").textContent = doc.last_ts ? "last reading " + new Date(doc.last_ts).toISOString().slice(11, 19) + " UTC" : "no reading yet";
      schematic(doc);
      registerData(doc);
    } catch (e) {
      if (e.status === 404) $("title").textContent = homeId + " — unknown home";
    }
  }

  async function charts() {
    try {
      const body = await Eco.api(`/twins/${encodeURIComponent(homeId)}/recent?hours=3`);
      const s = body.series, host = $("charts");
      host.replaceChildren();
      METRICS.forEach(([m, label, unit]) => {
        if (!s[m] || s[m].every((v) => v === null)) return;
        const c = Eco.el("div", { class: "c", "data-metric": m });
        c.appendChild(Eco.el("h3", {}, label));
        const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
        svg.setAttribute("class", "chart");
        c.appendChild(svg); host.appendChild(c);
        const markers = body.anomalies.filter((a) => a.metric === m).map((a) => ({ t: a.ts, y: a.value, label: `${a.detector} score ${a.score.toFixed(3)}` }));
        Charts.line(svg, { unit, height: 150, series: [{ name: label, color: "#2b6cb0", points: s.t.map((t, i) => [t, s[m][i]]) }], markers });
      });
      if (!host.children.length) host.textContent = "no readings in the warehouse yet";
    } catch (e) { /* retried on the next tick */ }
  }

  async function whatIfForm() {
    const spec = await (await fetch("/openapi.json")).json();
    const props = spec.components.schemas.WhatIfRequest.properties;
    const form = $("whatif");
    const pick = ["u_value_w_m2k", "cop", "setpoint_c", "night_setback_c", "pv_kwp", "pump_w", "horizon_days", "price_eur_kwh"];
    pick.forEach((name) => {
      const p = props[name], range = (p.anyOf || [p])[0];
      const label = Eco.el("label", {}, (p.description || name));
      const input = Eco.el("input", { name, type: "number", step: "any", min: range.minimum, max: range.maximum,
        placeholder: name === "horizon_days" ? "30" : "unchanged" });
      label.appendChild(input); form.appendChild(label);
    });
    const btn = Eco.el("button", { type: "submit", id: "run-whatif" }, "Simulate");
    form.appendChild(btn);
    form.onsubmit = async (e) => {
      e.preventDefault();
      const body = {};
      new FormData(form).forEach((v, k) => { if (v !== "") body[k] = Number(v); });
      $("whatif-note").textContent = "calibrating to this home's last days and simulating…";
      try {
        const r = await Eco.api(`/twins/${encodeURIComponent(homeId)}/what-if`, { method: "POST",
          headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        drawWhatIf(r);
      } catch (err) {
        $("whatif-note").replaceChildren(Eco.el("span", { class: "error" }, (err.body && err.body.field ? err.body.field + ": " : "") + err.message));
      }
    };
  }

  function drawWhatIf(r) {
    const day = 86400000, b = r.baseline, s = r.scenario, cal = r.calibration;
    $("whatif-note").textContent = `Calibrated on ${Math.round(cal.window_hours)} h of this home's telemetry: simulated energy ` +
      `${Eco.fmt(cal.energy_error_pct, 1)} % from observed (hourly CV(RMSE) ${Eco.fmt(cal.cv_rmse_hourly_pct, 0)} %); ` +
      `weather: ${r.weather === "climate" ? "the region's climate" : "given"}.`;
    Charts.line($("whatif-chart"), { unit: "kWh/day", zero: true, height: 220, xFormat: (t) => Eco.date(t).slice(5),
      series: [{ name: "baseline", color: "#718096", points: b.daily_kwh.map((v, i) => [r.start_ms + i * day, v]) },
               { name: "scenario", color: "#2e9d5b", points: s.daily_kwh.map((v, i) => [r.start_ms + i * day, v]) }] });
    const rows = [["energy, kWh", "kwh", 0], ["cost, EUR", "cost_eur", 0], ["CO₂, kg", "co2_kg", 0], ["peak, kW", "peak_kw", 2],
      ["hours below comfort", "hours_below_comfort", 0], ["PV export, kWh", "kwh_export", 0]];
    Eco.table($("whatif-table"), [["", (x) => x[0]], ["baseline", (x) => Eco.fmt(b[x[1]], x[2])], ["scenario", (x) => Eco.fmt(s[x[1]], x[2])],
      ["change", (x) => Eco.fmt(s[x[1]] - b[x[1]], x[2])]], rows);
    $("whatif-table").firstChild.classList.add("summary");
    $("whatif-table").setAttribute("data-done", "1");
  }

  refresh(); charts(); whatIfForm();
  setInterval(refresh, 2000);
  setInterval(charts, 30000);
})();
