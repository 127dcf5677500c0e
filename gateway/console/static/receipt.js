// The receipt checker: verifies a pasted receipt in this browser, with WebCrypto's Ed25519,
// against the keys the gateway publishes, in the order gateway/signing.py's verify_document
// checks them (header, alg and typ, a published key whose RFC 7638 thumbprint is its kid, the
// signature, then revocation). The receipt is sent nowhere; everything is shown as text.
"use strict";
(function () {
  const form = document.getElementById("receipt-form");
  if (!form) return;
  const outcome = document.getElementById("receipt-outcome");
  const section = document.getElementById("receipt-document");
  const output = document.getElementById("receipt-json");
  const B64URL = /^[A-Za-z0-9_-]+$/;

  class Refusal extends Error {}

  function decode(text) {
    if (!B64URL.test(text)) throw new Refusal("malformed");
    let s = text.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    const binary = atob(s);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function encode(bytes) {
    let binary = "";
    bytes.forEach(function (b) { binary += String.fromCharCode(b); });
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function json(bytes) {
    try {
      return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
    } catch (e) {
      throw new Refusal("malformed");
    }
  }

  async function verify(token) {
    const parts = token.trim().split(".");
    if (parts.length !== 3) throw new Refusal("malformed");
    const header = json(decode(parts[0]));
    const signature = decode(parts[2]);
    if (header === null || header.alg !== "EdDSA" || header.typ !== "veilgate-receipt+json") {
      throw new Refusal("wrongType");
    }
    const response = await fetch("/.well-known/jwks.json", { cache: "no-store" });
    const jwks = await response.json();
    const jwk = (jwks.keys || []).find(function (k) { return k && k.kid === header.kid; });
    if (typeof header.kid !== "string" || !jwk) throw new Refusal("unknownKey");
    if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string" || !B64URL.test(jwk.x) ||
        (jwk.alg !== undefined && jwk.alg !== "EdDSA")) {
      throw new Refusal("badKey");
    }
    const canonical = '{"crv":"Ed25519","kty":"OKP","x":"' + jwk.x + '"}';
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(canonical));
    if (encode(new Uint8Array(digest)) !== jwk.kid) throw new Refusal("badKey");
    let key;
    try {
      key = await crypto.subtle.importKey("jwk", { kty: "OKP", crv: "Ed25519", x: jwk.x }, { name: "Ed25519" },
        false, ["verify"]);
    } catch (e) {
      throw new Refusal("noWebcrypto");
    }
    const signed = new TextEncoder().encode(parts[0] + "." + parts[1]);
    if (!(await crypto.subtle.verify({ name: "Ed25519" }, key, signature, signed))) {
      throw new Refusal("badSignature");
    }
    const payload = json(decode(parts[1]));
    const issued = payload && typeof payload.iat === "number" ? payload.iat : Infinity;
    if (jwk.status === "revoked" && (!jwk.revoked_since || issued >= Date.parse(jwk.revoked_since) / 1000)) {
      throw new Refusal("revoked");
    }
    return { kid: jwk.kid, payload: payload };
  }

  function show(ok, text) {
    outcome.textContent = "";
    const p = document.createElement("p");
    p.className = ok ? "notice ok" : "notice error";
    p.textContent = text;
    p.id = ok ? "receipt-valid" : "receipt-invalid";
    outcome.appendChild(p);
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    section.hidden = true;
    output.textContent = "";
    try {
      const found = await verify(document.getElementById("receipt").value);
      show(true, form.dataset.valid + " " + form.dataset.signedBy + ": " + found.kid);
      output.textContent = JSON.stringify(found.payload, null, 2);
      section.hidden = false;
    } catch (e) {
      const reason = e instanceof Refusal ? form.dataset[e.message] : form.dataset.noWebcrypto;
      show(false, form.dataset.invalid + ": " + reason);
    }
  });
})();
