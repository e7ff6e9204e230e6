/// The viewer page the cloud serves (`trav cloud --web-port`): a form for the camera's UID and password, a canvas,
/// and one script from the page's own origin (``script``: ``BrowserViewerScript`` and the page's signalling), so a
/// Content-Security-Policy with `script-src 'self'` and no inline script holds.
///
/// ```
///  connect ─► wss://<cloud>/signal: watch{uid} ─► ice{requestID, iceServers}
///          ─► travWatch: offer ─► offer{sdp, answerKey} ─► challenge ─► travProve ─► proof{sealed}
///          ─► answer{sealed}: opened with the answer key (HPKE), its SDP checked by travCheckAnswer ─► video
///          ─► report{decoded, path, firstFrameMs, phases, …} to the cloud (after `report` frames, or on failure)
/// ```
///
/// The fragment `#uid=…&password=…` fills the form and connects at once (the fragment never reaches a server);
/// `&report=N` sets how many decoded frames the page waits for before it reports (30 by default), `&press=MS`
/// connects MS milliseconds after the page loaded instead (as a person who typed). The page opens its signalling
/// WebSocket as it loads, so connecting does not wait for that socket's TCP, TLS and upgrade round trips.
public enum BrowserViewerPage {
    /// `GET /`.
    public static let html = #"""
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>trav viewer</title>
        <meta name="viewport" content="width=device-width, initial-scale=1"></head>
        <body>
        <h1>trav viewer</h1>
        <form id="watch" autocomplete="off">
        <label>Camera UID <input id="uid" name="uid" size="28" placeholder="TRAV-XXXX-XXXX-XXXX-XXXX" required></label>
        <label>Password <input id="password" name="password" type="password" required></label>
        <button id="connect" type="submit">Connect</button>
        </form>
        <p id="status" role="status">Not connected.</p>
        <canvas id="video" width="16" height="16"></canvas>
        <p id="path"></p>
        <script src="/viewer.js"></script>
        </body></html>
        """#

    /// `GET /viewer.js`: the viewer script and the page's signalling through the cloud.
    public static let script = BrowserViewerScript.source + #"""

