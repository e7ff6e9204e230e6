/// The viewer page the cloud serves (`trav cloud --web-port`): a form for the camera's UID and password, a canvas,
/// and one script from the page's own origin (``script``: ``BrowserViewerScript`` and the page's signalling), so a
/// Content-Security-Policy with `script-src 'self'` and no inline script holds.
///
/// ```
///  load    ─► wss://<cloud>/signal: prepare ─► ice{requestID, iceServers} ─► travPrepare: peer connection, offer
///  a UID typed ─► locate{uid} ─► located{uid, identityKey, deposit?}: the key's UID check (scrypt) starts while the person
///              types on; the deposit (a one-time key of the camera's, AccessDeposit) is kept for connect
///  connect ─► with a deposit: travProveDeposit ─► watch{uid, sdp, answerKey, deposited{sealingKey, sealed}}
///             (or, the camera not holding the key: challenge ─► travProve ─► proof{sealed})
///          ─► without: watch{uid, sdp, answerKey} ─► challenge ─► travProve (the UID check done) ─► proof{sealed}
///          ─► answer{sealed}: opened with the answer key (HPKE), its SDP checked by travCheckAnswer ─► video
///          ─► report{decoded, path, firstFrameMs, phases, deposited, …} to the cloud (after `report` frames, or on failure)
/// ```
///
/// The fragment `#uid=…&password=…` fills the form and connects at once (the fragment never reaches a server);
/// `&report=N` sets how many decoded frames the page waits for before it reports (30 by default), `&press=MS`
/// connects MS milliseconds after the page loaded instead (as a person who typed). The page prepares as it loads
/// (its signalling WebSocket, the ICE servers, its peer connection's candidates), so connecting waits for none of it.
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

        // A WebSocket to the cloud's signalling: `opened` (a promise), `send(message)`, `expect(...types)` (the next message,
        // which must be of one of those types; a refusal, an error or the socket closing throws), `isClosed()`. A `located`
        // message is not queued: the key it names (the one the camera registered, and its challenge will carry) has its UID
        // check started at once, so travProve finds it done; at most 8 keys per page. `locate(uid)` asks for it (once per
        // UID, and never after `watch(message)` sent the watch: the cloud closes a socket that does), and `located(uid)` is
        // the answer (with the deposit, if the cloud had one), waiting for it at most travLocateWaitMs (an unregistered UID
        // or a look-up over the cloud's limit gets no answer), or null.
        const travWarmed = new Set();
        const travLocateWaitMs = 500;
        function travOpenSignalling() {
          const ws = new WebSocket('wss://' + location.host + '/signal');
          const opened = new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = () => fail(new Error('signal: cannot reach the cloud')); });
          opened.catch(() => {});
          const inbox = [], asked = new Map();
          let waiter = null, closed = false, watched = false;
          const deliver = m => { if (waiter) { const w = waiter; waiter = null; w(m); } else inbox.push(m); };
          ws.onmessage = e => {
            let m;
            try { m = JSON.parse(e.data); } catch (_) { return deliver({type: 'error', code: 'bad-message', message: ''}); }
            if (m.type !== 'located') return deliver(m);
            if (typeof m.identityKey === 'string' && !travWarmed.has(m.identityKey) && travWarmed.size < 8) {
              travWarmed.add(m.identityKey);
              try { uidSymbols(travBytes.fromBase64(m.identityKey)).catch(() => {}); } catch (_) {}
            }
            if (typeof m.identityKey === 'string' && asked.has(m.uid)) asked.get(m.uid).answer(m);
          };
          ws.onclose = e => { closed = true; deliver({type: 'closed', code: e.code, reason: e.reason}); };
          const next = () => inbox.length ? Promise.resolve(inbox.shift()) : closed ? Promise.resolve({type: 'closed'}) : new Promise(r => { waiter = r; });
          const expect = async (...types) => {
            const m = await next();
            if (types.includes(m.type)) return m;
            if (m.type === 'refused') throw new Error('refused: ' + m.reason);
            if (m.type === 'error') throw new Error('cloud: ' + m.code + ': ' + m.message);
            throw new Error('signal: ' + (m.type === 'closed' ? 'closed ' + (m.code || '') : 'unexpected ' + m.type));
          };
          const locate = uid => {
            if (closed || watched || asked.has(uid)) return;
            let answer;
            const promise = new Promise(r => { answer = r; });
            asked.set(uid, {promise, answer});
            ws.send(JSON.stringify({type: 'locate', uid}));
          };
          const located = uid => asked.has(uid)
            ? Promise.race([asked.get(uid).promise, new Promise(r => setTimeout(() => r(null), travLocateWaitMs))]) : Promise.resolve(null);
          const watch = m => { watched = true; ws.send(JSON.stringify(m)); };
          return {ws, opened, send: m => ws.send(JSON.stringify(m)), expect, isClosed: () => closed, locate, located, watch};
        }

        // Everything that does not depend on which camera: the socket opened, the ICE servers asked for (`prepare`), this
        // introduction's keys made, the peer connection gathered (travPrepare). `times` holds when each step was done
        // (performance.now()), for the phases of a connect pressed later.
        // `onIce(signalling)` runs once the cloud named the ICE servers: from then on the page may `locate` a typed UID.
        async function travCloudPrepare(signalling = travOpenSignalling(), onIce = () => {}) {
          const times = {};
          await signalling.opened;
          times.signalling = performance.now();
          signalling.send({type: 'prepare'});
          const ice = await signalling.expect('ice');
          times.servers = performance.now();
          signalling.iced = true;
          onIce(signalling);
          const viewer = await crypto.subtle.generateKey({name: 'Ed25519'}, true, ['sign', 'verify']);
          const answerPair = await crypto.subtle.generateKey({name: 'X25519'}, true, ['deriveBits']);
          const answerKey = new Uint8Array(await crypto.subtle.exportKey('raw', answerPair.publicKey));
          const peer = await travPrepare({iceServers: ice.iceServers});
          times.offer = performance.now();
          return {signalling, requestID: ice.requestID, viewer, answerPair, answerKey, peer, times};
        }

        // Watches a camera through the cloud: `prepared` is a travCloudPrepare() result made beforehand (one is made now
        // when it is missing); pressing connect then costs one message (`watch`: the UID with the offer) before the
        // camera's challenge, or none when the page located the camera beforehand and the cloud handed it a deposit (the
        // proof then goes with `watch`). The UID and password come from the form (or the fragment). `started` is when
        // connect was pressed; `phases` gets each step's milliseconds from then (travMark; 0 for steps done before it).
        // The report says whether the deposit was taken (`deposited`: true; false after a live challenge).
        async function travCloudWatch({uid: typed, password, canvas, onStatus, started = performance.now(), phases = {}, prepared = null}) {
          const uid = travCanonicalUID(typed);
          if (!uid) throw new Error('uid: not a UID');
          const mark = name => travMark(phases, name, started);
          const ready = prepared || await travCloudPrepare();
          for (const [name, at] of Object.entries(ready.times)) if (!(name in phases)) phases[name] = Math.max(0, Math.round(at - started));
          const {signalling, requestID, viewer, answerPair, answerKey, peer} = ready;
          let deposited = null;
          const report = fields => { if (!signalling.isClosed()) signalling.send({type: 'report', report: {...fields, deposited}}); };
          try {
            const b = travBytes, zero = new Uint8Array([0]);
            const stats = await travWatch({uid, canvas, onStatus, started, phases, peer, signal: async offer => {
              // A deposit the cloud handed out with `located`: the proof goes with the watch. A bad one is left for the live path.
              const found = await signalling.located(uid);
              let proof = null;
              if (found && found.deposit) {
                try {
                  proof = await travProveDeposit({uid, requestID, answerKey, identityKey: b.fromBase64(found.identityKey), deposit: found.deposit,
                                                  password, viewer});
                } catch (_) { proof = null; }
              }
              signalling.watch({type: 'watch', uid, sdp: offer, answerKey: b.toBase64(answerKey), ...(proof ? {deposited: proof} : {})});
              deposited = proof !== null;
              if (deposited) mark('proof');
              let a = await signalling.expect('answer', 'challenge');
              if (a.type === 'challenge') {
                // No deposit, or the camera does not hold its key (it restarted): prove to the live challenge.
                deposited = false;
                delete phases.proof;
                mark('challenge');
                onStatus('proving access');
                signalling.send({type: 'proof', sealed: await travProve({uid, requestID, answerKey, challenge: a.challenge, password, viewer})});
                mark('proof');
                a = await signalling.expect('answer');
              }
              mark('sealed');
              const info = b.concat(b.utf8('trav/sealed-answer/v1'), zero, b.utf8(uid), zero, b.utf8(requestID));
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
          // The page prepares as it loads (travCloudPrepare), so pressing connect waits for none of the socket's, the ICE
          // servers' or the gathering's round trips. A preparation whose socket closed meanwhile (the cloud's idle limit)
          // is dropped, and a new one made when the person next edits the form or presses connect.
          let prepared = null, settled = null, signalling = null;
          // A whole UID in the form is looked up once per socket (the cloud answers at most 4), so its key's UID check
          // runs while the person types the password, and the deposit it brings is there when connect is pressed (a
          // connect pressed before the cloud named the ICE servers locates then, before its watch).
          const locate = () => {
            const uid = travCanonicalUID($('uid').value);
            if (!uid || !signalling || !signalling.iced) return;
            signalling.locate(uid);
          };
          const prepare = () => {
            if (prepared) return;
            signalling = travOpenSignalling();
            const attempt = travCloudPrepare(signalling, locate);
            prepared = attempt;
            attempt.then(p => { if (prepared === attempt) settled = p; }, () => { if (prepared === attempt) prepared = settled = null; });
          };
          const stale = () => {
            if (settled && settled.signalling.isClosed()) { settled.peer.pc.close(); prepared = settled = null; }
          };
          prepare();
          $('watch').addEventListener('input', () => { stale(); prepare(); locate(); });
          const connect = async () => {
            const started = performance.now(), phases = {};
            $('connect').disabled = true;
            status('connecting');
            const wanted = Number(new URLSearchParams(location.hash.slice(1)).get('report')) || 30;
            try {
              const mine = prepared;
              prepared = settled = null;
              let ready = mine ? await mine.catch(() => null) : null;
              if (ready && ready.signalling.isClosed()) { ready.peer.pc.close(); ready = null; }
              const session = await travCloudWatch({uid: $('uid').value, password: $('password').value, canvas: $('video'), onStatus: status,
                                                    started, phases, prepared: ready});
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
              // Each socket introduces once: the next attempt gets a fresh preparation.
              prepare();
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
