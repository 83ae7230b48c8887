// The question box's extras: the image attachment (a file read as a data URL, its size checked
// before anything is sent; only for models that read images), the deep-thinking and
// web-search toggles (shown only where the model has the capability), and what they add to
// the ask body (`images`, `enable_thinking`, `web_search` with its sources and citations, as the
// native ask accepts them).

import { t } from "./i18n.js";

/** Baidu's limit for one image sent as base64 (10 MB of file; ERNIE-CURRENT.md). */
export const MAX_IMAGE_BYTES = 10 * 1024 * 1024;

/** What the search switch asks for: search, and return the sources and cite them. */
export const WEB_SEARCH = Object.freeze({ enable: true, enable_trace: true, enable_citation: true });

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** Why `file` cannot be attached ("" when it can). */
export function imageProblem(file, max = MAX_IMAGE_BYTES) {
  if (!file || !/^image\//.test(file.type || "")) return t("attach_not_image");
  if (file.size > max) return t("attach_too_big", { size: formatBytes(file.size), max: formatBytes(max) });
  return "";
}

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error || new Error("read failed"));
    reader.readAsDataURL(file);
  });
}

export class Composer {
  constructor(ui, onProblem) {
    this.ui = ui;
    this.onProblem = onProblem;
    this.image = "";
    this.model = null;
    this.thinking = true;
    this.search = false;
    ui.attach.addEventListener("click", () => ui.file.click());
    ui.file.addEventListener("change", () => this.pick(ui.file.files?.[0]));
    ui.removeImage.addEventListener("click", () => this.clearImage());
    ui.thinking.addEventListener("click", () => {
      this.thinking = !this.thinking;
      this.render();
    });
    ui.search.addEventListener("click", () => {
      this.search = !this.search;
      this.render();
    });
  }

  async pick(file) {
    this.ui.file.value = "";
    if (!file) return;
    const problem = imageProblem(file);
    if (problem) {
      this.onProblem(problem);
      return;
    }
    try {
      this.image = await readDataUrl(file);
    } catch (err) {
      this.onProblem(String(err?.message || err));
      return;
    }
    this.onProblem("");
    this.render();
  }

  clearImage() {
    this.image = "";
    this.render();
  }

  /** The picker entry of the chosen model (capabilities decide what is offered). */
  setModel(entry) {
    this.model = entry;
    if (!this.vision()) this.image = "";
    this.render();
  }

  vision() {
    return Boolean(this.model?.caps.has("vision"));
  }

  render() {
    const { ui } = this;
    const caps = this.model?.caps || new Set();
    const vision = this.vision();
    ui.attach.disabled = !vision;
    ui.attach.title = vision ? t("attach") : t("attach_only_vision");
    ui.attach.setAttribute("aria-label", ui.attach.title);
    ui.attach.hidden = !this.model?.known;
    const always = this.model?.reasoning === "always";
    ui.thinking.hidden = !caps.has("reasoning");
    ui.thinking.disabled = always;
    ui.thinking.setAttribute("aria-pressed", String(always || this.thinking));
    ui.thinking.title = always ? t("toggle_thinking_always") : t("toggle_thinking");
    ui.search.hidden = !caps.has("search");
    ui.search.setAttribute("aria-pressed", String(this.search));
    ui.preview.hidden = !this.image;
    if (this.image) ui.previewImage.src = this.image;
    else ui.previewImage.removeAttribute("src");
    ui.tools.hidden = ui.attach.hidden && ui.thinking.hidden && ui.search.hidden && !this.image;
  }

  /** The ask body's extra fields for the current choices. */
  fields() {
    const caps = this.model?.caps || new Set();
    const body = {};
    if (this.image && this.vision()) body.images = [this.image];
    if (caps.has("reasoning") && this.model.reasoning !== "always") {
      // A hybrid model is switched either way; where the mode is not known, only "on" is
      // sent (a model that always thinks refuses enable_thinking=false).
      if (this.model.reasoning === "hybrid" || this.thinking) body.enable_thinking = this.thinking;
    }
    // With the sources (enable_trace) and the ^[n]^ markers (enable_citation): `true` alone
    // is {"enable": true}, for which ERNIE searches but shows neither.
    if (caps.has("search") && this.search) body.web_search = { ...WEB_SEARCH };
    return body;
  }

  /** After a question was sent: the image goes with it, the toggles stay. */
  sent() {
    this.image = "";
    this.render();
  }
}