        // A WebSocket to the cloud's signalling, and a promise that it opened.
        function travOpenSignalling() {
          const ws = new WebSocket('wss://' + location.host + '/signal');
          const opened = new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = () => fail(new Error('signal: cannot reach the cloud')); });
          opened.catch(() => {});
          return {ws, opened};
        }

        // The page: signalling over the cloud's WebSocket, the UID and password from the form (or the fragment).
        // `started` is when connect was pressed; `phases` gets each step's milliseconds from then (travMark).
        // `socket` is a travOpenSignalling() opened beforehand (a new one when it is missing or closed).
        async function travCloudWatch({uid: typed, password, canvas, onStatus, started = performance.now(), phases = {}, socket = null}) {
          const uid = travCanonicalUID(typed);
          if (!uid) throw new Error('uid: not a UID');
          const mark = name => travMark(phases, name, started);
          const {ws, opened} = socket && socket.ws.readyState <= WebSocket.OPEN ? socket : travOpenSignalling();
          const inbox = [];
          let waiter = null, closed = false;
          const deliver = m => { if (waiter) { const w = waiter; waiter = null; w(m); } else inbox.push(m); };
          ws.onmessage = e => { try { deliver(JSON.parse(e.data)); } catch (_) { deliver({type: 'error', code: 'bad-message', message: ''}); } };
          ws.onclose = e => { closed = true; deliver({type: 'closed', code: e.code, reason: e.reason}); };
          await opened;
          mark('signalling');
          const send = m => ws.send(JSON.stringify(m));
          const next = () => inbox.length ? Promise.resolve(inbox.shift()) : closed ? Promise.resolve({type: 'closed'}) : new Promise(r => { waiter = r; });
          const expect = async type => {
            const m = await next();
            if (m.type === type) return m;
            if (m.type === 'refused') throw new Error('refused: ' + m.reason);
            if (m.type === 'error') throw new Error('cloud: ' + m.code + ': ' + m.message);
            throw new Error('signal: ' + (m.type === 'closed' ? 'closed ' + (m.code || '') : 'unexpected ' + m.type));
          };
          const report = fields => { if (!closed) send({type: 'report', report: fields}); };
          try {
            send({type: 'watch', uid});
            const ice = await expect('ice');
            mark('servers');
            const viewer = await crypto.subtle.generateKey({name: 'Ed25519'}, true, ['sign', 'verify']);
            const answerPair = await crypto.subtle.generateKey({name: 'X25519'}, true, ['deriveBits']);
            const answerKey = new Uint8Array(await crypto.subtle.exportKey('raw', answerPair.publicKey));
            const b = travBytes, zero = new Uint8Array([0]);
            const stats = await travWatch({uid, canvas, onStatus, iceServers: ice.iceServers, started, phases, signal: async offer => {
              send({type: 'offer', sdp: offer, answerKey: b.toBase64(answerKey)});
              const c = await expect('challenge');
              mark('challenge');
              onStatus('proving access');
              send({type: 'proof', sealed: await travProve({uid, requestID: ice.requestID, answerKey, challenge: c.challenge, password, viewer})});
              mark('proof');
              const a = await expect('answer');
              mark('sealed');
              const info = b.concat(b.utf8('trav/sealed-answer/v1'), zero, b.utf8(uid), zero, b.utf8(ice.requestID));
              const sealed = JSON.parse(new TextDecoder().decode(await travHPKEOpen(answerPair, info, a.sealed)));
              if (!sealed.offer || typeof sealed.offer.sessionDescription !== 'string') throw new Error('signal: the answer has no description');
              return sealed.offer.sessionDescription;
            }});
            return {stats, report};
          } catch (e) {
            e.report = report;
            throw e;
          }
        }

        // Distinct colours in a sample of the canvas: 1 for a blank one.
        function travCanvasColours(canvas) {
          const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data, colours = new Set();
          for (let i = 0; i < pixels.length; i += 4 * 61) colours.add(pixels[i] << 16 | pixels[i + 1] << 8 | pixels[i + 2]);
          return colours.size;
        }

        // The canvas as a 16 × 12 grid of cell means (RGB, row by row, base64 of 576 bytes): what it shows, in a
        // size a report carries; the same grid as ffmpeg's area scaling, so a test can compare it with the clip.
        function travCanvasThumbnail(canvas) {
          const {width, height} = canvas, pixels = canvas.getContext('2d').getImageData(0, 0, width, height).data;
          const sums = new Float64Array(16 * 12 * 3), counts = new Float64Array(16 * 12);
          for (let y = 0; y < height; y++) {
            const row = Math.floor(y * 12 / height) * 16;
            for (let x = 0; x < width; x++) {
              const cell = row + Math.floor(x * 16 / width), i = (y * width + x) * 4;
              sums[cell * 3] += pixels[i]; sums[cell * 3 + 1] += pixels[i + 1]; sums[cell * 3 + 2] += pixels[i + 2];
              counts[cell]++;
            }
          }
          const bytes = Uint8Array.from(sums, (sum, i) => Math.round(sum / Math.max(1, counts[Math.floor(i / 3)])));
          return btoa(String.fromCharCode(...bytes));
        }

        (() => {
          const $ = id => document.getElementById(id);
          if (!$('watch')) return;
          const status = text => { $('status').textContent = text; };
          // The signalling socket opens with the page, so pressing connect does not wait for TCP, TLS and the upgrade.
          let socket = travOpenSignalling();
          const connect = async () => {
            const started = performance.now(), phases = {};
            $('connect').disabled = true;
            status('connecting');
            const wanted = Number(new URLSearchParams(location.hash.slice(1)).get('report')) || 30;
            try {
              const preopened = socket;
              socket = null;
              const session = await travCloudWatch({uid: $('uid').value, password: $('password').value, canvas: $('video'), onStatus: status,
                                                    started, phases, socket: preopened});
              const {stats, report} = session;
              for (let i = 0; i < 300 && stats.decoded < wanted; i++) await new Promise(r => setTimeout(r, 100));
              status(stats.decoded > 0 ? 'watching' : 'no video');
              $('path').textContent = stats.path ? 'path: ' + stats.path + ' (' + stats.candidates + ')' : '';
              const canvas = $('video');
              report({decoded: stats.decoded, received: stats.received, path: stats.path, candidates: stats.candidates,
                      relayProtocol: stats.relayProtocol,
                      firstFrameMs: stats.firstFrameMs, phases, colours: travCanvasColours(canvas), thumbnail: travCanvasThumbnail(canvas),
                      shown: $('status').textContent});
            } catch (e) {
              status(e.message);
              $('connect').disabled = false;
              if (e.report) e.report({error: e.message, phases, shown: $('status').textContent});
            }
          };
          $('watch').addEventListener('submit', e => { e.preventDefault(); connect(); });
          const fragment = new URLSearchParams(location.hash.slice(1));
          if (fragment.get('uid')) {
            $('uid').value = fragment.get('uid');
            $('password').value = fragment.get('password') || '';
            // `press=MS`: connect that long after the page loaded, as a person who typed, instead of at once.
            setTimeout(connect, Math.min(Number(fragment.get('press')) || 0, 60000));
          }
        })();
        """#
}
