// qsave annotate, rate page: the page works without this file. It hides the reason fields of a
// Good or Excellent rating and fills a time range from the player's current time.
"use strict";
(function () {
  const player = document.getElementById("player");
  for (const fieldset of document.querySelectorAll("fieldset[data-dimension]")) {
    const reasons = fieldset.querySelector("[data-reasons]");
    const update = () => {
      const chosen = fieldset.querySelector("input[type=radio]:checked");
      reasons.hidden = !(chosen && chosen.hasAttribute("data-low"));
    };
    for (const radio of fieldset.querySelectorAll("input[type=radio]")) {
      radio.addEventListener("change", update);
    }
    update();
  }
  for (const button of document.querySelectorAll("button[data-mark]")) {
    const target = document.getElementById(button.dataset.mark);
    if (!player || !target) continue;
    button.hidden = false;
    button.addEventListener("click", () => { target.value = player.currentTime.toFixed(2); });
  }
})();
