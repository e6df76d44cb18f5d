// The city page: live figures from /city/stream (server-sent events), energy by region
// from the warehouse every minute, the map of homes coloured by status.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const COLORS = { online: "#2e9d5b", alert: "#d64541", silent: "#9aa5b1" };
  const PALETTE = ["#2b6cb0", "#d69e2e", "#38a169", "#805ad5", "#dd6b20", "#319795", "#e53e3e"];
  const rates = [];
  let mapDrawn = null;

  if (!Eco.token()) Eco.askToken("Open the link `make demo` prints, or paste the read token.");

  $("search").onsubmit = async (e) => {
    e.preventDefault();
    const q = $("q").value.trim();
    if (!q) return;
    const r = await Eco.api("/twins?limit=1&q=" + encodeURIComponent(q));
    if (r.items.length) location.href = "/homes/" + r.items[0].home_id;
  };

  function drawMap(homes) {  // [id, lat, lon, status, region]
    const svg = $("map"), W = svg.clientWidth || 700, H = 420;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const lats = homes.map((h) => h[1]), lons = homes.map((h) => h[2]);
    const la0 = Math.min(...lats) - 0.01, la1 = Math.max(...lats) + 0.01, lo0 = Math.min(...lons) - 0.01, lo1 = Math.max(...lons) + 0.01;
    const sx = (lon) => 10 + (lon - lo0) / (lo1 - lo0) * (W - 20), sy = (lat) => 10 + (1 - (lat - la0) / (la1 - la0)) * (H - 20);
    if (!mapDrawn || mapDrawn.n !== homes.length) {
      svg.replaceChildren();
      const regions = {};
      homes.forEach((h) => { (regions[h[4]] = regions[h[4]] || []).push(h); });
      for (const [name, hs] of Object.entries(regions)) {
        const a = Math.min(...hs.map((h) => h[1])), b = Math.max(...hs.map((h) => h[1]));
        const c = Math.min(...hs.map((h) => h[2])), d = Math.max(...hs.map((h) => h[2]));
        svg.appendChild(Charts.node("rect", { x: sx(c) - 6, y: sy(b) - 6, width: sx(d) - sx(c) + 12, height: sy(a) - sy(b) + 12, rx: 8, class: "region" }));
        svg.appendChild(Charts.node("text", { x: sx(c), y: sy(b) - 10, class: "rname" }, name));
      }
      const dots = {};
      homes.forEach((h) => {
        const c = Charts.node("circle", { cx: sx(h[2]), cy: sy(h[1]), r: homes.length > 3000 ? 1.6 : 3, class: "home" });
        c.appendChild(Charts.node("title", {}, h[0]));
        c.addEventListener("click", () => { location.href = "/homes/" + h[0]; });
        svg.appendChild(c);
        dots[h[0]] = c;
      });
      mapDrawn = { n: homes.length, dots };
    }
    homes.forEach((h) => mapDrawn.dots[h[0]].setAttribute("fill", COLORS[h[3]] || "#999"));
  }

  function onCity(c) {
    $("clock").textContent = "event time " + new Date(c.now_ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
    $("k-rate").textContent = Eco.fmt(c.readings_per_s, 0);
    $("k-online").textContent = c.total.online - c.total.in_alert;
    $("k-silent").textContent = c.total.silent;
    $("k-alert").textContent = c.total.in_alert;
    $("k-anom").textContent = c.total.anomalies_recent;
    $("k-wo").textContent = c.total.open_work_orders;
    const names = Object.keys(c.regions).sort();
    drawMap(c.homes);
    Charts.bars($("by-region"), {
      groups: names, height: 150,
      series: [{ name: "anomalies (5 min)", color: "#dd6b20", values: names.map((n) => c.regions[n].anomalies_recent) },
               { name: "homes in alert", color: "#d64541", values: names.map((n) => c.regions[n].in_alert) }],
    });
    Eco.table($("region-table"), [["region", (r) => r[0]], ["homes", (r) => r[1].homes], ["online", (r) => r[1].online],
      ["silent", (r) => r[1].silent], ["in alert", (r) => r[1].in_alert], ["power kW", (r) => Eco.fmt(r[1].power_kw, 0)],
      ["open WOs", (r) => r[1].open_work_orders]], names.map((n) => [n, c.regions[n]]));
    rates.push([c.now_ms, c.readings_per_s]);
    if (rates.length > 300) rates.shift();
    Charts.line($("rate"), { series: [{ name: "readings/s", color: "#2b6cb0", points: rates }], height: 130, zero: true,
      xFormat: (t) => new Date(t).toISOString().slice(11, 19) });
    Eco.table($("orders"), [["opened", (o) => Eco.date(o.opened_ms)], ["home", (o) => { const a = Eco.el("a", { href: "/homes/" + o.home_id }, o.home_id); return a; }],
      ["asset", (o) => o.asset_type.replace("_", " ")], ["kind", (o) => o.kind]], c.latest_open_orders);
  }

  async function energy() {
    try {
      const body = await Eco.api("/city/energy?hours=24");
      const by = {};
      body.rows.forEach((r) => { (by[r.region] = by[r.region] || []).push([r.t, r.energy_kwh]); });
      Charts.line($("energy"), { unit: "kWh", zero: true, height: 200,
        series: Object.keys(by).sort().map((name, i) => ({ name, color: PALETTE[i % PALETTE.length], points: by[name].sort((a, b) => a[0] - b[0]) })) });
    } catch (e) { /* shown as "no data yet" until the warehouse has rows */ }
  }

  Eco.stream("/city/stream", (name, data) => { if (name === "city") onCity(data); });
  energy();
  setInterval(energy, 60000);
})();
