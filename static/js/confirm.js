// A form with data-confirm="question" asks before it submits (instead of an inline onsubmit,
// which the Content-Security-Policy refuses).
document.addEventListener("submit", function (ev) {
  const question = ev.target.dataset ? ev.target.dataset.confirm : null;
  if (question && !window.confirm(question)) ev.preventDefault();
});
