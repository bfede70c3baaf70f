// The control tower's plots: Chart.js over the JSON the page carries (no inline script).
(function () {
  "use strict";
  var node = document.getElementById("charts");
  if (!node || typeof Chart === "undefined") { return; }
  var data = JSON.parse(node.textContent);
  var colors = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
  Chart.defaults.animation = false;  // plots are read, not watched; and screenshots are stable
  Chart.defaults.font.size = 11;

  function day(ms) { return new Date(ms).toISOString().slice(0, 10); }

  function timeChart(id, series, options) {
    var canvas = document.getElementById(id);
    if (!canvas) { return; }
    var names = Object.keys(series);
    var datasets = names.map(function (name, i) {
      return {
        label: name,
        data: series[name].map(function (p) { return { x: Date.parse(p[0]), y: p[1] }; }),
        borderColor: colors[i % colors.length],
        backgroundColor: colors[i % colors.length],
        borderDash: name === "at test" ? [6, 4] : (name === "oracle" ? [2, 3] : []),
        pointRadius: 2,
        tension: 0,
      };
    });
    new Chart(canvas, {
      type: "line",
      data: { datasets: datasets },
      options: {
        maintainAspectRatio: false,
        parsing: false,
        scales: {
          x: { type: "linear", ticks: { callback: function (v) { return day(v); }, maxTicksLimit: 8 } },
          y: { title: { display: !!options.y, text: options.y || "" } },
        },
        plugins: {
          tooltip: { callbacks: { title: function (items) { return day(items[0].parsed.x); } } },
        },
      },
    });
  }

  var features = data.drift_features || [];
  var canvas = document.getElementById("chart-drift-features");
  if (canvas && features.length) {
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: features.map(function (f) { return f.feature; }),
        datasets: [
          {
            label: "drift score",
            data: features.map(function (f) { return f.score; }),
            backgroundColor: features.map(function (f) { return f.drifted ? "#dc2626" : "#2563eb"; }),
          },
          {
            label: "threshold (or noise floor)",
            data: features.map(function (f) { return f.threshold; }),
            type: "line",
            indexAxis: "y",
            showLine: false,
            pointStyle: "line",
            rotation: 90,
            pointRadius: 8,
            borderColor: "#111827",
            backgroundColor: "#111827",
          },
        ],
      },
      options: { indexAxis: "y", maintainAspectRatio: false, scales: { x: { beginAtZero: true } } },
    });
  }
  timeChart("chart-drift-time", data.drift_series || {}, { y: "score / share" });
  timeChart("chart-performance", data.performance_series || {}, {
    y: (data.performance_metric || "") + (data.higher_is_better ? " (higher is better)" : " (lower is better)"),
  });
})();
