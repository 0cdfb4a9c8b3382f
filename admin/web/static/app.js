// keygate dashboard: copy, reveal and the dialogs. Every page works
// without this script; it only makes those actions quicker.
(function () {
  'use strict';

  var $ = function (sel, root) { return (root || document).querySelector(sel); };
  var $$ = function (sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); };

  // The account switcher changes account as soon as one is picked.
  $$('select[data-autosubmit]').forEach(function (sel) {
    sel.addEventListener('change', function () { sel.form.submit(); });
    var btn = $('[data-autosubmit-button]', sel.form);
    if (btn) btn.hidden = true;
  });

  function say(id, text) {
    var status = $('[data-copy-status="' + id + '"]');
    if (!status) return;
    status.textContent = text;
    clearTimeout(status._t);
    status._t = setTimeout(function () { status.textContent = ''; }, 4000);
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {
      var ta = document.createElement('textarea');
      ta.value = text;
      ta.setAttribute('readonly', '');
      ta.className = 'offscreen';
      document.body.appendChild(ta);
      ta.select();
      var ok = false;
      try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
      ta.remove();
      if (ok) resolve(); else reject(new Error('copy failed'));
    });
  }

  function setRevealed(btn, input, on) {
    input.type = on ? 'text' : 'password';
    btn.setAttribute('aria-pressed', on ? 'true' : 'false');
    var label = $('[data-label]', btn);
    if (label) label.textContent = on ? 'Hide key' : 'Reveal key';
  }

  document.addEventListener('click', function (ev) {
    var copy = ev.target.closest('[data-copy]');
    if (copy) {
      var id = copy.getAttribute('data-copy');
      var input = document.getElementById(id);
      copyText(input.value).then(function () {
        say(id, 'Copied to the clipboard.');
      }, function () {
        var tog = $('[data-reveal-toggle="' + id + '"]');
        if (tog) setRevealed(tog, input, true);
        input.focus();
        input.select();
        say(id, 'Copying is blocked here: the key is selected, press Ctrl+C (⌘C) to copy it.');
      });
      return;
    }
    var toggle = ev.target.closest('[data-reveal-toggle]');
    if (toggle) {
      var target = document.getElementById(toggle.getAttribute('data-reveal-toggle'));
      setRevealed(toggle, target, target.type === 'password');
      return;
    }
    var close = ev.target.closest('[data-close]');
    if (close) {
      close.closest('dialog').close();
      return;
    }
    // A click outside an open Actions menu closes it.
    $$('details.menu[open]').forEach(function (d) {
      if (!d.contains(ev.target)) d.open = false;
    });
  });

  // One Actions menu open at a time; Escape closes it.
  $$('details.menu').forEach(function (d) {
    d.addEventListener('toggle', function () {
      if (!d.open) return;
      $$('details.menu[open]').forEach(function (o) { if (o !== d) o.open = false; });
      var first = $('.menu-item', d);
      if (first) first.focus();
    });
    d.addEventListener('keydown', function (ev) {
      if (ev.key === 'Escape' && d.open) {
        d.open = false;
        $('summary', d).focus();
      }
    });
  });

  function fill(dialog, name, value) {
    $$('[data-field="' + name + '"]', dialog).forEach(function (el) {
      if ('value' in el && el.tagName === 'INPUT') el.value = value; else el.textContent = value;
    });
  }

  // Reveal key (the eye icon): the JSON API, shown in a dialog. Without
  // the dialog the form posts and the server shows the key on a page.
  var reveal = document.getElementById('reveal-dialog');
  if (reveal && typeof reveal.showModal === 'function' && window.fetch) {
    var value = document.getElementById('reveal-value');
    var toggle = $('[data-reveal-toggle]', reveal);
    $$('form[data-reveal]').forEach(function (form) {
      form.addEventListener('submit', function (ev) {
        ev.preventDefault();
        var row = form.closest('tr');
        var data = new FormData(form);
        var url = 'api/accounts/' + encodeURIComponent(data.get('account')) +
          '/keys/' + encodeURIComponent(data.get('key')) + '/reveal';
        fill(reveal, 'name', row.getAttribute('data-key-name'));
        fill(reveal, 'error', '');
        value.value = '';
        setRevealed(toggle, value, false);
        fetch(url, {
          method: 'POST',
          credentials: 'same-origin',
          cache: 'no-store',
          headers: { 'Accept': 'application/json', 'X-CSRF-Token': data.get('csrf_token') }
        }).then(function (res) {
          return res.json().then(function (body) {
            if (!res.ok) throw new Error(body.error || res.statusText);
            return body;
          });
        }).then(function (body) {
          value.value = body.key;
          setRevealed(toggle, value, true);
          reveal.showModal();
          value.focus();
          value.select();
        }).catch(function (err) {
          fill(reveal, 'error', 'The key could not be revealed: ' + err.message);
          reveal.showModal();
        });
      });
    });
    // The value leaves the page when the dialog closes.
    reveal.addEventListener('close', function () {
      value.value = '';
      setRevealed(toggle, value, false);
    });
  }

  // Delete: the Actions menu's Delete opens the confirmation dialog, where
  // the key's name must be typed. The server checks the name again.
  var del = document.getElementById('delete-dialog');
  if (del && typeof del.showModal === 'function') {
    var confirmInput = document.getElementById('delete-confirm');
    var submit = $('[data-delete-submit]', del);
    var expected = '';
    var sync = function () { submit.disabled = confirmInput.value !== expected; };
    confirmInput.addEventListener('input', sync);
    $$('a[data-delete]').forEach(function (link) {
      link.addEventListener('click', function (ev) {
        ev.preventDefault();
        var row = link.closest('tr');
        var menu = link.closest('details');
        if (menu) menu.open = false;
        expected = row.getAttribute('data-key-name');
        fill(del, 'name', expected);
        fill(del, 'key', row.getAttribute('data-key-id'));
        showEvidence(row.getAttribute('data-key-id'));
        confirmInput.value = '';
        sync();
        del.showModal();
        confirmInput.focus();
      });
    });
    // The evidence of the key's use, from the JSON API: the same sentence
    // as the delete page's. A late answer for a key no longer in the
    // dialog is dropped.
    var asked = 0;
    var showEvidence = function (key) {
      var mine = ++asked;
      var account = $('input[name="account"]', del).value;
      fill(del, 'evidence', 'Reading how this key has been used…');
      if (!window.fetch) { fill(del, 'evidence', ''); return; }
      fetch('api/accounts/' + encodeURIComponent(account) + '/keys/' + encodeURIComponent(key), {
        credentials: 'same-origin',
        cache: 'no-store',
        headers: { 'Accept': 'application/json' }
      }).then(function (res) {
        return res.json().then(function (body) {
          if (!res.ok) throw new Error(body.error || res.statusText);
          return body;
        });
      }).then(function (body) {
        if (mine === asked) fill(del, 'evidence', body.evidence);
      }).catch(function (err) {
        if (mine === asked) fill(del, 'evidence', 'How this key has been used could not be read: ' + err.message);
      });
    };
  }

  // The delete page without the dialog: enable Delete on a match too.
  var page = $('input[data-expect]');
  if (page) {
    var btn = $('button[type="submit"]', page.form);
    var check = function () { btn.disabled = page.value !== page.getAttribute('data-expect'); };
    page.addEventListener('input', check);
    check();
  }
})();
