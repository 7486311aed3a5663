// Copy buttons: each `button.copy` copies its data-copy text to the clipboard.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  navigator.clipboard.writeText(button.dataset.copy).then(() => {
    button.classList.add("copied");
    button.textContent = "copied";
  });
});
