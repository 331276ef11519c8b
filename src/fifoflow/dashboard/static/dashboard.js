// fifoflow dashboard: live fragments over server-sent events, and small form helpers.
"use strict";

const badge = document.getElementById("live");

// Each [data-live] element is re-rendered by the server whenever its content changes.
document.querySelectorAll("[data-live]").forEach((el) => {
  const source = new EventSource(el.dataset.live);
  source.addEventListener("update", (event) => {
    el.innerHTML = event.data;
    el.dataset.updates = String(Number(el.dataset.updates || 0) + 1);
  });
  source.addEventListener("open", () => {
    if (badge) {
      badge.hidden = false;
      badge.className = "live on";
      badge.textContent = "live";
    }
  });
  source.addEventListener("error", () => {
    if (badge) {
      badge.hidden = false;
      badge.className = "live off";
      badge.textContent = "reconnecting…";
    }
  });
});

// The actions token is typed once and remembered for this tab only (sessionStorage).
const TOKEN_KEY = "fifoflow-token";
document.querySelectorAll('input[name="token"]').forEach((input) => {
  input.value = sessionStorage.getItem(TOKEN_KEY) || "";
  if (input.form) {
    input.form.addEventListener("submit", () => {
      if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
    });
  }
});

// Destructive buttons ask first.
document.querySelectorAll("[data-confirm]").forEach((button) => {
  button.addEventListener("click", (event) => {
    if (!window.confirm(button.dataset.confirm)) event.preventDefault();
  });
});

// Selects of auto forms apply at once.
document.querySelectorAll("form.auto select").forEach((select) => {
  select.addEventListener("change", () => select.form.submit());
});

document.querySelectorAll("[data-back]").forEach((link) => {
  link.addEventListener("click", (event) => {
    if (window.history.length > 1) {
      event.preventDefault();
      window.history.back();
    }
  });
});
