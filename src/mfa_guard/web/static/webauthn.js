/* mfa_guard: passkeys and security keys (WebAuthn) on the kit's pages. No framework, no inline
 * code: the pages mark their forms with data attributes and this file, served by the kit's
 * mount, does the rest.
 *
 * A form marked data-webauthn="register" adds a passkey or security key, one marked
 * data-webauthn="authenticate" signs in with one. Each is rendered hidden and shown only where
 * the browser offers WebAuthn. On submit it asks the JSON API for the ceremony's options
 * (data-options-url), hands them to the browser, posts the browser's answer back
 * (data-answer-url) and then goes to data-next; a refusal is said in the form's live region
 * (data-webauthn-status), in the page's language when the page gives the text
 * (data-messages, by error code), else as the API said it. What the page says for browsers
 * that cannot use a key (data-webauthn-unavailable) is hidden once a form is shown.
 */
(function () {
  "use strict";

  if (!window.PublicKeyCredential || !navigator.credentials) {
    return; // the forms stay hidden: the page's other ways still work
  }

  // Refusals that a verification at the challenge lifts (as the pages' own forms do).
  var STEP_UP = ["mfa_required", "mfa_reauthentication_required"];
  var STRONG_STEP_UP = "strong_factor_required";

  function ApiError(status, code, message) {
    this.status = status;
    this.code = code;
    this.message = message;
  }

  // -- base64url, for browsers without the JSON helpers of WebAuthn Level 3 -----------------

  function toBuffer(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) {
      base64 += "=";
    }
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) {
      binary += String.fromCharCode(bytes[i]);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (descriptor) {
      return Object.assign({}, descriptor, { id: toBuffer(descriptor.id) });
    });
  }

  function creationOptions(json) {
    if (typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function") {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    return Object.assign({}, json, {
      challenge: toBuffer(json.challenge),
      user: Object.assign({}, json.user, { id: toBuffer(json.user.id) }),
      excludeCredentials: descriptors(json.excludeCredentials),
    });
  }

  function requestOptions(json) {
    if (typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function") {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    return Object.assign({}, json, {
      challenge: toBuffer(json.challenge),
      allowCredentials: descriptors(json.allowCredentials),
    });
  }

  function credentialJSON(credential) {
    if (typeof credential.toJSON === "function") {
      return credential.toJSON();
    }
    var response = credential.response;
    var json = {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults
        ? credential.getClientExtensionResults()
        : {},
      response: { clientDataJSON: toText(response.clientDataJSON) },
    };
    if (response.attestationObject) {
      json.response.attestationObject = toText(response.attestationObject);
      json.response.transports = response.getTransports ? response.getTransports() : [];
    } else {
      json.response.authenticatorData = toText(response.authenticatorData);
      json.response.signature = toText(response.signature);
      json.response.userHandle = response.userHandle ? toText(response.userHandle) : null;
    }
    return json;
  }

  // -- the JSON API -------------------------------------------------------------------------

  async function post(url, body) {
    var response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    var data = {};
    try {
      data = await response.json();
    } catch (ignored) {
      data = {};
    }
    if (!response.ok) {
      var error = (data && data.error) || {};
      throw new ApiError(response.status, error.code, error.message);
    }
    return data;
  }

  // -- what the user is told ----------------------------------------------------------------

  function messages(form) {
    try {
      return JSON.parse(form.getAttribute("data-messages") || "{}");
    } catch (ignored) {
      return {};
    }
  }

  function say(form, text) {
    var status = form.querySelector("[data-webauthn-status]");
    status.textContent = "";
    if (text) {
      var line = document.createElement("p");
      line.className = "error";
      line.textContent = text;
      status.appendChild(line);
    }
  }

  function explain(form, error) {
    var texts = messages(form);
    if (error instanceof ApiError) {
      if (STEP_UP.indexOf(error.code) >= 0 && form.getAttribute("data-step-up")) {
        window.location.assign(form.getAttribute("data-step-up"));
        return null;
      }
      if (error.code === STRONG_STEP_UP && form.getAttribute("data-strong-step-up")) {
        window.location.assign(form.getAttribute("data-strong-step-up"));
        return null;
      }
      return texts[error.code] || error.message || texts.failed;
    }
    var name = error && error.name;
    if (name === "NotAllowedError" || name === "AbortError") {
      return texts.cancelled; // dismissed, timed out, or no key answered
    }
    if (name === "InvalidStateError") {
      return texts.authenticator_already_registered; // one of the excluded credentials
    }
    if (error instanceof TypeError) {
      return texts.network; // fetch could not reach the server
    }
    return texts.failed;
  }

  // -- the ceremonies -----------------------------------------------------------------------

  async function register(form) {
    var options = await post(form.getAttribute("data-options-url"), {});
    var credential = await navigator.credentials.create({
      publicKey: creationOptions(options.publicKey),
    });
    var body = { credential: credentialJSON(credential) };
    var field = form.querySelector('input[name="name"]');
    var name = field ? field.value.trim() : "";
    if (name) {
      body.name = name;
    }
    var added = await post(form.getAttribute("data-answer-url"), body);
    var codes = added.recovery_codes || [];
    var template = document.getElementById(form.getAttribute("data-codes") || "");
    if (codes.length && template) {
      showRecoveryCodes(template, codes);
      return;
    }
    window.location.assign(form.getAttribute("data-next"));
  }

  async function authenticate(form) {
    var options = await post(form.getAttribute("data-options-url"), {});
    var credential = await navigator.credentials.get({
      publicKey: requestOptions(options.publicKey),
    });
    var box = document.getElementById(form.getAttribute("data-remember") || "");
    await post(form.getAttribute("data-answer-url"), {
      credential: credentialJSON(credential),
      remember_device: Boolean(box && box.checked),
    });
    window.location.assign(form.getAttribute("data-next"));
  }

  // The first factor comes with the recovery codes, shown once: the page's <template> for
  // them takes the place of the enrolment steps.
  function showRecoveryCodes(template, codes) {
    var shown = template.content.cloneNode(true);
    var list = shown.querySelector("[data-recovery-codes]");
    codes.forEach(function (code) {
      var item = document.createElement("li");
      var text = document.createElement("code");
      text.textContent = code;
      item.appendChild(text);
      list.appendChild(item);
    });
    var steps = document.querySelector("[data-webauthn-steps]");
    steps.replaceWith(shown);
    if (template.getAttribute("data-title")) {
      document.title = template.getAttribute("data-title");
    }
    var heading = document.querySelector("[data-recovery-codes-heading]");
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
  }

  var CEREMONIES = { register: register, authenticate: authenticate };

  function enable(form) {
    var ceremony = CEREMONIES[form.getAttribute("data-webauthn")];
    if (!ceremony) {
      return;
    }
    var button = form.querySelector('button[type="submit"]');
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      if (button.disabled) {
        return;
      }
      button.disabled = true;
      form.setAttribute("aria-busy", "true");
      say(form, "");
      try {
        await ceremony(form);
      } catch (error) {
        say(form, explain(form, error));
        button.disabled = false;
      } finally {
        form.removeAttribute("aria-busy");
      }
    });
    if (form.getAttribute("data-webauthn") === "authenticate") {
      // "Remember this browser" serves both ways: moved from the code's form (which still
      // posts it, by its form attribute) to below the passkey's button.
      var remember = document.querySelector("[data-webauthn-remember]");
      if (remember) {
        form.after(remember);
      }
    }
    form.hidden = false;
    // What the page says for a browser that cannot use a key is not true of this one.
    document.querySelectorAll("[data-webauthn-unavailable]").forEach(function (note) {
      note.hidden = true;
    });
  }

  function start() {
    document.querySelectorAll("form[data-webauthn]").forEach(enable);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
