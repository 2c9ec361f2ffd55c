// KAP Bridge admin console: the only script. It polls the progress of a
// long action (retry all) and updates the page; everything else is plain
// HTML forms, so the console works without it.
(function () {
  'use strict';
  function poll(el) {
    var url = el.getAttribute('data-status');
    var bar = document.getElementById('progress');
    function tick() {
      fetch(url, { credentials: 'same-origin', cache: 'no-store' })
        .then(function (r) { return r.json(); })
        .then(function (j) {
          bar.max = Math.max(j.total, 1);
          bar.value = j.done;
          bar.textContent = j.done + ' of ' + j.total;
          document.getElementById('job-done').textContent = j.done;
          document.getElementById('job-total').textContent = j.total;
          document.getElementById('job-state').textContent = j.state + (j.error ? ': ' + j.error : '');
          if (j.state === 'running') { setTimeout(tick, 500); }
        })
        .catch(function () { setTimeout(tick, 2000); });
    }
    tick();
  }
  document.addEventListener('DOMContentLoaded', function () {
    var job = document.getElementById('job');
    if (job) { poll(job); }
    var main = document.getElementById('main');
    if (main && location.hash === '') { /* keep focus order natural */ }
  });
})();
