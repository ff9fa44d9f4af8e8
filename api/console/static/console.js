// agentmeter console: draws the spend chart (uPlot), refreshes the page's live part by polling
// its server-rendered fragment, and lifts pauses. No build step: plain browser JavaScript.
(function () {
  'use strict';
  var body = document.body;
  var live = document.getElementById('live');
  var refreshMs = Number(body.getAttribute('data-refresh-ms')) || 5000;
  var plot = null;
  var busy = false;

  function money(decimal, currency) {
    // Intl formats a decimal string exactly: the amount never passes through a float here.
    return new Intl.NumberFormat('en-US', { style: 'currency', currency: currency, maximumFractionDigits: 9 }).format(decimal);
  }

  function drawChart() {
    var holder = document.getElementById('chart');
    var dataNode = document.getElementById('chart-data');
    if (plot) { plot.destroy(); plot = null; }
    if (!holder || !dataNode || typeof uPlot === 'undefined') return;
    var d = JSON.parse(dataNode.textContent);
    var exact = [null, d.revenue, d.cogs, d.margin];
    // Plotted positions are floats (pixels); the legend prints the exact amounts.
    var legend = function (u, v, si, i) { return i == null ? '' : money(exact[si][i], d.currency); };
    plot = new uPlot({
      width: Math.max(320, holder.clientWidth || 800),
      height: 240,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'); },
      series: [
        {},
        { label: 'revenue', stroke: '#2463eb', width: 2, value: legend },
        { label: 'COGS', stroke: '#d97706', width: 2, value: legend },
        { label: 'margin', stroke: '#059669', width: 2, value: legend },
      ],
      axes: [{}, { values: function (u, ticks) { return ticks.map(function (t) { return money(String(t), d.currency); }); }, size: 80 }],
    }, [d.times, d.revenue.map(Number), d.cogs.map(Number), d.margin.map(Number)], holder);
  }

  var again = false;

  function refresh() {
    var url = body.getAttribute('data-refresh-url');
    if (!url || document.hidden) return Promise.resolve();
    // One request at a time; asked again meanwhile (after a lift), it runs once more when this one is done.
    if (busy) { again = true; return Promise.resolve(); }
    busy = true;
    return fetch(url, { credentials: 'same-origin', headers: { accept: 'text/html' } })
      .then(function (response) {
        if (response.status === 401) { window.location.href = '/console/login'; return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (text) {
        if (text !== null && text !== undefined) { live.innerHTML = text; drawChart(); }
      })
      .catch(function () { /* the next poll tries again */ })
      .finally(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  document.addEventListener('click', function (event) {
    var button = event.target.closest && event.target.closest('button.lift');
    if (!button) return;
    button.disabled = true;
    button.textContent = 'Lifting...';
    fetch('/console/api/pauses/lift', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ cap_id: button.dataset.cap, scope_id: button.dataset.scope, period_key: button.dataset.period }),
    })
      .then(function (response) {
        return response.json().then(function (reply) {
          if (!response.ok) throw new Error((reply.error && reply.error.message) || ('HTTP ' + response.status));
          button.textContent = 'Lifted';
          button.setAttribute('data-lifted', 'true');
          return refresh();
        });
      })
      .catch(function (error) {
        button.disabled = false;
        button.textContent = 'Lift pause (failed: ' + error.message + ')';
      });
  });

  drawChart();
  setInterval(refresh, refreshMs);
  window.addEventListener('resize', drawChart);
  window.agentmeterConsole = { refresh: refresh };
})();
