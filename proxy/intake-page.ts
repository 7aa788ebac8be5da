/**
 * The intake's page (GET <gateway URL>/cannes-keys/): the owner pastes a key in the browser, as
 * Cannes' users do. Same origin as the intake; it shows booleans only and never reads a key back.
 */
export const INTAKE_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Cannes: hand a key to this server</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}
label{display:block;margin:.6rem 0 .2rem}input,select,button{font:inherit;padding:.3rem}
#routes li{font-family:monospace}</style></head>
<body>
<h1>Hand an LLM key to this server</h1>
<p>The key goes from this browser to the server over your tailnet only. The server answers yes or no, never the key.</p>
<ul id="routes"></ul>
<form id="set">
<label for="route">ModelKey</label><select id="route" name="route"></select>
<label for="key">Key</label><input id="key" name="key" type="password" autocomplete="off" size="50">
<p><button id="save" type="submit">Save the key on the server</button></p>
</form>
<p id="result" role="status"></p>
<script>
const base = location.pathname.endsWith('/') ? location.pathname : location.pathname + '/';
const $ = (id) => document.getElementById(id);
async function load() {
  const r = await fetch(base + 'keys', { cache: 'no-store' });
  const j = await r.json();
  if (!r.ok) { $('result').textContent = j.message || 'refused'; return; }
  $('routes').textContent = ''; $('route').textContent = '';
  for (const [id, has] of Object.entries(j.routes)) {
    const li = document.createElement('li'); li.dataset.route = id; li.dataset.hasKey = String(has);
    li.textContent = id + ': ' + (has ? 'has a key' : 'no key yet'); $('routes').append(li);
    const o = document.createElement('option'); o.value = id; o.textContent = id; $('route').append(o);
  }
}
$('set').addEventListener('submit', async (e) => {
  e.preventDefault();
  const key = $('key').value.trim(); $('key').value = '';
  const r = await fetch(base + 'keys/' + encodeURIComponent($('route').value), {
    method: 'PUT', headers: { 'content-type': 'text/plain', 'cannes-intake': '1' }, body: key });
  const j = await r.json();
  $('result').textContent = r.ok ? 'saved: the server has a key for ' + j.route : (j.message || 'refused');
  $('result').dataset.ok = String(r.ok);
  await load();
});
load();
</script>
</body></html>
`;
