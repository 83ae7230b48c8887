// The text/event-stream reader of the chat page: a WHATWG-conformant incremental parser, a
// streaming UTF-8 decoder in front of it, and a loop over a fetch() body. No dependencies.


/**
 * Incremental parser of the text/event-stream format (WHATWG HTML, "server-sent events").
 * Feed it decoded text in pieces of any size; it returns the events completed by each piece.
 * Lines end in CR, LF or CRLF — also when a CRLF is split between two pieces. Lines starting
 * with ":" are comments (pings) and are counted, not returned. `lastEventId` persists across
 * events, as in EventSource.
 */
export class SSEParser {
  constructor() {
    this.lastEventId = "";
    this.retry = null;
    this.comments = 0;
    this._line = "";
    this._skipLF = false;
    this._started = false;
    this._data = [];
    this._type = "";
  }

  /** Feed decoded text; returns an array of {type, data, id}. */
  feed(text) {
    const events = [];
    if (!text) return events;
    let s = text;
    if (!this._started) {
      this._started = true;
      if (s.charCodeAt(0) === 0xfeff) s = s.slice(1);
    }
    if (this._skipLF) {
      this._skipLF = false;
      if (s[0] === "\n") s = s.slice(1);
    }
    let pos = 0;
    const n = s.length;
    while (pos < n) {
      let end = pos;
      while (end < n) {
        const c = s.charCodeAt(end);
        if (c === 10 || c === 13) break;
        end += 1;
      }
      if (end === n) break; // no line terminator yet: keep the rest for the next piece
      const line = this._line + s.slice(pos, end);
      this._line = "";
      if (s.charCodeAt(end) === 13) {
        if (end + 1 === n) {
          this._skipLF = true; // the LF of a CRLF may start the next piece
          pos = end + 1;
        } else {
          pos = s.charCodeAt(end + 1) === 10 ? end + 2 : end + 1;
        }
      } else {
        pos = end + 1;
      }
      this._processLine(line, events);
    }
    if (pos < n) this._line += s.slice(pos);
    return events;
  }

  /** The stream ended: an unfinished event is dropped (as the standard says). */
  end() {
    this._line = "";
    this._data = [];
    this._type = "";
    this._skipLF = false;
  }

  _processLine(line, events) {
    if (line === "") {
      if (this._data.length) {
        events.push({ type: this._type || "message", data: this._data.join("\n"), id: this.lastEventId });
      }
      this._data = [];
      this._type = "";
      return;
    }
    if (line[0] === ":") {
      this.comments += 1;
      return;
    }
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
    }
    switch (field) {
      case "event":
        this._type = value;
        break;
      case "data":
        this._data.push(value);
        break;
      case "id":
        if (!value.includes("\u0000")) this.lastEventId = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // unknown fields are ignored
    }
  }
}

/** Bytes in, events out: a streaming UTF-8 decoder in front of an SSEParser. */
export class SSEDecoder {
  constructor(parser = new SSEParser()) {
    this.parser = parser;
    this._decoder = new TextDecoder("utf-8");
  }

  push(bytes) {
    return this.parser.feed(this._decoder.decode(bytes, { stream: true }));
  }

  end() {
    const events = this.parser.feed(this._decoder.decode());
    this.parser.end();
    return events;
  }
}

/** Read an SSE response body, calling onEvent(event) for each event, until the body ends. */
export async function readEventStream(body, onEvent, parser = new SSEParser()) {
  const decoder = new SSEDecoder(parser);
  const reader = body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const ev of decoder.push(value)) {
        if (onEvent(ev) === false) {
          reader.cancel().catch(() => {});
          return;
        }
      }
    }
    for (const ev of decoder.end()) onEvent(ev);
  } finally {
    reader.releaseLock?.();
  }
}

