// The page's two languages. One language at a time: chosen from the browser's locale (any
// zh-* is Chinese, anything else English), switchable, remembered in localStorage. Static
// markup names its strings with data-i18n="key" (text) and data-i18n-attr="attr:key,…";
// scripts call t("key", {name: value}). Every string exists in both languages (a unit test
// compares the key sets).

export const STRINGS = {
  zh: {
    "app.title": "文心 · wenxin-stream",
    "skip": "跳到输入框",
    "new_chat": "新对话",
    "conversations": "会话",
    "conversation_list": "会话列表",
    "search": "搜索会话",
    "no_conversations": "还没有会话",
    "no_matches": "没有匹配的会话",
    "group.today": "今天",
    "group.yesterday": "昨天",
    "group.week": "过去 7 天",
    "group.earlier": "更早",
    "count": "{n} 条",
    "answering": "回答中…",
    "rename": "重命名",
    "delete": "删除",
    "delete_confirm": "确认删除？",
    "rename_failed": "重命名失败：{message}",
    "delete_failed": "删除失败：{message}",
    "model": "模型",
    "settings": "会话设置",
    "system_prompt": "系统提示词",
    "system_placeholder": "这个会话里模型扮演的角色或遵守的规则（可选）",
    "system_hint": "只作用于当前会话；新对话在第一次提问时保存。",
    "banner": "离线模拟器：回答是模拟的（未配置 ERNIE 凭据）",
    "empty_title": "文心一言 · ERNIE",
    "empty_text": "问点什么吧。回答会逐字流式显示。",
    "question": "问题",
    "placeholder": "输入问题",
    "hint": "Enter 发送，Shift+Enter 换行，Esc 停止回答",
    "send": "发送",
    "stop": "停止",
    "you": "你",
    "ernie": "文心",
    "copy": "复制",
    "copied": "已复制",
    "copy_answer": "复制回答",
    "copy_code": "复制代码",
    "regenerate": "重新生成",
    "retry": "重试",
    "edit": "编辑",
    "edit_send": "发送",
    "cancel": "取消",
    "save": "保存",
    "thinking": "思考过程",
    "thinking_live": "思考中…",
    "thinking_chars": "思考过程（{n} 字）",
    "sources": "参考来源",
    "tool_call": "工具调用：{name}",
    "attach": "添加图片",
    "attach_only_vision": "当前模型不能看图",
    "attach_too_big": "图片太大：{size}，最大 {max}",
    "attach_not_image": "只能添加图片文件",
    "remove_image": "移除图片",
    "toggle_thinking": "深度思考",
    "toggle_thinking_always": "这个模型总会深度思考",
    "toggle_search": "联网搜索",
    "cap.reasoning": "思考",
    "cap.tools": "工具",
    "cap.search": "搜索",
    "cap.vision": "看图",
    "models.other": "其他模型",
    "models.group.current": "当前主力",
    "models.group.light": "轻量",
    "models.group.legacy": "旧版",
    "models.default": "默认",
    "theme": "主题",
    "theme.system": "跟随系统",
    "theme.light": "浅色",
    "theme.dark": "深色",
    "language": "语言",
    "stopping": "正在停止…",
    "reconnecting": "重新连接中…",
    "still_generating": "仍在生成中，稍后刷新查看",
    "end.cancelled": "已停止",
    "end.length": "长度截断",
    "end.content_filtered": "内容已过滤",
    "end.timed_out": "超时",
    "end.upstream_error": "上游错误",
    "end.incomplete": "不完整",
    "end.client_disconnected": "连接中断",
    "end.server_shutdown": "服务器关闭",
    "end.server_crashed": "服务器崩溃",
    "end.interrupted": "连接中断",
    "end.taken_over": "已由另一实例继续",
    "stats.ttft": "首字 {v}",
    "stats.total": "共 {v}",
    "stats.tokens": "{total} tokens ({prompt} + {completion})",
    "err.connection_lost": "连接中断，回答不完整",
    "err.server": "无法连接服务器：{message}",
    "err.list": "会话列表加载失败：{message}",
    "err.load": "会话加载失败：{message}",
    "err.gone": "这个会话不存在了。",
    "err.page": "页面出错：{message}",
    "err.key_rejected": "这个 API key 无效。",
    "err.retry_after": "（{s} 秒后重试）",
    "err.http": "HTTP {status}",
    "key.title": "API key",
    "key.text": "这个服务器需要 API key（wenxin keys create）。",
    "footer.emulator": "离线模拟器",
    "usage": "用量",
    "usage.month": "本月：{tokens} tokens · ¥{cny}",
    "usage.day": "今日预算",
    "usage.monthly": "本月预算",
    "usage.budget": "{period}：已用 {used} / {limit}",
  },
  en: {
    "app.title": "ERNIE · wenxin-stream",
    "skip": "Skip to the question box",
    "new_chat": "New chat",
    "conversations": "Conversations",
    "conversation_list": "Conversation list",
    "search": "Search conversations",
    "no_conversations": "No conversations yet",
    "no_matches": "No matching conversations",
    "group.today": "Today",
    "group.yesterday": "Yesterday",
    "group.week": "Previous 7 days",
    "group.earlier": "Earlier",
    "count": "{n} messages",
    "answering": "answering…",
    "rename": "Rename",
    "delete": "Delete",
    "delete_confirm": "Delete?",
    "rename_failed": "Could not rename: {message}",
    "delete_failed": "Could not delete: {message}",
    "model": "Model",
    "settings": "Conversation settings",
    "system_prompt": "System prompt",
    "system_placeholder": "A role for the model or rules it follows in this conversation (optional)",
    "system_hint": "Applies to this conversation only; a new chat saves it with its first question.",
    "banner": "Offline emulator: answers are simulated (no ERNIE credentials configured)",
    "empty_title": "ERNIE · 文心一言",
    "empty_text": "Ask anything. Answers stream in as they are written.",
    "question": "Question",
    "placeholder": "Ask a question",
    "hint": "Enter sends, Shift+Enter adds a line, Esc stops an answer",
    "send": "Send",
    "stop": "Stop",
    "you": "You",
    "ernie": "ERNIE",
    "copy": "Copy",
    "copied": "Copied",
    "copy_answer": "Copy answer",
    "copy_code": "Copy code",
    "regenerate": "Regenerate",
    "retry": "Retry",
    "edit": "Edit",
    "edit_send": "Send",
    "cancel": "Cancel",
    "save": "Save",
    "thinking": "Thinking",
    "thinking_live": "Thinking…",
    "thinking_chars": "Thinking ({n} characters)",
    "sources": "Sources",
    "tool_call": "Tool call: {name}",
    "attach": "Attach an image",
    "attach_only_vision": "This model cannot read images",
    "attach_too_big": "The image is too large: {size}, at most {max}",
    "attach_not_image": "Only image files can be attached",
    "remove_image": "Remove the image",
    "toggle_thinking": "Deep thinking",
    "toggle_thinking_always": "This model always thinks",
    "toggle_search": "Web search",
    "cap.reasoning": "thinks",
    "cap.tools": "tools",
    "cap.search": "search",
    "cap.vision": "vision",
    "models.other": "Other models",
    "models.group.current": "Current",
    "models.group.light": "Light",
    "models.group.legacy": "Legacy",
    "models.default": "default",
    "theme": "Theme",
    "theme.system": "System",
    "theme.light": "Light",
    "theme.dark": "Dark",
    "language": "Language",
    "stopping": "Stopping…",
    "reconnecting": "Reconnecting…",
    "still_generating": "Still being generated — reload to see the rest",
    "end.cancelled": "Stopped",
    "end.length": "Cut at max length",
    "end.content_filtered": "Content filtered",
    "end.timed_out": "Timed out",
    "end.upstream_error": "Upstream error",
    "end.incomplete": "Incomplete",
    "end.client_disconnected": "Client disconnected",
    "end.server_shutdown": "Server shut down",
    "end.server_crashed": "Server crashed",
    "end.interrupted": "Connection lost",
    "end.taken_over": "Continued on another instance",
    "stats.ttft": "TTFT {v}",
    "stats.total": "total {v}",
    "stats.tokens": "{total} tokens ({prompt} + {completion})",
    "err.connection_lost": "The connection was lost; the answer is incomplete",
    "err.server": "Cannot reach the server: {message}",
    "err.list": "Could not load conversations: {message}",
    "err.load": "Could not load the conversation: {message}",
    "err.gone": "That conversation no longer exists.",
    "err.page": "Page error: {message}",
    "err.key_rejected": "This API key was rejected.",
    "err.retry_after": " (retry after {s} s)",
    "err.http": "HTTP {status}",
    "key.title": "API key",
    "key.text": "This server requires an API key (wenxin keys create).",
    "footer.emulator": "offline emulator",
    "usage": "Usage",
    "usage.month": "This month: {tokens} tokens · ¥{cny}",
    "usage.day": "Daily budget",
    "usage.monthly": "Monthly budget",
    "usage.budget": "{period}: {used} of {limit} used",
  },
};

