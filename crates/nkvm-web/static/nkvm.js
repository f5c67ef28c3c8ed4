// nkvm's small additions to htmx, as a file because the Content-Security-Policy allows no
// inline script. Every page works without it; with it:
// - Live streams (`sse-connect`) run only while the tab is visible. Browsers open at most six
//   HTTP/1.1 connections per site, so a stream held by every hidden tab would soon leave none
//   for loading pages. A hidden tab parks its stream; when shown again it opens a new one,
//   whose first event brings the whole list up to date.
// - "Back up selected" is disabled while no volume is ticked.
(function () {
  'use strict';

  function setStreams(visible) {
    var from = visible ? 'data-sse-parked' : 'sse-connect';
    var to = visible ? 'sse-connect' : 'data-sse-parked';
    document.querySelectorAll('[' + from + ']').forEach(function (el) {
      var copy = el.cloneNode(true);
      copy.setAttribute(to, el.getAttribute(from));
      copy.removeAttribute(from);
      // htmx cleans the old element up (its EventSource is closed) and processes the new
      // one (which opens a stream when it carries `sse-connect`).
      htmx.swap(el, copy.outerHTML, { swapStyle: 'outerHTML' });
    });
  }

  function syncBackupButton() {
    var button = document.getElementById('backup-selected');
    if (!button) {
      return;
    }
    button.disabled = !document.querySelector('input.pvc-select:checked');
    button.title = button.disabled ? 'Tick at least one volume first' : '';
  }

  document.addEventListener('visibilitychange', function () {
    setStreams(document.visibilityState !== 'hidden');
  });
  document.addEventListener('change', function (e) {
    if (e.target.matches && e.target.matches('input.pvc-select')) {
      syncBackupButton();
    }
  });
  document.addEventListener('htmx:afterSettle', syncBackupButton);
  document.addEventListener('DOMContentLoaded', function () {
    syncBackupButton();
    if (document.visibilityState === 'hidden') {
      setStreams(false);
    }
  });
})();
