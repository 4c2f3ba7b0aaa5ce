"use strict";
// Shows the time, to show that the app's own files are delivered with it.
function tick() {
  document.getElementById("clock").textContent = new Date().toLocaleTimeString();
}
tick();
setInterval(tick, 1000);