export const LANGS = ["zh", "en"];
const LANG_STORAGE = "wenxin.lang";

/** The language for `tags` (navigator.languages): zh for any zh-*, else en. */
export function localeLanguage(tags) {
  for (const tag of tags || []) {
    const primary = String(tag).toLowerCase().split("-")[0];
    if (primary === "zh") return "zh";
    if (primary === "en") return "en";
  }
  return "en";
}

let current = "zh";

export function language() {
  return current;
}

/** Choose the language: the saved choice, else the browser's. */
export function initLanguage() {
  let saved = "";
  try {
    saved = localStorage.getItem(LANG_STORAGE) || "";
  } catch {
    /* storage unavailable */
  }
  const tags = navigator.languages?.length ? navigator.languages : [navigator.language];
  current = LANGS.includes(saved) ? saved : localeLanguage(tags);
  return current;
}

export function setLanguage(lang, { persist = true } = {}) {
  if (!LANGS.includes(lang)) return;
  current = lang;
  if (persist) {
    try {
      localStorage.setItem(LANG_STORAGE, lang);
    } catch {
      /* storage unavailable */
    }
  }
}

/** The string `key` in the current language, with {name} placeholders filled. */
export function t(key, vars = {}) {
  const table = STRINGS[current] || STRINGS.en;
  const text = table[key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

/** Fill every data-i18n / data-i18n-attr element under `root` in the current language. */
export function translate(root = document) {
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of node.dataset.i18nAttr.split(",")) {
      const [attr, key] = pair.split(":");
      node.setAttribute(attr.trim(), t(key.trim()));
    }
  }
  if (root === document) {
    document.documentElement.lang = current === "zh" ? "zh-CN" : "en";
    document.title = t("app.title");
  }
}
