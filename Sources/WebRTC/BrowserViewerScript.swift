/// The browser's half of watching a camera: the script a viewer page loads (`viewer.js`, served from the page's
/// own origin so a Content-Security-Policy without inline script holds). It makes the peer connection, has
/// the offer carried by a signalling function the page supplies, checks the answer's ``IdentityBinding``
/// and that its key is the one behind the UID (the UID derivation of `DeviceID`, in the page's own code),
/// then decodes the camera's H.264 frames (`MediaPacket`s on the `trav.media` channel) with WebCodecs
/// into a canvas, asking for a keyframe on `trav.control` when the decoder fails.
///
/// ```
///  travPrepare({iceServers}) → RTCPeerConnection, control channel, offer (gathered; before the camera is named)
///  travProve(challenge) / travProveDeposit(deposit) → the access proof, sealed to the camera's one-time key (the page's signalling)
///  travWatch({uid, signal, canvas, onStatus, peer}) → signal(offer) → answer
///     → travCheckAnswer: Ed25519 over "trav/webrtc-identity/v1" ‖ 0 ‖ UID ‖ 0 ‖ fingerprints; UID = scrypt(key)
///     → setRemoteDescription → trav.media: 32-byte header ‖ Annex B frame → VideoDecoder → canvas
/// ```
public enum BrowserViewerScript {
    /// The script's text (JavaScript, no dependencies).
    public static let source = #"""
        'use strict';
        // The UID's 75 hash bits, as DeviceID derives them: scrypt(SHA-256("trav/device-id/v1" ‖ 0 ‖ key),
        // salt "trav/device-id/v1", N = 2^14, r = 8, p = 1), read 5 bits at a time, MSB first (RFC 7914).
        async function pbkdf2(pass, salt, length) {
          const k = await crypto.subtle.importKey('raw', pass, 'PBKDF2', false, ['deriveBits']);
          return new Uint8Array(await crypto.subtle.deriveBits({name: 'PBKDF2', hash: 'SHA-256', salt, iterations: 1}, k, length * 8));
        }
        // Salsa20/8 on the 16 words of B, in place (RFC 7914 §3), on locals: scrypt calls it a million times.
        function salsa8(B) {
          let x0 = B[0], x1 = B[1], x2 = B[2], x3 = B[3], x4 = B[4], x5 = B[5], x6 = B[6], x7 = B[7], x8 = B[8], x9 = B[9], x10 = B[10], x11 = B[11], x12 = B[12], x13 = B[13], x14 = B[14], x15 = B[15], u;
          for (let i = 0; i < 8; i += 2) {
            u = x0 + x12; x4 ^= u << 7 | u >>> 25; u = x4 + x0; x8 ^= u << 9 | u >>> 23; u = x8 + x4; x12 ^= u << 13 | u >>> 19; u = x12 + x8; x0 ^= u << 18 | u >>> 14;
            u = x5 + x1; x9 ^= u << 7 | u >>> 25; u = x9 + x5; x13 ^= u << 9 | u >>> 23; u = x13 + x9; x1 ^= u << 13 | u >>> 19; u = x1 + x13; x5 ^= u << 18 | u >>> 14;
            u = x10 + x6; x14 ^= u << 7 | u >>> 25; u = x14 + x10; x2 ^= u << 9 | u >>> 23; u = x2 + x14; x6 ^= u << 13 | u >>> 19; u = x6 + x2; x10 ^= u << 18 | u >>> 14;
            u = x15 + x11; x3 ^= u << 7 | u >>> 25; u = x3 + x15; x7 ^= u << 9 | u >>> 23; u = x7 + x3; x11 ^= u << 13 | u >>> 19; u = x11 + x7; x15 ^= u << 18 | u >>> 14;
            u = x0 + x3; x1 ^= u << 7 | u >>> 25; u = x1 + x0; x2 ^= u << 9 | u >>> 23; u = x2 + x1; x3 ^= u << 13 | u >>> 19; u = x3 + x2; x0 ^= u << 18 | u >>> 14;
            u = x5 + x4; x6 ^= u << 7 | u >>> 25; u = x6 + x5; x7 ^= u << 9 | u >>> 23; u = x7 + x6; x4 ^= u << 13 | u >>> 19; u = x4 + x7; x5 ^= u << 18 | u >>> 14;
            u = x10 + x9; x11 ^= u << 7 | u >>> 25; u = x11 + x10; x8 ^= u << 9 | u >>> 23; u = x8 + x11; x9 ^= u << 13 | u >>> 19; u = x9 + x8; x10 ^= u << 18 | u >>> 14;
            u = x15 + x14; x12 ^= u << 7 | u >>> 25; u = x12 + x15; x13 ^= u << 9 | u >>> 23; u = x13 + x12; x14 ^= u << 13 | u >>> 19; u = x14 + x13; x15 ^= u << 18 | u >>> 14;
          }
          B[0] = B[0] + x0 | 0; B[1] = B[1] + x1 | 0; B[2] = B[2] + x2 | 0; B[3] = B[3] + x3 | 0; B[4] = B[4] + x4 | 0; B[5] = B[5] + x5 | 0; B[6] = B[6] + x6 | 0; B[7] = B[7] + x7 | 0; B[8] = B[8] + x8 | 0; B[9] = B[9] + x9 | 0; B[10] = B[10] + x10 | 0; B[11] = B[11] + x11 | 0; B[12] = B[12] + x12 | 0; B[13] = B[13] + x13 | 0; B[14] = B[14] + x14 | 0; B[15] = B[15] + x15 | 0;
        }
        // BlockMix (RFC 7914 §4) of B's 2r blocks into B, each output block written straight to its final place in Y.
        function blockMix(B, Y, X, r) {
          const n = 2 * r;
          for (let j = 0; j < 16; j++) X[j] = B[(n - 1) * 16 + j];
          for (let i = 0; i < n; i++) {
            for (let j = 0; j < 16; j++) X[j] ^= B[i * 16 + j];
            salsa8(X);
            const o = ((i & 1) === 0 ? i >> 1 : r + (i >> 1)) * 16;
            for (let j = 0; j < 16; j++) Y[o + j] = X[j];
          }
          B.set(Y);
        }
        async function scrypt(pass, salt, N, r, length) {
          const words = 32 * r, bytes = await pbkdf2(pass, salt, 128 * r), view = new DataView(bytes.buffer);
          const B = new Int32Array(words), V = new Int32Array(words * N), Y = new Int32Array(words), X = new Int32Array(16);
          for (let i = 0; i < words; i++) B[i] = view.getInt32(i * 4, true);
          for (let i = 0; i < N; i++) { V.set(B, i * words); blockMix(B, Y, X, r); }
          for (let i = 0; i < N; i++) {
            const o = (B[(2 * r - 1) * 16] & (N - 1)) * words;
            for (let k = 0; k < words; k++) B[k] ^= V[o + k];
            blockMix(B, Y, X, r);
          }
          for (let i = 0; i < words; i++) view.setInt32(i * 4, B[i], true);
          return pbkdf2(pass, bytes, length);
        }
        // A key's symbols, once per page: the access challenge and the answer name the same key, and scrypt is slow in script.
        const travUIDCache = new Map();
        async function uidSymbols(key) {
          const id = String.fromCharCode(...key);
          if (!travUIDCache.has(id)) travUIDCache.set(id, uidSymbolsUncached(key));
          return travUIDCache.get(id);
        }
        async function uidSymbolsUncached(key) {
          const domain = new TextEncoder().encode('trav/device-id/v1');
          const hashed = new Uint8Array(await crypto.subtle.digest('SHA-256', new Uint8Array([...domain, 0, ...key])));
          const h = await scrypt(hashed, domain, 1 << 14, 8, 32), alphabet = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
          let s = '';
          for (let i = 0; i < 15; i++) {
            const bit = i * 5, byte = bit >> 3, w = (h[byte] << 8) | (h[byte + 1] ?? 0);
            s += alphabet[(w >> (11 - (bit & 7))) & 31];
          }
          return s;
        }

