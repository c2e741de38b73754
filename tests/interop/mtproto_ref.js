#!/usr/bin/env node
/*
 * mtproto_ref.js - the MTProto 2.0 envelope as gramjs (npm "telegram", pinned in
 * package.json) computes it, for tests/interop/test_mtproto_interop.c.
 *
 * stdin:  one JSON request, or a JSON array of them:
 *   {"op":"seal", "auth_key":hex(256 B), "x":0|8, "data":hex, "random_padding":bool}
 *     data is the exact padded plaintext (a multiple of 16, >= 32 bytes), or with
 *     random_padding the unpadded inner plaintext, padded as gramjs pads
 *     (generateRandomBytes(mod(-(len + 12), 16) + 12), i.e. 12..27 bytes).
 *   {"op":"open", "auth_key":hex, "x":0|8, "data":hex(envelope)}
 *   {"op":"key_id", "auth_key":hex}
 * stdout: one JSON answer (or an array, matching the input):
 *   seal   -> {"ok":true, "envelope":hex, "path":"..."}
 *   open   -> {"ok":bool, "plaintext":hex (whole decrypted plaintext, padding included),
 *              "reason":"...", "gramjs_decrypt":"..." (x = 8 only)}
 *   key_id -> {"ok":true, "key_id":hex}
 *   a request the script cannot serve -> {"ok":false, "error":"..."}; exit code 2 on a
 *   broken request stream or an internal inconsistency (see below).
 *
 * Everything under test comes from the package: the auth_key_id (AuthKey.setKey:
 * SHA-1 through telegram/Helpers), SHA-256 (Helpers.sha256), the key/iv derivation
 * (MTProtoState.prototype._calcKey, which takes the direction) and AES-256-IGE
 * (telegram/crypto/IGE over @cryptography/aes, gramjs's own dependency). gramjs
 * implements the whole envelope only for the client side: encryptMessageData seals
 * x = 0 and decryptMessageData opens x = 8. Those two are run as they are (seal: with
 * generateRandomBytes fed the requested padding; open: its verdict is reported and must
 * agree with the composed path). The two other directions compose the same package
 * functions with the msg_key rule copied from those two methods, the offset 88 + x
 * being the one thing this script supplies.
 */
"use strict";

const path = require("path");
const fs = require("fs");

let telegram, Helpers, AuthKey, IGE, MTProtoState, errors;
try {
    telegram = require("telegram");
    Helpers = require("telegram/Helpers");
    AuthKey = require("telegram/crypto/AuthKey").AuthKey;
    IGE = require("telegram/crypto/IGE").IGE;
    MTProtoState = require("telegram/network/MTProtoState").MTProtoState;
    errors = require("telegram/errors");
} catch (e) {
    process.stderr.write(
        `mtproto_ref.js: cannot load the npm package "telegram" from ${path.join(__dirname, "node_modules")}` +
            ` (${e.message}); run scripts/deps.sh\n`);
    process.exit(3);
}

const AUTH_KEY_LEN = 256;
const quietLogger = { debug() {}, info() {}, warn() {}, error() {} };

function fail(msg) {
    const e = new Error(msg);
    e.requestError = true;
    throw e;
}

function unhex(s, what) {
    if (typeof s !== "string" || s.length % 2 || !/^[0-9a-fA-F]*$/.test(s)) fail(`${what}: bad hex`);
    return Buffer.from(s, "hex");
}

async function loadKey(req) {
    const key = unhex(req.auth_key, "auth_key");
    if (key.length !== AUTH_KEY_LEN) fail(`auth_key: ${key.length} bytes, want ${AUTH_KEY_LEN}`);
    const ak = new AuthKey();
    await ak.setKey(key);
    return ak;
}

function direction(req) {
    if (req.x !== 0 && req.x !== 8) fail(`x: ${JSON.stringify(req.x)}, want 0 or 8`);
    return req.x;
}

function keyIdBytes(ak) {
    // As MTProtoState.encryptMessageData writes it.
    return Helpers.readBufferFromBigInt(ak.keyId, 8);
}

function newState(ak) {
    return new MTProtoState(ak, quietLogger, true);
}

/* msg_key = substr(SHA256(substr(auth_key, 88 + x, 32) + plaintext), 8, 16), as in
 * encryptMessageData (x = 0) and decryptMessageData (x = 8). */
async function msgKeyOf(authKey, x, plaintext) {
    const large = await Helpers.sha256(Buffer.concat([authKey.slice(88 + x, 88 + x + 32), plaintext]));
    return large.slice(8, 24);
}

async function sealComposed(ak, x, padded) {
    const authKey = ak.getKey();
    const msgKey = await msgKeyOf(authKey, x, padded);
    const { key, iv } = await MTProtoState.prototype._calcKey(authKey, msgKey, x === 0);
    return Buffer.concat([keyIdBytes(ak), msgKey, new IGE(key, iv).encryptIge(padded)]);
}

/* Runs the real MTProtoState.encryptMessageData (x = 0 only) so that it produces the
 * envelope of exactly `padded`: salt and session id come from the state, the rest is
 * `data`, and the padding it draws from generateRandomBytes is the last 12 bytes. */
