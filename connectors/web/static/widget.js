/*
 * entraide chat widget, embedded in ENT pages with one tag:
 *
 *   <script src="https://assistant.example/widget/widget.js" data-server="https://assistant.example"
 *           data-lang="fr" data-token="<signed JWT>" data-title="Assistance ENT" defer></script>
 *
 * Plain JavaScript without a build step. It loads widget.css from its own folder, talks to the server
 * over one WebSocket (protocol in docs/widget.md) and exposes window.entraide.
 * Text from users, the bot and experts reaches the DOM only as text nodes, never as HTML.
 */
(function () {
  "use strict";

  if (window.entraide && window.entraide.version) {
    return; // The script is included twice on this page, so this copy leaves the first one running.
  }

  const VERSION = "0.1.0";

  const SESSION_KEY = "entraide.session"; // localStorage: the conversation survives reloads and navigation
  const SEEN_KEY = "entraide.seen"; // localStorage: highest seq shown while the panel was open
  const OPEN_KEY = "entraide.open"; // sessionStorage: the panel stays open across pages of one tab

  const DEFAULT_MAX_LENGTH = 2000; // characters (code points), until the welcome frame sets max_length
  const BACKOFF_BASE_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const RATE_LIMITED_DELAY_MS = 30000; // after close code 4429, wait this long plus up to as much again
  const WELCOME_TIMEOUT_MS = 15000; // a socket without a welcome frame by then is closed and retried
  const TYPING_TIMEOUT_MS = 30000; // hides a typing indicator whose "active: false" never arrived
  const REPLAY_QUIET_MS = 400; // history replayed after a page load is not read aloud message by message
  const ACK_DELAY_MS = 100;
  const ECHO_TIMEOUT_MS = 10000; // after a reconnect, a message still not echoed by then is marked as not sent

  const ROLES = new Set(["user", "bot", "expert", "system"]);

  // ---------------------------------------------------------------------------------------------
  // Catalogues of the strings users read. French is the default, and every language has every key.

  const CATALOGUES = {
    fr: {
      locale: "fr-FR",
      launcher: "Besoin d'aide\u00a0?",
      title: "Assistance ENT",
      close: "Fermer l'assistance",
      identity: "Compte ENT\u00a0: {name}",
      intro:
        "Posez votre question sur l'ENT\u00a0: l'assistant vous répond et un conseiller prend le relais si besoin. " +
        "Ne communiquez jamais votre mot de passe.",
      logLabel: "Conversation avec l'assistance",
      inputLabel: "Votre message",
      placeholder: "Écrivez votre question…",
      inputHint: "Entrée pour envoyer, Maj + Entrée pour aller à la ligne.",
      counterHint: "{max} caractères au maximum.",
      tooLong: "Votre message dépasse la limite de {max} caractères. Raccourcissez-le pour pouvoir l'envoyer.",
      send: "Envoyer",
      you: "Vous",
      bot: "Assistant",
      expert: "Conseiller",
      system: "Information",
      senderSeparator: "\u00a0: ",
      buttonsLabel: "Réponses proposées",
      newTab: " (nouvel onglet)",
      typingBot: "L'assistant écrit…",
      typingExpert: "Un conseiller écrit…",
      queued: "En attente de connexion…",
      failed: "Non envoyé.",
      resend: "Renvoyer",
      unreadOne: "{count} nouveau message",
      unreadOther: "{count} nouveaux messages",
      announceNew: "Nouvelle réponse dans l'assistance.",
      statusConnecting: "Connexion à l'assistance…",
      statusReconnecting: "Reconnexion…",
      statusWaiting: "Connexion perdue. Nouvelle tentative dans quelques secondes.",
      statusRateLimited: "Trop de demandes. Nouvelle tentative dans une minute environ.",
      statusOffline: "Vous êtes hors ligne. La conversation reprendra au retour du réseau.",
      statusAuth: "Votre identification ENT a été refusée. Rechargez la page pour vous reconnecter.",
      statusOrigin: "L'assistance n'est pas disponible depuis cette page.",
      statusPolicy: "Le serveur a fermé la connexion.",
      statusConfig: "L'assistance est mal configurée sur cette page (adresse du serveur invalide).",
      retryNow: "Réessayer maintenant",
      messageTooBig: "Ce message est trop volumineux pour être envoyé.",
      errors: {
        token_invalid: "Votre identification ENT n'est pas valide. Rechargez la page.",
        token_expired: "Votre session ENT a expiré. Rechargez la page pour vous reconnecter.",
        too_long: "Votre message est trop long. Raccourcissez-le puis envoyez-le de nouveau.",
        rate_limited: "Vous envoyez trop de messages. Patientez un peu avant de réessayer.",
        bad_request: "Votre demande n'a pas pu être traitée.",
        server_error: "Une erreur est survenue sur le serveur. Réessayez dans un instant.",
      },
    },
    en: {
      locale: "en-GB",
      launcher: "Need help?",
      title: "ENT support",
      close: "Close support chat",
      identity: "ENT account: {name}",
      intro:
        "Ask your question about the ENT: the assistant answers and an adviser takes over if needed. " +
        "Never share your password.",
      logLabel: "Conversation with support",
      inputLabel: "Your message",
      placeholder: "Type your question…",
      inputHint: "Enter to send, Shift + Enter for a new line.",
      counterHint: "{max} characters at most.",
      tooLong: "Your message is over the {max} character limit. Shorten it to send it.",
      send: "Send",
      you: "You",
      bot: "Assistant",
      expert: "Adviser",
      system: "Information",
      senderSeparator: ": ",
      buttonsLabel: "Suggested replies",
      newTab: " (new tab)",
      typingBot: "The assistant is typing…",
      typingExpert: "An adviser is typing…",
      queued: "Waiting for the connection…",
      failed: "Not sent.",
      resend: "Send again",
      unreadOne: "{count} new message",
      unreadOther: "{count} new messages",
      announceNew: "New reply in the support chat.",
      statusConnecting: "Connecting to support…",
      statusReconnecting: "Reconnecting…",
      statusWaiting: "Connection lost. Trying again in a few seconds.",
      statusRateLimited: "Too many requests. Trying again in about a minute.",
      statusOffline: "You are offline. The conversation will resume when the network is back.",
      statusAuth: "Your ENT sign-in was rejected. Reload the page to sign in again.",
      statusOrigin: "Support is not available from this page.",
      statusPolicy: "The server closed the connection.",
      statusConfig: "Support is misconfigured on this page (invalid server address).",
      retryNow: "Try again now",
      messageTooBig: "This message is too large to be sent.",
      errors: {
        token_invalid: "Your ENT sign-in is invalid. Reload the page.",
        token_expired: "Your ENT session has expired. Reload the page to sign in again.",
        too_long: "Your message is too long. Shorten it and send it again.",
        rate_limited: "You are sending too many messages. Wait a little before trying again.",
        bad_request: "Your request could not be processed.",
        server_error: "Something went wrong on the server. Try again in a moment.",
      },
    },
  };

  // ---------------------------------------------------------------------------------------------
  // Small helpers.

  function formatText(template, values) {
    return template.replace(/\{(\w+)\}/g, (match, name) => (name in values ? String(values[name]) : match));
  }

  function createElement(tag, className, attributes) {
    const element = document.createElement(tag);
    if (className) {
      element.className = className;
    }
    for (const [name, value] of Object.entries(attributes || {})) {
      element.setAttribute(name, value);
    }
    return element;
  }

  // Counts code points, as the server (Python's len) does, so that an emoji counts as one character.
  function countCharacters(text) {
    return Array.from(text).length;
  }

  function newClientId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    // randomUUID exists only in secure contexts. Build a version 4 UUID from getRandomValues instead.
    const bytes = window.crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
    return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
  }

  // Storage can be disabled or full (private browsing, strict settings).
  // The widget then keeps its state for the current page only.
  function readStorage(storage, key) {
    try {
      return window[storage].getItem(key);
    } catch (error) {
      return null;
    }
  }

  function writeStorage(storage, key, value) {
    try {
      if (value === null) {
        window[storage].removeItem(key);
      } else {
        window[storage].setItem(key, value);
      }
    } catch (error) {
      // Ignored on purpose: see readStorage.
    }
  }

  function findOwnScript() {
    if (document.currentScript) {
      return document.currentScript;
    }
    const scripts = document.querySelectorAll("script[src]");
    for (const script of scripts) {
      if (/\/widget\.js(\?|#|$)/.test(script.src)) {
        return script;
      }
    }
    return null;
  }

  // Returns the WebSocket URL for a server address (http or https, optionally with a path prefix),
  // or null when the address is not a usable http(s) URL.
  function buildSocketUrl(server) {
    let url;
    try {
      url = new URL(server, document.baseURI);
    } catch (error) {
      return null;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      return null;
    }
    const scheme = url.protocol === "https:" ? "wss://" : "ws://";
    return scheme + url.host + url.pathname.replace(/\/+$/, "") + "/widget/ws";
  }

  function readConfig(script) {
    const data = script.dataset;
    const scriptUrl = new URL(script.src, document.baseURI);
    const requestedLang = (data.lang || "fr").toLowerCase().split("-")[0];
    const lang = Object.prototype.hasOwnProperty.call(CATALOGUES, requestedLang) ? requestedLang : "fr";
    const strings = CATALOGUES[lang];
    return {
      lang: lang,
      strings: strings,
      stylesheetUrl: new URL("widget.css", scriptUrl).href,
      socketUrl: buildSocketUrl(data.server || scriptUrl.origin),
      token: data.token || null,
      title: data.title || strings.title,
    };
  }

  // Appends text to parent, turning http(s) URLs into links that open in a new tab.
  // Only DOM nodes are created, so markup in the text stays plain text.
  function appendLinkifiedText(parent, text, strings) {
    const pattern = /https?:\/\/[^\s<>"]+/g;
    let start = 0;
    for (const match of text.matchAll(pattern)) {
      // Punctuation right after a URL usually ends the sentence, not the URL.
      const address = match[0].replace(/[.,;:!?)\]'»]+$/, "");
      let url;
      try {
        url = new URL(address);
      } catch (error) {
        continue;
      }
      parent.append(document.createTextNode(text.slice(start, match.index)));
      const link = createElement("a", "entraide-link", { href: url.href, target: "_blank", rel: "noopener noreferrer" });
      link.textContent = address;
      const hint = createElement("span", "entraide-sr-only");
      hint.textContent = strings.newTab;
      link.append(hint);
      parent.append(link);
      start = match.index + address.length;
    }
    parent.append(document.createTextNode(text.slice(start)));
  }

  function createLauncherIcon() {
    const namespace = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(namespace, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    svg.setAttribute("class", "entraide-launcher__icon");
    const path = document.createElementNS(namespace, "path");
    path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H10l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z");
    svg.append(path);
    return svg;
  }

  // ---------------------------------------------------------------------------------------------
  // Connection: one WebSocket, reconnected with exponential backoff and jitter.
  //
  // States reported to the listener: "connecting", "reconnecting", "open", "waiting" (a retry is
  // scheduled), "rate_limited", "offline", and the final states "auth" (4401), "origin" (4403) and
  // "policy" (1008), which wait for restart().

  class Connection {
    constructor(url, listener) {
      this.url = url;
      this.listener = listener;
      this.socket = null;
      this.ready = false; // true between the welcome frame and the close of that socket
      this.generation = 0; // incremented for each socket, so pending messages know which one carried them
      this.attempt = 0;
      this.retryTimer = null;
      this.welcomeTimer = null;
      this.started = false;
      this.everConnected = false;
      this.state = "idle";

      window.addEventListener("online", () => this.handleOnline());
      window.addEventListener("offline", () => this.handleOffline());
    }

    start() {
      if (this.started) {
        return;
      }
      this.started = true;
      this.connect();
    }

    // Connects at once when a retry is scheduled, for example when the user opens the panel.
    // A rate-limited or stopped connection keeps waiting.
    retryNow() {
      if (this.started && !this.socket && (this.state === "waiting" || this.state === "offline")) {
        this.attempt = 0;
        this.connect();
      }
    }

    // Closes the current socket and connects again with a fresh hello, for example after a new token.
    restart() {
      this.started = true;
      this.attempt = 0;
      const previous = this.socket;
      this.socket = null;
      this.ready = false;
      if (previous) {
        previous.close(1000);
      }
      this.connect();
    }

    send(frame) {
      if (!this.ready || !this.socket || this.socket.readyState !== WebSocket.OPEN) {
        return false;
      }
      this.socket.send(JSON.stringify(frame));
      return true;
    }

    isStopped() {
      return this.state === "auth" || this.state === "origin" || this.state === "policy";
    }

    setState(state) {
      this.state = state;
      this.listener.onState(state);
    }

    connect() {
      clearTimeout(this.retryTimer);
      clearTimeout(this.welcomeTimer);
      this.retryTimer = null;
      if (navigator.onLine === false) {
        this.setState("offline");
        return;
      }

      this.setState(this.everConnected ? "reconnecting" : "connecting");
      let socket;
      try {
        socket = new WebSocket(this.url);
      } catch (error) {
        console.warn("entraide: failed to open WebSocket %s, retrying: %s", this.url, error);
        this.scheduleRetry();
        return;
      }
      this.socket = socket;
      this.generation += 1;

      socket.addEventListener("open", () => {
        if (socket === this.socket) {
          socket.send(JSON.stringify(this.listener.buildHello()));
        }
      });
      socket.addEventListener("message", (event) => {
        if (socket === this.socket) {
          this.handleFrame(event.data);
        }
      });
      socket.addEventListener("close", (event) => {
        if (socket === this.socket) {
          this.handleClose(event.code);
        }
      });
      this.welcomeTimer = setTimeout(() => {
        if (socket === this.socket && !this.ready) {
          console.warn("entraide: timed out after %d ms waiting for the welcome frame, reconnecting", WELCOME_TIMEOUT_MS);
          socket.close();
        }
      }, WELCOME_TIMEOUT_MS);
    }

    handleFrame(data) {
      let frame;
      try {
        frame = JSON.parse(data);
      } catch (error) {
        console.warn("entraide: ignored a frame that is not valid JSON");
        return;
      }
      if (!frame || typeof frame !== "object" || typeof frame.type !== "string") {
        console.warn("entraide: ignored a frame without a type");
        return;
      }
      if (frame.type === "welcome") {
        clearTimeout(this.welcomeTimer);
        this.ready = true;
        this.attempt = 0;
        this.everConnected = true;
        this.setState("open");
      }
      this.listener.onFrame(frame);
    }

    handleClose(code) {
      clearTimeout(this.welcomeTimer);
      this.socket = null;
      this.ready = false;

      if (code === 4401) {
        this.setState("auth"); // The same token would be rejected again, so wait for setToken().
      } else if (code === 4403) {
        this.setState("origin");
      } else if (code === 1008) {
        this.setState("policy"); // Retrying the same way would likely violate the same policy.
      } else if (code === 4429) {
        this.scheduleRetry(RATE_LIMITED_DELAY_MS * (1 + Math.random()), "rate_limited");
      } else {
        if (code === 1009) {
          this.listener.onFrameTooBig();
        }
        this.scheduleRetry();
      }
    }

    scheduleRetry(delay, state) {
      if (navigator.onLine === false) {
        this.setState("offline");
        return;
      }
      if (delay === undefined) {
        // Exponential backoff (1 s, 2 s, 4 s … 30 s) with jitter over the upper half of the step,
        // so that clients cut off together do not come back together.
        const step = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
        delay = step / 2 + Math.random() * (step / 2);
        this.attempt += 1;
      }
      this.setState(state || "waiting");
      this.retryTimer = setTimeout(() => this.connect(), delay);
    }

    handleOnline() {
      if (this.started && !this.socket && this.state === "offline") {
        this.attempt = 0;
        this.connect();
      } else if (this.ready) {
        this.setState("open");
      }
    }

    handleOffline() {
      if (this.started && !this.isStopped()) {
        this.setState("offline");
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Widget: the launcher, the panel and the conversation shown in it.

  class Widget {
    constructor(config) {
      this.config = config;
      this.strings = config.strings;
      this.token = config.token;
      this.sessionId = readStorage("localStorage", SESSION_KEY);
      this.seenSeq = Number(readStorage("localStorage", SEEN_KEY)) || 0;
      this.maxLength = DEFAULT_MAX_LENGTH;
      this.lastSeq = 0; // highest seq shown on this page
      this.ackedSeq = 0;
      this.shownSeqs = new Set();
      this.pending = new Map(); // client_id -> optimistic user message not yet echoed by the server
      this.unread = 0;
      this.isOpen = false;
      this.replaying = false;
      this.typing = { bot: false, expert: false };
      this.typingTimers = { bot: null, expert: null };
      this.ackTimer = null;
      this.replayTimer = null;
      this.echoTimer = null;
      this.lastErrorCode = null;
      this.timeFormats = {
        time: new Intl.DateTimeFormat(this.strings.locale, { hour: "2-digit", minute: "2-digit" }),
        dateTime: new Intl.DateTimeFormat(this.strings.locale, {
          day: "numeric",
          month: "short",
          hour: "2-digit",
          minute: "2-digit",
        }),
      };
      this.numberFormat = new Intl.NumberFormat(this.strings.locale);
      this.pluralRules = new Intl.PluralRules(this.strings.locale);

      this.connection = config.socketUrl ? new Connection(config.socketUrl, this) : null;
      this.buildDom();
    }

    // ----- DOM construction

    buildDom() {
      const strings = this.strings;
      const root = createElement("div", "entraide-root", { id: "entraide-root", lang: this.config.lang });
      root.hidden = true; // shown once widget.css is loaded, so the page never shows it unstyled

      this.launcher = createElement("button", "entraide-launcher", {
        type: "button",
        id: "entraide-launcher",
        "aria-expanded": "false",
        "aria-controls": "entraide-panel",
      });
      const launcherText = createElement("span", "entraide-launcher__text");
      launcherText.textContent = strings.launcher;
      this.badge = createElement("span", "entraide-badge", { "aria-hidden": "true" });
      this.badge.hidden = true;
      this.unreadText = createElement("span", "entraide-sr-only");
      this.launcher.append(createLauncherIcon(), launcherText, this.badge, this.unreadText);
      this.launcher.addEventListener("click", () => (this.isOpen ? this.close() : this.open()));
      this.launcher.addEventListener("keydown", (event) => {
        if (event.key === "Escape" && this.isOpen) {
          this.close();
        }
      });

      // Announces replies that arrive while the panel (and so its log) is closed.
      this.announcer = createElement("div", "entraide-sr-only", { "aria-live": "polite" });

      this.panel = createElement("div", "entraide-panel", {
        id: "entraide-panel",
        role: "dialog",
        "aria-labelledby": "entraide-title",
      });
      this.panel.hidden = true;
      this.panel.addEventListener("keydown", (event) => {
        if (event.key === "Escape" && !event.isComposing) {
          event.stopPropagation();
          this.close();
        }
      });

      this.panel.append(this.buildHeader(), this.buildStatusBar());

      // Focusable so that keyboard users can scroll the history even when it contains no button.
      this.log = createElement("div", "entraide-log", {
        id: "entraide-log",
        role: "log",
        "aria-live": "polite",
        "aria-label": strings.logLabel,
        tabindex: "0",
      });

      // The intro stays at the top of the history. Its seq 0 sorts it before every message.
      this.intro = createElement("p", "entraide-intro", { "data-seq": "0" });
      this.intro.textContent = strings.intro;
      this.log.append(this.intro);

      this.typingIndicator = createElement("div", "entraide-typing", { role: "status" });
      this.errorBox = createElement("div", "entraide-error", { role: "alert" });

      this.panel.append(this.log, this.typingIndicator, this.errorBox, this.buildForm());
      root.append(this.launcher, this.announcer, this.panel);
      this.root = root;
      this.updateCounter();
    }

    buildHeader() {
      const header = createElement("div", "entraide-header");
      const titles = createElement("div", "entraide-header__titles");
      const title = createElement("h2", "entraide-title", { id: "entraide-title" });
      title.textContent = this.config.title;
      this.identityLine = createElement("p", "entraide-identity");
      this.identityLine.hidden = true;
      titles.append(title, this.identityLine);

      const closeButton = createElement("button", "entraide-close", {
        type: "button",
        "aria-label": this.strings.close,
        title: this.strings.close,
      });
      const cross = createElement("span", "", { "aria-hidden": "true" });
      cross.textContent = "×";
      closeButton.append(cross);
      closeButton.addEventListener("click", () => this.close());

      header.append(titles, closeButton);
      return header;
    }

    buildStatusBar() {
      const bar = createElement("div", "entraide-statusbar");
      this.statusLine = createElement("p", "entraide-status", { role: "status" });
      this.retryButton = createElement("button", "entraide-retry", { type: "button" });
      this.retryButton.textContent = this.strings.retryNow;
      this.retryButton.hidden = true;
      this.retryButton.addEventListener("click", () => {
        if (this.connection.state === "policy") {
          this.connection.restart();
        } else {
          this.connection.retryNow();
        }
        this.input.focus();
      });
      bar.append(this.statusLine, this.retryButton);
      if (!this.connection) {
        this.statusLine.textContent = this.strings.statusConfig;
      }
      return bar;
    }

    buildForm() {
      const strings = this.strings;
      const form = createElement("form", "entraide-form", { novalidate: "" });
      const label = createElement("label", "entraide-sr-only", { for: "entraide-input" });
      label.textContent = strings.inputLabel;

      this.input = createElement("textarea", "entraide-input", {
        id: "entraide-input",
        rows: "2",
        placeholder: strings.placeholder,
        autocomplete: "off",
        "aria-describedby": "entraide-limit entraide-input-hint entraide-counter-hint",
      });
      this.input.addEventListener("input", () => this.updateCounter());
      this.input.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          form.requestSubmit();
        }
      });

      this.limitMessage = createElement("p", "entraide-limit", { id: "entraide-limit", "aria-live": "polite" });

      const footer = createElement("div", "entraide-form__footer");
      this.counter = createElement("span", "entraide-counter", { "aria-hidden": "true" });
      const sendButton = createElement("button", "entraide-send", { type: "submit" });
      sendButton.textContent = strings.send;
      footer.append(this.counter, sendButton);

      this.inputHint = createElement("p", "entraide-sr-only", { id: "entraide-input-hint" });
      this.inputHint.textContent = strings.inputHint;
      this.counterHint = createElement("p", "entraide-sr-only", { id: "entraide-counter-hint" });

      form.addEventListener("submit", (event) => {
        event.preventDefault();
        this.submitInput();
      });
      form.append(label, this.input, this.limitMessage, footer, this.inputHint, this.counterHint);
      return form;
    }

    mount() {
      const link = createElement("link", "", { rel: "stylesheet", href: this.config.stylesheetUrl });
      const show = () => {
        this.root.hidden = false;
      };
      link.addEventListener("load", show);
      link.addEventListener("error", () => {
        console.warn("entraide: failed to load %s, showing the widget unstyled", this.config.stylesheetUrl);
        show();
      });
      document.head.append(link);
      document.body.append(this.root);

      document.addEventListener("visibilitychange", () => this.markSeen());

      // Connect at once when a conversation is in progress, so that an expert's reply shows on the
      // launcher. Otherwise the widget connects when the user opens the panel.
      if (this.sessionId && this.connection) {
        this.connection.start();
      }
      if (readStorage("sessionStorage", OPEN_KEY) === "1") {
        this.open({ focus: false });
      }
    }

    // ----- Opening and closing

    open(options) {
      const moveFocus = !options || options.focus !== false;
      if (!this.isOpen) {
        this.isOpen = true;
        this.panel.hidden = false;
        this.root.classList.add("entraide-root--open");
        document.documentElement.classList.add("entraide-panel-open");
        this.launcher.setAttribute("aria-expanded", "true");
        writeStorage("sessionStorage", OPEN_KEY, "1");
        if (this.connection) {
          this.connection.start();
          this.connection.retryNow();
        }
        this.scrollToBottom();
        this.markSeen();
      }
      if (moveFocus) {
        this.input.focus();
      }
    }

    close() {
      if (!this.isOpen) {
        return;
      }
      const focusWasInside = this.panel.contains(document.activeElement) || document.activeElement === document.body;
      this.isOpen = false;
      this.panel.hidden = true;
      this.root.classList.remove("entraide-root--open");
      document.documentElement.classList.remove("entraide-panel-open");
      this.launcher.setAttribute("aria-expanded", "false");
      writeStorage("sessionStorage", OPEN_KEY, null);
      if (focusWasInside) {
        this.launcher.focus();
      }
    }

    // ----- Public API

    setToken(token) {
      const value = typeof token === "string" && token ? token : null;
      if (value === this.token) {
        return;
      }
      this.token = value;
      if (this.connection && this.connection.started) {
        this.clearError();
        this.connection.restart(); // The token travels only in hello, so a new identity needs a new hello.
      }
    }

    // Forgets the conversation kept in this browser, for example when the ENT user logs out.
    forgetSession() {
      writeStorage("localStorage", SESSION_KEY, null);
      writeStorage("localStorage", SEEN_KEY, null);
      this.sessionId = null;
      this.clearConversation();
      if (this.connection && this.connection.started) {
        this.connection.restart();
      }
    }

    // ----- Connection listener

    buildHello() {
      return {
        type: "hello",
        session_id: this.sessionId,
        token: this.token,
        last_seq: this.lastSeq,
        lang: this.config.lang,
      };
    }

    onState(state) {
      const strings = this.strings;
      const texts = {
        connecting: strings.statusConnecting,
        reconnecting: strings.statusReconnecting,
        open: "",
        waiting: strings.statusWaiting,
        rate_limited: strings.statusRateLimited,
        offline: strings.statusOffline,
        auth: strings.statusAuth,
        origin: strings.statusOrigin,
        policy: strings.statusPolicy,
      };
      let text = state in texts ? texts[state] : "";
      if (state === "auth" && (this.lastErrorCode === "token_invalid" || this.lastErrorCode === "token_expired")) {
        text = ""; // The server's error message, shown just below, already gives the reason.
      }
      if (this.statusLine.textContent !== text) {
        this.statusLine.textContent = text;
      }
      this.retryButton.hidden = !(state === "waiting" || state === "policy");
      if (state !== "open") {
        this.setTyping("bot", false);
        this.setTyping("expert", false);
      }
    }

    onFrame(frame) {
      if (frame.type === "welcome") {
        this.handleWelcome(frame);
      } else if (frame.type === "message") {
        this.handleMessage(frame);
      } else if (frame.type === "typing") {
        this.handleTyping(frame);
      } else if (frame.type === "error") {
        this.handleError(frame);
      }
      // Other types are ignored, so that an older widget keeps working with a newer server.
    }

    onFrameTooBig() {
      this.failLatestSent();
      this.showError(this.strings.messageTooBig);
    }

    // ----- Incoming frames

    handleWelcome(frame) {
      const resumedFromPageLoad = this.sessionId !== null && this.lastSeq === 0;

      if (typeof frame.session_id === "string" && frame.session_id) {
        if (this.sessionId && frame.session_id !== this.sessionId && this.lastSeq > 0) {
          // The server started another conversation (for example another ENT user on this browser).
          // The messages shown belong to the previous one, and the server will only send seqs above
          // the last_seq we sent, so start over and ask for the whole history.
          this.sessionId = frame.session_id;
          writeStorage("localStorage", SESSION_KEY, this.sessionId);
          writeStorage("localStorage", SEEN_KEY, null);
          this.seenSeq = 0;
          this.clearConversation({ keepPending: true });
          this.connection.restart();
          return;
        }
        this.sessionId = frame.session_id;
        writeStorage("localStorage", SESSION_KEY, this.sessionId);
      }

      const maxLength = Number(frame.max_length);
      this.maxLength = Number.isInteger(maxLength) && maxLength > 0 ? maxLength : DEFAULT_MAX_LENGTH;
      this.updateCounter();

      const identity = frame.identity;
      if (identity && typeof identity.name === "string" && identity.name) {
        this.identityLine.textContent = formatText(this.strings.identity, { name: identity.name });
        this.identityLine.hidden = false;
      } else {
        this.identityLine.hidden = true;
      }

      if (resumedFromPageLoad) {
        this.startQuietReplay();
      }
      this.flushQueued();
      this.scheduleEchoCheck();
    }

    handleMessage(frame) {
      const seq = Number(frame.seq);
      if (!Number.isInteger(seq) || this.shownSeqs.has(seq)) {
        return;
      }
      this.shownSeqs.add(seq);
      const role = ROLES.has(frame.role) ? frame.role : "system";
      if (this.replaying) {
        this.startQuietReplay(); // each message of the replay extends the quiet window
      }

      const stickToBottom = this.isNearBottom();
      const clientId = typeof frame.client_id === "string" ? frame.client_id : null;
      let element;
      if (role === "user" && clientId && this.pending.has(clientId)) {
        element = this.confirmPending(clientId, frame);
      } else {
        element = this.renderMessage({
          role: role,
          label: typeof frame.label === "string" ? frame.label : null,
          text: typeof frame.text === "string" ? frame.text : "",
          buttons: Array.isArray(frame.buttons) ? frame.buttons : [],
          time: typeof frame.time === "string" ? frame.time : null,
        });
      }
      element.dataset.seq = String(seq);
      this.insertInOrder(element, seq);

      if (role === "user") {
        this.disableButtonsBefore(element);
      } else if (role === "bot" || role === "expert") {
        this.setTyping(role, false);
        this.countUnread(seq);
      }
      this.lastSeq = Math.max(this.lastSeq, seq);
      this.scheduleAck();
      this.markSeen();
      if (stickToBottom || role === "user") {
        this.scrollToBottom();
      }
    }

    handleTyping(frame) {
      if (frame.role !== "bot" && frame.role !== "expert") {
        return;
      }
      this.setTyping(frame.role, frame.active === true);
    }

    handleError(frame) {
      const code = typeof frame.code === "string" ? frame.code : "server_error";
      const fallback = this.strings.errors[code] || this.strings.errors.server_error;
      const text = typeof frame.message === "string" && frame.message.trim() ? frame.message : fallback;
      this.lastErrorCode = code;
      this.showError(text);

      if (code === "too_long") {
        // The server rejected the last message, so give its text back for the user to shorten.
        const record = this.latestSent();
        if (record) {
          this.pending.delete(record.clientId);
          record.element.remove();
          if (record.kind === "message" && !this.input.value) {
            this.input.value = record.text;
            this.updateCounter();
          }
        }
      } else if (code === "rate_limited") {
        this.failLatestSent();
      }
    }

    // ----- Outgoing messages

    submitInput() {
      const text = this.input.value.trim();
      if (!text) {
        return;
      }
      if (countCharacters(text) > this.maxLength) {
        this.updateCounter();
        this.input.focus();
        return;
      }
      this.sendFromUser({ kind: "message", text: text });
      this.input.value = "";
      this.updateCounter();
      this.input.focus();
    }

    chooseButton(button, title, payload) {
      if (button.disabled) {
        return;
      }
      button.classList.add("entraide-choice--chosen");
      this.sendFromUser({ kind: "button", text: title, title: title, payload: payload });
      // The clicked button is now disabled and would drop the focus on the page body.
      this.input.focus();
    }

    // Shows the user's message at once (an optimistic copy), then sends it or queues it until the
    // connection is ready. The server's echo with the same client_id replaces the copy.
    sendFromUser(fields) {
      this.clearError();
      const record = Object.assign({ clientId: newClientId(), state: "new", generation: 0 }, fields);
      record.element = this.renderMessage({ role: "user", text: record.text, buttons: [], time: new Date().toISOString() });
      record.element.dataset.clientId = record.clientId;
      this.pending.set(record.clientId, record);
      this.log.append(record.element);
      this.disableButtonsBefore(record.element);
      this.scrollToBottom();
      this.transmit(record);
    }

    transmit(record) {
      const frame =
        record.kind === "button"
          ? { type: "button", client_id: record.clientId, title: record.title, payload: record.payload }
          : { type: "message", client_id: record.clientId, text: record.text };
      if (this.connection && this.connection.send(frame)) {
        record.state = "sent";
        record.generation = this.connection.generation;
        this.setPendingState(record, null);
        return;
      }
      record.state = "queued";
      this.setPendingState(record, this.strings.queued);
      if (this.connection) {
        this.connection.start();
        this.connection.retryNow();
      }
    }

    flushQueued() {
      for (const record of this.pending.values()) {
        if (record.state === "queued") {
          this.transmit(record);
        }
      }
    }

    // After a reconnect the server replays what it stored. A message sent on an earlier socket and
    // still not echoed after ECHO_TIMEOUT_MS was probably lost with that socket, so offer to resend it.
    scheduleEchoCheck() {
      clearTimeout(this.echoTimer);
      const generation = this.connection.generation;
      this.echoTimer = setTimeout(() => {
        for (const record of this.pending.values()) {
          if (record.state === "sent" && record.generation < generation) {
            this.failRecord(record);
          }
        }
      }, ECHO_TIMEOUT_MS);
    }

    latestSent() {
      let latest = null;
      for (const record of this.pending.values()) {
        if (record.state === "sent") {
          latest = record;
        }
      }
      return latest;
    }

    failLatestSent() {
      const record = this.latestSent();
      if (record) {
        this.failRecord(record);
      }
    }

    failRecord(record) {
      record.state = "failed";
      this.setPendingState(record, this.strings.failed, true);
    }

    setPendingState(record, text, withResend) {
      const previous = record.element.querySelector(".entraide-msg__state");
      if (previous) {
        previous.remove();
      }
      if (!text) {
        return;
      }
      const state = createElement("p", "entraide-msg__state");
      state.textContent = text;
      if (withResend) {
        const resend = createElement("button", "entraide-resend", { type: "button" });
        resend.textContent = this.strings.resend;
        resend.addEventListener("click", () => {
          this.clearError();
          this.transmit(record); // same client_id, so a server that stored the first copy can drop this one
          this.input.focus();
        });
        state.append(" ", resend);
      }
      record.element.append(state);
    }

    confirmPending(clientId, frame) {
      const record = this.pending.get(clientId);
      this.pending.delete(clientId);
      this.setPendingState(record, null);
      record.element.removeAttribute("data-client-id");
      if (typeof frame.time === "string") {
        this.setTime(record.element, frame.time);
      }
      record.element.remove(); // insertInOrder puts it back at the place its seq gives it
      return record.element;
    }

    // ----- Rendering

    renderMessage(message) {
      const strings = this.strings;
      const item = createElement("div", "entraide-msg entraide-msg--" + message.role);

      const senderNames = { user: strings.you, bot: strings.bot, expert: strings.expert, system: strings.system };
      const sender = createElement("p", "entraide-msg__sender");
      if (message.role === "expert") {
        sender.textContent = message.label || strings.expert; // visible, so the user can tell a person is replying
      } else {
        sender.classList.add("entraide-sr-only");
        sender.textContent = (message.label || senderNames[message.role]) + strings.senderSeparator;
      }

      const body = createElement("p", "entraide-msg__text");
      if (message.role === "user") {
        body.textContent = message.text;
      } else {
        appendLinkifiedText(body, message.text, strings);
      }
      item.append(sender, body);

      const buttons = message.buttons.filter(
        (button) => button && typeof button.title === "string" && button.title && typeof button.payload === "string",
      );
      if (buttons.length > 0 && message.role !== "user") {
        const group = createElement("div", "entraide-msg__buttons", { role: "group", "aria-label": strings.buttonsLabel });
        for (const choice of buttons) {
          const button = createElement("button", "entraide-choice", { type: "button" });
          button.textContent = choice.title;
          button.addEventListener("click", () => this.chooseButton(button, choice.title, choice.payload));
          group.append(button);
        }
        item.append(group);
      }

      const time = createElement("time", "entraide-msg__time");
      item.append(time);
      this.setTime(item, message.time);
      return item;
    }

    setTime(item, isoTime) {
      const time = item.querySelector(".entraide-msg__time");
      const date = isoTime ? new Date(isoTime) : null;
      if (!date || Number.isNaN(date.getTime())) {
        time.hidden = true;
        return;
      }
      const sameDay = date.toDateString() === new Date().toDateString();
      time.dateTime = date.toISOString();
      time.textContent = (sameDay ? this.timeFormats.time : this.timeFormats.dateTime).format(date);
      time.hidden = false;
    }

    // Keeps the log in seq order, with optimistic copies (no seq yet) after every sequenced message.
    insertInOrder(element, seq) {
      let before = null;
      let node = this.log.lastElementChild;
      while (node && (node.dataset.seq === undefined || Number(node.dataset.seq) > seq)) {
        before = node;
        node = node.previousElementSibling;
      }
      this.log.insertBefore(element, before);
    }

    // Suggested replies are only valid until the user sends a message after them.
    disableButtonsBefore(element) {
      for (const button of this.log.querySelectorAll(".entraide-choice:not(:disabled)")) {
        if (button.compareDocumentPosition(element) & Node.DOCUMENT_POSITION_FOLLOWING) {
          button.disabled = true;
        }
      }
    }

    setTyping(role, active) {
      clearTimeout(this.typingTimers[role]);
      this.typing[role] = active;
      if (active) {
        this.typingTimers[role] = setTimeout(() => this.setTyping(role, false), TYPING_TIMEOUT_MS);
      }
      let text = "";
      if (this.typing.expert) {
        text = this.strings.typingExpert;
      } else if (this.typing.bot) {
        text = this.strings.typingBot;
      }
      if (this.typingIndicator.dataset.text === text) {
        return;
      }
      this.typingIndicator.dataset.text = text;
      this.typingIndicator.replaceChildren();
      if (text) {
        const label = createElement("span", "entraide-typing__text");
        label.textContent = text;
        const dots = createElement("span", "entraide-typing__dots", { "aria-hidden": "true" });
        dots.append(createElement("span"), createElement("span"), createElement("span"));
        this.typingIndicator.append(dots, label);
      }
    }

    showError(text) {
      this.errorBox.textContent = text;
    }

    clearError() {
      this.lastErrorCode = null;
      this.errorBox.textContent = "";
    }

    updateCounter() {
      const count = countCharacters(this.input.value.trim());
      const max = this.numberFormat.format(this.maxLength);
      this.counter.textContent = this.numberFormat.format(count) + " / " + max;
      this.counterHint.textContent = formatText(this.strings.counterHint, { max: max });

      const tooLong = count > this.maxLength;
      this.counter.classList.toggle("entraide-counter--over", tooLong);
      // Written only when the state flips, so that screen readers do not repeat it on every key press.
      if (tooLong !== (this.input.getAttribute("aria-invalid") === "true")) {
        this.limitMessage.textContent = tooLong ? formatText(this.strings.tooLong, { max: max }) : "";
      }
      this.input.setAttribute("aria-invalid", tooLong ? "true" : "false");
    }

    // ----- Replay, acknowledgements and unread replies

    // Silences the log while the history of a resumed conversation arrives, so that a screen reader
    // does not read every past message aloud. The log speaks again REPLAY_QUIET_MS after the last one.
    startQuietReplay() {
      this.replaying = true;
      this.log.setAttribute("aria-live", "off");
      clearTimeout(this.replayTimer);
      this.replayTimer = setTimeout(() => {
        this.replaying = false;
        this.log.setAttribute("aria-live", "polite");
      }, REPLAY_QUIET_MS);
    }

    scheduleAck() {
      if (this.ackTimer !== null) {
        return;
      }
      this.ackTimer = setTimeout(() => {
        this.ackTimer = null;
        if (this.lastSeq > this.ackedSeq && this.connection.send({ type: "ack", seq: this.lastSeq })) {
          this.ackedSeq = this.lastSeq;
        }
      }, ACK_DELAY_MS);
    }

    countUnread(seq) {
      if (this.isVisibleToUser() || seq <= this.seenSeq) {
        return;
      }
      this.unread += 1;
      this.updateBadge();
      if (!this.replaying) {
        this.announcer.textContent = this.strings.announceNew;
      }
    }

    markSeen() {
      if (!this.isVisibleToUser()) {
        return;
      }
      if (this.lastSeq > this.seenSeq) {
        this.seenSeq = this.lastSeq;
        writeStorage("localStorage", SEEN_KEY, String(this.seenSeq));
      }
      if (this.unread > 0) {
        this.unread = 0;
        this.updateBadge();
        this.announcer.textContent = "";
      }
    }

    isVisibleToUser() {
      return this.isOpen && document.visibilityState === "visible";
    }

    updateBadge() {
      if (this.unread === 0) {
        this.badge.hidden = true;
        this.unreadText.textContent = "";
        return;
      }
      const template = this.pluralRules.select(this.unread) === "one" ? this.strings.unreadOne : this.strings.unreadOther;
      this.badge.textContent = this.numberFormat.format(this.unread);
      this.badge.hidden = false;
      this.unreadText.textContent = " (" + formatText(template, { count: this.unread }) + ")";
    }

    // ----- Misc

    clearConversation(options) {
      const keepPending = options && options.keepPending;
      for (const child of Array.from(this.log.children)) {
        if (child !== this.intro && !(keepPending && child.dataset.clientId)) {
          child.remove();
        }
      }
      if (!keepPending) {
        this.pending.clear();
      }
      this.shownSeqs.clear();
      this.lastSeq = 0;
      this.ackedSeq = 0;
      this.unread = 0;
      this.updateBadge();
    }

    isNearBottom() {
      return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 48;
    }

    scrollToBottom() {
      if (this.isOpen) {
        this.log.scrollTop = this.log.scrollHeight;
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Start.

  const script = findOwnScript();
  if (!script) {
    console.error("entraide: not started because the <script> tag of widget.js was not found");
    return;
  }
  const config = readConfig(script);
  if (!config.socketUrl) {
    console.error("entraide: invalid data-server %s, expected an http(s) URL such as https://assistant.example", script.dataset.server);
  }
  const widget = new Widget(config);

  window.entraide = Object.freeze({
    version: VERSION,
    open: () => widget.open(),
    close: () => widget.close(),
    setToken: (token) => widget.setToken(token),
    forgetSession: () => widget.forgetSession(),
  });

  function start() {
    widget.mount();
    document.dispatchEvent(new CustomEvent("entraide:ready"));
  }
  if (document.body) {
    start();
  } else {
    document.addEventListener("DOMContentLoaded", start, { once: true });
  }
})();