        // A typed UID in its canonical form, TRAV-XXXX-XXXX-XXXX-XXXX (case, dashes, the prefix and Crockford's
        // aliases O → 0, I/L → 1 as DeviceID parses them), or null when it has not 16 symbols of the alphabet.
        function travCanonicalUID(text) {
          let c = text.toUpperCase().replace(/[-\s]/g, '').replace(/O/g, '0').replace(/[IL]/g, '1');
          if (c.length === 20 && c.startsWith('TRAV')) c = c.slice(4);
          if (!/^[0-9A-HJKMNP-TV-Z]{16}$/.test(c)) return null;
          return 'TRAV-' + c.match(/.{4}/g).join('-');
        }

        const travBytes = {
          utf8: s => new TextEncoder().encode(s),
          concat: (...parts) => { const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0)); let o = 0; for (const p of parts) { out.set(p, o); o += p.length; } return out; },
          fromBase64: s => Uint8Array.from(atob(s), c => c.charCodeAt(0)),
          toBase64: b => btoa(String.fromCharCode(...b)),
        };

        // ChaCha20-Poly1305 (RFC 8439), which WebCrypto lacks: the AEAD of the HPKE suite native viewers use.
        function travChaChaBlock(key, counter, nonce) {
          const k = new DataView(key.buffer, key.byteOffset, 32), n = new DataView(nonce.buffer, nonce.byteOffset, 12);
          const s = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574,
            ...[0, 1, 2, 3, 4, 5, 6, 7].map(i => k.getUint32(4 * i, true)), counter, n.getUint32(0, true), n.getUint32(4, true), n.getUint32(8, true)]);
          const x = s.slice(), R = (v, c) => (v << c) | (v >>> (32 - c));
          const q = (a, b, c, d) => {
            x[a] += x[b]; x[d] = R(x[d] ^ x[a], 16); x[c] += x[d]; x[b] = R(x[b] ^ x[c], 12);
            x[a] += x[b]; x[d] = R(x[d] ^ x[a], 8); x[c] += x[d]; x[b] = R(x[b] ^ x[c], 7);
          };
          for (let i = 0; i < 10; i++) { q(0, 4, 8, 12); q(1, 5, 9, 13); q(2, 6, 10, 14); q(3, 7, 11, 15); q(0, 5, 10, 15); q(1, 6, 11, 12); q(2, 7, 8, 13); q(3, 4, 9, 14); }
          const out = new Uint8Array(64), v = new DataView(out.buffer);
          for (let i = 0; i < 16; i++) v.setUint32(4 * i, (x[i] + s[i]) >>> 0, true);
          return out;
        }
        function travChaCha20(key, counter, nonce, data) {
          const out = new Uint8Array(data.length);
          for (let i = 0; i < data.length; i += 64) {
            const block = travChaChaBlock(key, counter + i / 64, nonce);
            for (let j = 0; j < 64 && i + j < data.length; j++) out[i + j] = data[i + j] ^ block[j];
          }
          return out;
        }
        function travPoly1305(key, message) {
          const le = b => b.reduceRight((n, byte) => (n << 8n) | BigInt(byte), 0n);
          const r = le(key.subarray(0, 16)) & 0x0ffffffc0ffffffc0ffffffc0fffffffn, s = le(key.subarray(16, 32)), p = (1n << 130n) - 5n;
          let acc = 0n;
          for (let i = 0; i < message.length; i += 16) {
            const chunk = message.subarray(i, i + 16);
            acc = ((acc + le(chunk) + (1n << BigInt(8 * chunk.length))) * r) % p;
          }
          acc = (acc + s) & ((1n << 128n) - 1n);
          return Uint8Array.from({length: 16}, (_, i) => Number((acc >> BigInt(8 * i)) & 0xffn));
        }
        // The Poly1305 tag of ChaCha20-Poly1305 over `ct` with empty additional data (RFC 8439 §2.8).
        function travChaChaPolyTag(key, nonce, ct) {
          const otk = travChaChaBlock(key, 0, nonce).subarray(0, 32);
          const pad = new Uint8Array((16 - ct.length % 16) % 16), lengths = new Uint8Array(16);
          new DataView(lengths.buffer).setBigUint64(8, BigInt(ct.length), true);  // aad is empty
          return travPoly1305(otk, travBytes.concat(ct, pad, lengths));
        }
        function travChaChaPolySeal(key, nonce, plaintext) {
          const ct = travChaCha20(key, 1, nonce, plaintext);
          return travBytes.concat(ct, travChaChaPolyTag(key, nonce, ct));
        }
        function travChaChaPolyOpen(key, nonce, sealed) {
          if (sealed.length < 16) throw new Error('sealed: too short');
          const ct = sealed.subarray(0, sealed.length - 16), tag = sealed.subarray(sealed.length - 16);
          const expected = travChaChaPolyTag(key, nonce, ct);
          if (expected.reduce((d, b, i) => d | (b ^ tag[i]), 0) !== 0) throw new Error('sealed: does not open');
          return travChaCha20(key, 1, nonce, ct);
        }

        // HPKE base mode's key schedule (RFC 9180 §4.1, §5.1) for DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
        // ChaCha20-Poly1305: the AEAD key and nonce from the DH result, enc, the recipient's key and info.
        async function travHPKEKeys(dh, enc, recipient, info) {
          const hmac = async (key, data) => new Uint8Array(await crypto.subtle.sign('HMAC',
            await crypto.subtle.importKey('raw', key.length ? key : new Uint8Array(32), {name: 'HMAC', hash: 'SHA-256'}, false, ['sign']), data));
          const u16 = n => new Uint8Array([n >> 8, n & 255]), v1 = travBytes.utf8('HPKE-v1');
          const extract = (suite, salt, label, ikm) => hmac(salt, travBytes.concat(v1, suite, travBytes.utf8(label), ikm));
          const expand = async (suite, prk, label, info, length) =>
            (await hmac(prk, travBytes.concat(u16(length), v1, suite, travBytes.utf8(label), info, new Uint8Array([1])))).subarray(0, length);
          const kem = travBytes.concat(travBytes.utf8('KEM'), u16(0x0020));
          const suite = travBytes.concat(travBytes.utf8('HPKE'), u16(0x0020), u16(0x0001), u16(0x0003));
          const shared = await expand(kem, await extract(kem, new Uint8Array(0), 'eae_prk', dh), 'shared_secret', travBytes.concat(enc, recipient), 32);
          const context = travBytes.concat(new Uint8Array([0]), await extract(suite, new Uint8Array(0), 'psk_id_hash', new Uint8Array(0)),
                                           await extract(suite, new Uint8Array(0), 'info_hash', info));
          const secret = await extract(suite, shared, 'secret', new Uint8Array(0));
          return {key: await expand(suite, secret, 'key', context, 32), nonce: await expand(suite, secret, 'base_nonce', context, 12)};
        }

        // HPKE base mode, single shot (RFC 9180 §5.1, §6.1), as the camera opens it (HPKEBox): base64 of enc (32) ‖ ciphertext.
        async function travHPKESeal(recipient, info, plaintext) {
          const ephemeral = await crypto.subtle.generateKey({name: 'X25519'}, true, ['deriveBits']);
          const enc = new Uint8Array(await crypto.subtle.exportKey('raw', ephemeral.publicKey));
          const peer = await crypto.subtle.importKey('raw', recipient, {name: 'X25519'}, false, []);
          const dh = new Uint8Array(await crypto.subtle.deriveBits({name: 'X25519', public: peer}, ephemeral.privateKey, 256));
          const {key, nonce} = await travHPKEKeys(dh, enc, recipient, info);
          return travBytes.toBase64(travBytes.concat(enc, travChaChaPolySeal(key, nonce, plaintext)));
        }

        // The recipient's side (RFC 9180 §6.1 Open), as the camera seals its answer (SealedAnswer): `recipient` is
        // an X25519 CryptoKeyPair, `sealed` base64 of enc (32) ‖ ciphertext; throws when it does not open.
        async function travHPKEOpen(recipient, info, sealed) {
          const bytes = travBytes.fromBase64(sealed);
          if (bytes.length < 48) throw new Error('sealed: too short');
          const enc = bytes.subarray(0, 32), mine = new Uint8Array(await crypto.subtle.exportKey('raw', recipient.publicKey));
          const peer = await crypto.subtle.importKey('raw', enc, {name: 'X25519'}, false, []);
          const dh = new Uint8Array(await crypto.subtle.deriveBits({name: 'X25519', public: peer}, recipient.privateKey, 256));
          const {key, nonce} = await travHPKEKeys(dh, enc, mine, info);
          return travChaChaPolyOpen(key, nonce, bytes.subarray(32));
        }

        // Throws unless the raw Ed25519 key `identityKey` is behind the canonical `uid` (the derivation of DeviceID; cached).
        async function travCheckUID(identityKey, uid) {
          if (await uidSymbols(identityKey) !== uid.replace(/^TRAV-?/, '').replaceAll('-', '').slice(0, 15)) throw new Error('identity: key is not behind the UID');
        }

        // Our password and Ed25519 key, with our signature over `signed`, sealed (HPKE) to the X25519 key `sealingKey`
        // under `info`: the proof AccessProver.open reads. Returns base64.
        async function travSealProof({sealingKey, signed, info, password, viewer}) {
          const b = travBytes;
          const signature = new Uint8Array(await crypto.subtle.sign({name: 'Ed25519'}, viewer.privateKey, signed));
          const viewerKey = new Uint8Array(await crypto.subtle.exportKey('raw', viewer.publicKey));
          const proof = JSON.stringify({viewerKey: b.toBase64(viewerKey), hello: {kind: 'password', password}, signature: b.toBase64(signature)});
          return travHPKESeal(sealingKey, info, b.utf8(proof));
        }

        // The access proof for a camera's challenge (AccessChallenge / AccessProver): the challenge's signature and
        // that its key is behind the UID are checked, then the password and our Ed25519 key, with our signature
        // over the challenge, are sealed to its one-time key. `viewer` is an Ed25519 CryptoKeyPair; `answerKey`
        // the raw X25519 key (32 bytes) this introduction named. Returns the base64 sealed proof.
        async function travProve({uid, requestID, answerKey, challenge, password, viewer}) {
          const b = travBytes, zero = new Uint8Array([0]);
          const identityKey = b.fromBase64(challenge.identityKey), sealingKey = b.fromBase64(challenge.sealingKey);
          const signed = b.concat(b.utf8('trav/access-challenge/v1'), zero, b.utf8(uid), zero, b.utf8(requestID), zero, answerKey, sealingKey);
          const key = await crypto.subtle.importKey('raw', identityKey, {name: 'Ed25519'}, false, ['verify']);
          if (!await crypto.subtle.verify({name: 'Ed25519'}, key, b.fromBase64(challenge.signature), signed)) throw new Error('identity: bad challenge signature');
          await travCheckUID(identityKey, uid);
          return travSealProof({sealingKey, password, viewer,
                                signed: b.concat(b.utf8('trav/access-proof/v1'), zero, b.utf8(uid), zero, b.utf8(requestID), zero, sealingKey),
                                info: b.concat(b.utf8('trav/access-proof-seal/v1'), zero, b.utf8(uid), zero, b.utf8(requestID))});
        }

        // The access proof sealed to a deposit the cloud handed out with `located` (AccessDeposit), to go with `watch`:
        // the deposit's signature by `identityKey` (raw, 32 bytes) over its UID, expiry and key, that key behind the UID,
        // and its expiry are checked; our signature and the HPKE info bind the UID, the request, the deposit's key and
        // `answerKey`. Returns {sealingKey, sealed} (base64), or throws (the page then proves to a live challenge).
        async function travProveDeposit({uid, requestID, answerKey, identityKey, deposit, password, viewer}) {
          const b = travBytes, zero = new Uint8Array([0]);
          if (!(deposit.expires * 1000 > Date.now())) throw new Error('deposit: expired');
          const sealingKey = b.fromBase64(deposit.sealingKey), expires = new Uint8Array(8);
          if (sealingKey.length !== 32) throw new Error('deposit: not a key');
          new DataView(expires.buffer).setBigUint64(0, BigInt(deposit.expires));
          const signed = b.concat(b.utf8('trav/access-deposit/v1'), zero, b.utf8(uid), zero, expires, sealingKey);
          const key = await crypto.subtle.importKey('raw', identityKey, {name: 'Ed25519'}, false, ['verify']);
          if (!await crypto.subtle.verify({name: 'Ed25519'}, key, b.fromBase64(deposit.signature), signed)) throw new Error('identity: bad deposit signature');
          await travCheckUID(identityKey, uid);
          const binding = domain => b.concat(b.utf8(domain), zero, b.utf8(uid), zero, b.utf8(requestID), zero, sealingKey, answerKey);
          const sealed = await travSealProof({sealingKey, password, viewer,
                                              signed: binding('trav/access-deposit-proof/v1'), info: binding('trav/access-deposit-seal/v1')});
          return {sealingKey: deposit.sealingKey, sealed};
        }

        // The answer must carry the camera's identity binding over both fingerprints and the UID, by the key behind
        // the UID; throws an Error whose message starts "identity:" otherwise.
        async function travCheckAnswer(answer, offer, uid) {
          const b64 = s => Uint8Array.from(atob(s), c => c.charCodeAt(0));
          const fingerprint = sdp => {
            const m = sdp.match(/a=fingerprint:sha-256 ([0-9A-Fa-f:]+)/);
            if (!m) throw new Error('identity: no fingerprint');
            return Uint8Array.from(m[1].split(':').map(h => parseInt(h, 16)));
          };
          const binding = answer.match(/a=trav-identity:(\S+) (\S+)/);
          if (!binding) throw new Error('identity: missing');
          const head = new TextEncoder().encode('trav/webrtc-identity/v1\0' + uid + '\0');
          const signed = new Uint8Array([...head, ...fingerprint(answer), ...fingerprint(offer)]);
          const key = await crypto.subtle.importKey('raw', b64(binding[1]), {name: 'Ed25519'}, false, ['verify']);
          if (!await crypto.subtle.verify({name: 'Ed25519'}, key, b64(binding[2]), signed)) throw new Error('identity: bad signature');
          await travCheckUID(b64(binding[1]), uid.toUpperCase());
        }

        // Records in `phases` the whole milliseconds from `started` to now under `name` (the first time only); returns them.
        function travMark(phases, name, started) {
          if (!(name in phases)) phases[name] = Math.round(performance.now() - started);
          return phases[name];
        }

        // The RFC 6381 codec string of an Annex B access unit's SPS ('avc1.PPCCLL'), or null without one.
        function travCodec(data) {
          for (let i = 0; i + 7 < data.length; i++) {
            if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 1 && (data[i + 3] & 31) === 7) {
              return 'avc1.' + [data[i + 4], data[i + 5], data[i + 6]].map(b => b.toString(16).padStart(2, '0')).join('');
            }
          }
          return null;
        }

        // A peer connection made before the camera is named: the control channel, the offer, and the candidates gathered
        // for it (no trickle). It is ready once gathering is complete, or at the first relayed candidate over UDP: that one
        // proves UDP reaches the cloud, so TURN over TCP and TLS (for networks without UDP, a few round trips more) would
        // add no path, and the server-reflexive candidate, one round trip to the same cloud where the relay took two, is
        // already in. It is ready too at a relayed candidate over TCP or TLS when no server-reflexive one came before it:
        // that network does not let UDP reach the cloud (a UDP answer takes one round trip, the TCP or TLS relay three to
        // five), and waiting for the browser's UDP attempts to time out took seconds. Bounded: 3 s. Returns {pc, control, offer}.
        async function travPrepare({iceServers = []}) {
          const pc = new RTCPeerConnection({iceServers});
          const control = pc.createDataChannel('trav.control');
          await pc.setLocalDescription(await pc.createOffer());
          await new Promise(done => {
            if (pc.iceGatheringState === 'complete') return done();
            let reflexive = false;
            pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') done(); };
            pc.onicecandidate = e => {
              if (!e.candidate) return;
              if (e.candidate.type === 'srflx') reflexive = true;
              if (e.candidate.type === 'relay' && (e.candidate.relayProtocol === 'udp' || !reflexive)) done();
            };
            setTimeout(done, 3000);
          });
          pc.onicegatheringstatechange = pc.onicecandidate = null;
          return {pc, control, offer: pc.localDescription.sdp};
        }

        // Watches with a peer connection from travPrepare (`peer`, or one made now with `iceServers`): signals its offer
        // through `signal(offerSdp) → answerSdp`, checks the answer against the UID (typed in any form travCanonicalUID
        // reads), and decodes the camera's frames into `canvas`. `onStatus(text)` hears progress; returns the statistics
        // object it updates. `started` (a performance.now() value, by default the call) is when the person pressed
        // connect; `phases` (an object) receives the milliseconds from then to each step, as travMark names them.
        async function travWatch({uid: typed, signal, canvas, onStatus = () => {}, iceServers = [], peer = null, started = performance.now(), phases = {}}) {
          const uid = travCanonicalUID(typed);
          if (!uid) throw new Error('uid: not a UID');
          // firstFrameMs: from pressing connect to the first decoded frame (the issue's "connect to first frame").
          const stats = {received: 0, decoded: 0, keyframeRequests: 0, path: null, candidates: null, firstFrameMs: null, phases};
          const mark = name => travMark(phases, name, started);
          const {pc, control, offer} = peer || await travPrepare({iceServers});
          mark('offer');
          const context = canvas.getContext('2d');
          let decoder = null, decoderRendition = 0;
          const requestKeyframe = () => {
            decoder = null;
            stats.keyframeRequests++;
            if (control.readyState === 'open') control.send(new Uint8Array([1]));
          };
          const frame = bytes => {
            if (bytes.length < 32 || bytes[0] !== 1) return;  // video frames only (MediaFrame.Kind.video)
            if (stats.received++ === 0) { mark('received'); readPath(); }
            const key = (bytes[1] & 1) === 1, data = bytes.subarray(32);
            const timestamp = Number(new DataView(bytes.buffer, bytes.byteOffset, 32).getBigUint64(16));
            // The camera moved this viewer to another rendition (byte 2) at this keyframe: its own SPS, maybe another codec string.
            if (decoder && key && bytes[2] !== decoderRendition) {
              try { decoder.close(); } catch (e) {}
              decoder = null;
            }
            if (!decoder) {
              decoderRendition = bytes[2];
              const codec = key ? travCodec(data) : null;
              if (!codec) return;
              decoder = new VideoDecoder({
                output: f => {
                  if (canvas.width !== f.displayWidth) canvas.width = f.displayWidth;
                  if (canvas.height !== f.displayHeight) canvas.height = f.displayHeight;
                  context.drawImage(f, 0, 0);
                  f.close();
                  if (stats.decoded++ === 0) stats.firstFrameMs = mark('decoded');
                },
                error: e => { onStatus('decoder: ' + e.message); requestKeyframe(); },
              });
              decoder.configure({codec, optimizeForLatency: true});
            }
            try {
              decoder.decode(new EncodedVideoChunk({type: key ? 'key' : 'delta', timestamp, data}));
            } catch (e) { onStatus('decode: ' + e.message); requestKeyframe(); }
          };
          pc.ondatachannel = e => {
            if (e.channel.label !== 'trav.media') return;
            mark('channel');
            e.channel.binaryType = 'arraybuffer';
            e.channel.onmessage = m => frame(new Uint8Array(m.data));
          };
          pc.oniceconnectionstatechange = () => { if (pc.iceConnectionState === 'connected') mark('ice'); };
          // The path: 'relay' when either end of the pair in use is a relayed candidate, else 'direct'. The pair in use is
          // the transport's selected one (DTLS can be up before the browser's nomination is answered, so a nominated pair
          // may not exist yet), else a nominated one that succeeded; read when DTLS connects and again at the first frame.
          const readPath = async () => {
            const report = await pc.getStats();
            let pair = null;
            for (const r of report.values()) {
              if (r.type === 'transport' && r.selectedCandidatePairId) pair = report.get(r.selectedCandidatePairId) || pair;
            }
            for (const r of report.values()) {
              if (!pair && r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r;
            }
            if (!pair) return;
            const types = [report.get(pair.localCandidateId), report.get(pair.remoteCandidateId)].map(c => c ? c.candidateType : 'unknown');
            stats.path = types.includes('relay') ? 'relay' : 'direct';
            stats.candidates = types.join('→');
            // How the browser reaches its TURN relay when its end is relayed: 'udp', 'tcp' or 'tls'.
            stats.relayProtocol = (report.get(pair.localCandidateId) || {}).relayProtocol || null;
          };
          pc.onconnectionstatechange = async () => {
            onStatus('connection: ' + pc.connectionState);
            if (pc.connectionState !== 'connected') return;
            mark('dtls');
            await readPath();
          };
          try {
            const answer = await signal(offer);
            mark('answer');
            await travCheckAnswer(answer, offer, uid);
            mark('checked');
            await pc.setRemoteDescription({type: 'answer', sdp: answer});
          } catch (e) { pc.close(); throw e; }
          stats.pc = pc;
          return stats;
        }
        """#
}