async function sealGramjsClient(ak, padded) {
    const state = newState(ak);
    state.salt = Helpers.readBigIntFromBuffer(padded.slice(0, 8), true, true);
    state.id = Helpers.readBigIntFromBuffer(padded.slice(8, 16), true, true);
    const data = padded.slice(16, padded.length - 12);
    const tail = padded.slice(padded.length - 12);
    const real = Helpers.generateRandomBytes;
    let asked = -1;
    Helpers.generateRandomBytes = (n) => {
        asked = n;
        return Buffer.from(tail.slice(0, n));
    };
    try {
        const env = await state.encryptMessageData(data);
        if (asked !== 12) throw new Error(`encryptMessageData asked for ${asked} padding bytes, not 12`);
        return env;
    } finally {
        Helpers.generateRandomBytes = real;
    }
}

async function seal(req) {
    const ak = await loadKey(req);
    const x = direction(req);
    let padded = unhex(req.data, "data");
    if (req.random_padding) {
        if (padded.length < 32) fail("data: the inner plaintext is at least 32 bytes");
        const pad = Helpers.generateRandomBytes(Helpers.mod(-(padded.length + 12), 16) + 12);
        padded = Buffer.concat([padded, pad]);
    }
    if (padded.length < 32 || padded.length % 16) fail(`data: ${padded.length} bytes, want a multiple of 16 >= 32`);
    const composed = await sealComposed(ak, x, padded);
    if (x !== 0) return { ok: true, envelope: composed.toString("hex"), path: "composed" };
    const whole = await sealGramjsClient(ak, padded);
    if (!whole.equals(composed)) {
        throw new Error("inconsistent: MTProtoState.encryptMessageData differs from the composed envelope");
    }
    return { ok: true, envelope: whole.toString("hex"), path: "MTProtoState.encryptMessageData" };
}

/* The composed decryption: the checks gramjs makes, in its order (key id, msg_key),
 * and no others: it looks at no length field and no padding. */
async function openComposed(ak, x, env) {
    if (env.length < 8) return { ok: false, reason: "short" };
    if (!env.slice(0, 8).equals(keyIdBytes(ak))) return { ok: false, reason: "auth_key_id" };
    const authKey = ak.getKey();
    const msgKey = env.slice(8, 24);
    const { key, iv } = await MTProtoState.prototype._calcKey(authKey, msgKey, x === 0);
    let pt;
    try {
        pt = new IGE(key, iv).decryptIge(env.slice(24));
    } catch (e) {
        return { ok: false, reason: `ige: ${e.message}` };
    }
    const ours = await msgKeyOf(authKey, x, pt);
    if (!ours.equals(msgKey)) return { ok: false, reason: "msg_key" };
    return { ok: true, plaintext: pt.toString("hex"), reason: "ok" };
}

/* The real MTProtoState.decryptMessageData (x = 8 only). It parses a TL object after
 * the checks, which random test bodies are not, so a TL error there still means
 * that the envelope passed every check gramjs makes. */
async function openGramjsClient(ak, env) {
    const state = newState(ak);
    try {
        await state.decryptMessageData(env);
        return { accepted: true, verdict: "accepted" };
    } catch (e) {
        if (e instanceof errors.SecurityError || e instanceof errors.InvalidBufferError) {
            return { accepted: false, verdict: `rejected: ${e.message}` };
        }
        return { accepted: true, verdict: `accepted, then TL parse: ${e.constructor.name}` };
    }
}

async function open(req) {
    const ak = await loadKey(req);
    const x = direction(req);
    const env = unhex(req.data, "data");
    const res = await openComposed(ak, x, env);
    if (x === 8) {
        const g = await openGramjsClient(ak, env);
        res.gramjs_decrypt = g.verdict;
        if (g.accepted !== res.ok) {
            throw new Error(`inconsistent: decryptMessageData ${g.verdict}, composed path ${res.reason}`);
        }
    }
    return res;
}

async function serve(req) {
    if (!req || typeof req !== "object") fail("request: not an object");
    switch (req.op) {
    case "seal":
        return seal(req);
    case "open":
        return open(req);
    case "key_id":
        return { ok: true, key_id: keyIdBytes(await loadKey(req)).toString("hex") };
    default:
        fail(`op: ${JSON.stringify(req.op)}`);
    }
}

async function main() {
    let input;
    try {
        input = JSON.parse(fs.readFileSync(0, "utf8"));
    } catch (e) {
        process.stderr.write(`mtproto_ref.js: stdin is not JSON: ${e.message}\n`);
        process.exit(2);
    }
    const many = Array.isArray(input);
    const out = [];
    for (const req of many ? input : [input]) {
        try {
            out.push(await serve(req));
        } catch (e) {
            if (!e.requestError) throw e;
            out.push({ ok: false, error: e.message });
        }
    }
    process.stdout.write(JSON.stringify(many ? out : out[0]) + "\n");
}

main().catch((e) => {
    process.stderr.write(`mtproto_ref.js: ${e.stack || e}\n`);
    process.exit(2);
});
